"""Host keys: every SSH hop (jump hosts and the target) checked against known_hosts as OpenSSH
would, and new keys appended without ever rewriting the file.

paramiko's own known_hosts support skips `@cert-authority` and `@revoked` lines and, when it
adds a key, writes the whole file back from what it understood: comments, markers and lines it
could not parse are lost. So tsops reads known_hosts itself (this module, no paramiko import),
hands paramiko only the plain keys of the one host being connected (in memory, for key type
preference and the changed-key check: tsops.remote does that) and decides about the rest in
`HostKeyPolicy`.

What is refused, with the key's SHA256 fingerprint: a key on a `@revoked` line (for any host);
a key different from the one known for the host (paramiko's BadHostKeyException, described by
`tsops.remote.describe_ssh_error`); an unknown host, unless the hop's ssh_config says
`StrictHostKeyChecking accept-new` (or `no`), when its key is appended to the first user
known_hosts file; a host known only through a `@cert-authority` line: paramiko does not check
host certificates (signature, principals, validity), so tsops cannot honour them and says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
ACCEPT_NEW = ("accept-new", "no", "off")  # "no" never accepts a changed key here

_APPENDING = threading.Lock()


class HostKeyRefused(Exception):
    """A hop's host key was not accepted; the message is the operator's one line."""


@dataclass(frozen=True)
class Entry:
    """One known_hosts line: its marker (None, `cert-authority`, `revoked`), host patterns,
    key type and base64 key, and where it was read."""

    marker: str | None
    hosts: str
    keytype: str
    key: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        """`FILE:LINE`, for messages."""
        return f"{self.path}:{self.line}"


def lookup_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _pattern(text: str) -> re.Pattern[str]:
    """An OpenSSH host pattern (`*`, `?`; nothing else is special) as a regular expression."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile("".join(parts), re.IGNORECASE)


def _hashed_matches(field: str, name: str) -> bool:
    """Whether a hashed host field (`|1|salt|hash`) is `name`."""
    try:
        _, kind, salt, digest = field.split("|")
        raw_salt, raw_digest = base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        return False
    if kind != "1":
        return False
    mine = hmac.new(raw_salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(mine, raw_digest)


def host_matches(hosts: str, name: str) -> bool:
    """Whether a known_hosts host field matches `name` (as `lookup_name` spells it): hashed
    entries, comma-separated patterns with wildcards, and `!` negations, which win."""
    if hosts.startswith("|"):
        return _hashed_matches(hosts, name)
    matched = False
    for pattern in hosts.split(","):
        negated = pattern.startswith("!")
        if _pattern(pattern[1:] if negated else pattern).fullmatch(name):
            if negated:
                return False
            matched = True
    return matched


def parse(text: str, path: Path) -> list[Entry]:
    """Every usable line of a known_hosts file; comments, blanks and broken lines are skipped
    (OpenSSH skips them too)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker = fields[0][1:]
            fields = fields[1:]
            if marker not in ("cert-authority", "revoked"):
                continue
        if len(fields) < 3:
            continue
        try:
            base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        entries.append(Entry(marker, fields[0], fields[1], fields[2], path, number))
    return entries


@dataclass(frozen=True)
class KnownHosts:
    """The entries of a hop's known_hosts files, user files first, and where new keys go."""

    entries: tuple[Entry, ...]
    files: tuple[Path, ...]
    append_to: Path | None

    @classmethod
    def read(cls, user_files: Sequence[Path], global_files: Sequence[Path]) -> KnownHosts:
        """Read every file that exists (an unreadable one is skipped, as ssh does)."""
        entries: list[Entry] = []
        for path in (*user_files, *global_files):
            try:
                entries += parse(path.read_text(errors="replace"), path)
            except OSError:
                continue
        return cls(tuple(entries), (*user_files, *global_files),
                   user_files[0] if user_files else None)

    def keys_for(self, name: str) -> list[Entry]:
        """The plain (unmarked) entries for `name` whose key is not revoked."""
        return [e for e in self.entries if e.marker is None and host_matches(e.hosts, name)
                and self.revoked(e.key) is None]

    def revoked(self, key: str) -> Entry | None:
        """The `@revoked` line listing this base64 key, if any (it applies to every host)."""
        return next((e for e in self.entries if e.marker == "revoked" and e.key == key), None)

    def authorities_for(self, name: str) -> list[Entry]:
        """The `@cert-authority` lines whose patterns match `name`."""
        return [e for e in self.entries
                if e.marker == "cert-authority" and host_matches(e.hosts, name)]

    def describe_files(self) -> str:
        """The files read, for messages."""
        return ", ".join(str(p) for p in self.files)

    def append(self, name: str, keytype: str, key: str, hashed: bool = False) -> Path:
        """Add one line for `name` at the end of the first user file; nothing else changes."""
        if self.append_to is None:
            raise HostKeyRefused(f"{name}: no user known_hosts file to add its key to")
        path = self.append_to
        host = _hash(name) if hashed else name
        with _APPENDING:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                separator = b"" if _ends_with_newline(path) else b"\n"
                os.write(fd, separator + f"{host} {keytype} {key}\n".encode())
            finally:
                os.close(fd)
        return path


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        if stream.tell() == 0:
            return True
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) == b"\n"


def _hash(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _paths(value: Any, defaults: Iterable[str]) -> tuple[Path, ...]:
    """Files named by an ssh_config value (a string or list, `none` for none), or defaults."""
    if value is None:
        words = list(defaults)
    else:
        words = value.split() if isinstance(value, str) else [w for v in value for w in v.split()]
    return tuple(Path(w).expanduser() for w in words if w.lower() != "none")


def files_from_config(ssh_config: Any) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The user and global known_hosts files an ssh_config lookup names (OpenSSH's defaults
    when it names none)."""
    return (_paths(ssh_config.get("userknownhostsfile"), USER_FILES),
            _paths(ssh_config.get("globalknownhostsfile"), GLOBAL_FILES))


class HostKeyPolicy:
    """What paramiko asks about a hop whose key type has no plain entry in known_hosts.

    tsops.remote wraps it in a paramiko MissingHostKeyPolicy (paramiko is imported only
    there); `missing_host_key` refuses or appends, as the module docstring says.
    """

    def __init__(self, known: KnownHosts, label: str, accept_new: bool, hashed: bool) -> None:
        self.known = known
        self.label = label
        self.accept_new = accept_new
        self.hashed = hashed

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        """Accept (appending) or refuse the key `hostname` offered."""
        blob = key.asbytes()
        b64 = base64.b64encode(blob).decode()
        offered = f"{key.get_name()} key {fingerprint(blob)}"
        revoked = self.known.revoked(b64)
        if revoked is not None:
            raise HostKeyRefused(f"{self.label}: its {offered} is revoked ({revoked.where}): "
                                 "refusing to connect")
        authorities = self.known.authorities_for(hostname)
        if authorities:
            raise HostKeyRefused(
                f"{self.label}: known_hosts trusts a certificate authority for it "
                f"({authorities[0].where}), but tsops cannot check host certificates (paramiko "
                f"does not verify them); it offered {offered}: add that key itself to "
                "known_hosts once you have checked it")
        if not self.accept_new:
            raise HostKeyRefused(
                f"{self.label}: unknown host key ({offered}), not in known_hosts "
                f"({self.known.describe_files()}): check the fingerprint and add it (ssh to it "
                "once, or StrictHostKeyChecking accept-new in its ssh_config)")
        self.known.append(hostname, key.get_name(), b64, self.hashed)
