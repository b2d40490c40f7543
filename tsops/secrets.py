"""Secrets: resolved from an environment variable, then the OS keyring, then a hidden prompt.

Only keyring backends that keep secrets encrypted are used (see `weakness`); a machine without
one gets a clear error instead of a plaintext file. Secret values are never logged or printed.
Import this module inside commands: it loads `keyring`, which `tsops --help` must not.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Protocol

import keyring
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null
from keyring.errors import KeyringError, PasswordDeleteError

from tsops.errors import TsopsError, UsageError
from tsops.events import Events

ENTRY_PART = r"[A-Za-z0-9][A-Za-z0-9._@-]*"
ENTRY_RE = re.compile(rf"^({ENTRY_PART})/({ENTRY_PART})$")

# The index of entry names tsops stored (names only, never values). Its name starts with a dot,
# which ENTRY_RE refuses, so no entry an operator names can collide with it.
INDEX_SERVICE = "tsops"
INDEX_NAME = ".index"

# keyring's own threshold for a recommended backend (keyring.core.recommended); keyrings.alt's
# file backends, plaintext or not, declare less.
MIN_PRIORITY = 1.0


class SecretError(TsopsError):
    """A secret could not be found, stored or deleted (exit 1)."""


class KeyringUnavailable(SecretError):
    """This machine has no keyring backend that keeps secrets encrypted."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"no secure keyring on this machine (backend {backend}: {reason})")
        self.backend = backend
        self.reason = reason


class EntryNameError(UsageError):
    """A keyring entry name is not of the form SERVICE/NAME (exit 2)."""


class SecretSource(Protocol):
    """Where a secret is kept, as in the inventory's SecretRef: an env var, a keyring entry."""

    @property
    def env(self) -> str | None:
        """The environment variable that may hold the secret."""

    @property
    def keyring(self) -> str | None:
        """The keyring entry, written SERVICE/NAME, that may hold the secret."""


@dataclass(frozen=True)
class Entry:
    """A keyring entry: keyring's service and user name, written SERVICE/NAME."""

    service: str
    name: str

    def __str__(self) -> str:
        return f"{self.service}/{self.name}"


def parse_entry(text: str) -> Entry:
    """Parse SERVICE/NAME (letters, digits and . _ @ -, each part starting alphanumeric)."""
    match = ENTRY_RE.match(text)
    if match is None:
        raise EntryNameError(
            f"bad keyring entry {text!r}: expected SERVICE/NAME, e.g. tsops/api-token "
            "(letters, digits, '.', '_', '@', '-'; each part starting with a letter or digit)"
        )
    return Entry(match.group(1), match.group(2))


def backend_name(backend: KeyringBackend) -> str:
    """The backend's full class name, as PYTHON_KEYRING_BACKEND spells it."""
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def weakness(backend: KeyringBackend) -> str | None:
    """Why this backend must not hold secrets, or None when it is a secure store."""
    if isinstance(backend, fail.Keyring):
        return "no keyring backend is installed or reachable"
    if isinstance(backend, null.Keyring):
        return "the null backend discards every secret"
    if any("plaintext" in cls.__name__.lower() for cls in type(backend).__mro__):
        return "it keeps secrets in a plaintext file"
    try:
        priority = float(type(backend).priority)
    except Exception as error:  # keyring's contract: priority raises when not usable here
        return f"not usable here: {error}"
    if priority < MIN_PRIORITY:
        return f"keyring does not recommend it (priority {priority:g}; secure stores have >= 1)"
    return None


def secure_backend() -> KeyringBackend:
    """The backend tsops uses (a chain: its best secure member), or raise KeyringUnavailable."""
    try:
        backend = keyring.get_keyring()
    except Exception as error:  # a PYTHON_KEYRING_BACKEND or keyringrc.cfg naming a bad class
        configured = os.environ.get("PYTHON_KEYRING_BACKEND", "configured in keyringrc.cfg")
        raise KeyringUnavailable(configured, f"cannot load it: {error}") from None
    if isinstance(backend, chainer.ChainerBackend):
        members: list[KeyringBackend] = list(backend.backends)
        for member in members:
            if weakness(member) is None:
                return member
        reasons = "; ".join(f"{backend_name(m)}: {weakness(m)}" for m in members)
        raise KeyringUnavailable(backend_name(backend), reasons or "it chains no backend")
    reason = weakness(backend)
    if reason is not None:
        raise KeyringUnavailable(backend_name(backend), reason)
    return backend


def _keyring_failure(action: str, entry: Entry | str, error: KeyringError) -> SecretError:
    """A SecretError for a keyring call that failed (the message never includes a value)."""
    return SecretError(f"cannot {action} keyring entry {entry}: {type(error).__name__}: {error}")


def fetch(entry: str) -> str | None:
    """The secret stored under SERVICE/NAME, or None when the entry is not set."""
    parsed = parse_entry(entry)
    backend = secure_backend()
    try:
        return backend.get_password(parsed.service, parsed.name)
    except KeyringError as error:
        raise _keyring_failure("read", parsed, error) from None


def store(entry: str, value: str) -> None:
    """Store a secret under SERVICE/NAME (replacing any value) and record the name in the index."""
    parsed = parse_entry(entry)
    if not value:
        raise UsageError(f"refusing to store an empty secret in {parsed}")
    backend = secure_backend()
    try:
        backend.set_password(parsed.service, parsed.name, value)
    except KeyringError as error:
        raise _keyring_failure("write", parsed, error) from None
    names = _read_index(backend)
    if str(parsed) not in names:
        _write_index(backend, [*names, str(parsed)])


def delete(entry: str) -> bool:
    """Delete SERVICE/NAME and its index line; return whether a secret was there."""
    parsed = parse_entry(entry)
    backend = secure_backend()
    try:
        existed = backend.get_password(parsed.service, parsed.name) is not None
        if existed:
            backend.delete_password(parsed.service, parsed.name)
    except PasswordDeleteError as error:
        raise _keyring_failure("delete", parsed, error) from None
    except KeyringError as error:
        raise _keyring_failure("read", parsed, error) from None
    names = _read_index(backend)
    if str(parsed) in names:
        _write_index(backend, [name for name in names if name != str(parsed)])
    return existed


def list_entries() -> list[str]:
    """The SERVICE/NAME entries tsops stored on this machine, sorted (names only)."""
    return _read_index(secure_backend())


def _read_index(backend: KeyringBackend) -> list[str]:
    """Read the index of entry names; a missing index is empty, a damaged one an error."""
    where = f"{INDEX_SERVICE}/{INDEX_NAME}"
    try:
        raw = backend.get_password(INDEX_SERVICE, INDEX_NAME)
    except KeyringError as error:
        raise _keyring_failure("read", where, error) from None
    if raw is None:
        return []
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise SecretError(
            f"the index of tsops entries ({where} in the keyring) is damaged; delete it with "
            "your keyring's own tool and store the secrets again"
        )
    return sorted(names)


def _write_index(backend: KeyringBackend, names: list[str]) -> None:
    """Write the index of entry names, or delete it when empty."""
    where = f"{INDEX_SERVICE}/{INDEX_NAME}"
    try:
        if names:
            backend.set_password(INDEX_SERVICE, INDEX_NAME, json.dumps(sorted(names)))
        else:
            backend.delete_password(INDEX_SERVICE, INDEX_NAME)
    except KeyringError as error:
        raise _keyring_failure("write", where, error) from None


def _remedy(ref: SecretSource, *, keyring_usable: bool) -> str:
    """Say how to provide the secret: the variable, and the keyring entry when it can work."""
    if not keyring_usable:
        if ref.env is not None:
            return f"use the environment variable {ref.env} instead: `export {ref.env}=...`"
        return (
            f"name an environment variable for it in the inventory "
            f"({{env: NAME, keyring: {ref.keyring}}}) and `export NAME=...`"
        )
    ways = []
    if ref.env is not None:
        ways.append(f"`export {ref.env}=...`")
    if ref.keyring is not None:
        ways.append(f"`tsops secrets set {ref.keyring}`")
    return "set it with " + " or ".join(ways)


def resolve(ref: SecretSource, *, events: Events, prompt_label: str) -> str:
    """Return the secret: env var, then keyring, then a hidden prompt when `events` can ask."""
    if ref.env is not None and os.environ.get(ref.env):
        return os.environ[ref.env]
    findings = []
    if ref.env is not None:
        findings.append(f"environment variable {ref.env} is not set")
    keyring_usable = True
    if ref.keyring is not None:
        try:
            value = fetch(ref.keyring)
        except SecretError as error:
            keyring_usable = False
            findings.append(error.message)
        else:
            if value is not None:
                return value
            findings.append(f"keyring entry {ref.keyring} is not set")
    found = "; ".join(findings)
    remedy = _remedy(ref, keyring_usable=keyring_usable)
    why = events.unable_to_ask()
    if why is not None:
        raise SecretError(f"{prompt_label}: {found}; {why}; {remedy}")
    value = events.ask_secret(prompt_label, found)
    if not value:
        raise SecretError(f"{prompt_label}: nothing entered; {remedy}")
    return value
