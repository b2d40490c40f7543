"""Where the policy text comes from and goes to (the API or a file), and what tsops wrote.

Both sources read a snapshot with a version tag (the API's ETag; for a file, the SHA-256 of its
bytes) and write only if the text is still that version. Every write is kept in a local state
directory with the version before and after, so that `tsops policy rollback` can undo it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tsops.errors import TsopsError
from tsops.files import FileChangedMeanwhile, replace_file, write_private
from tsops.policy.hujson import HuJSONError
from tsops.tailscale_api import PolicyValidation

if TYPE_CHECKING:
    from tsops.inventory.load import LoadedInventory
    from tsops.tailscale_api import TailscaleApi


class PolicyChangedMeanwhile(TsopsError):
    """The policy changed between reading it and writing it."""


@dataclass(frozen=True)
class Snapshot:
    """The policy text and its version tag."""

    text: str
    etag: str


class PolicySource(Protocol):
    """Read, validate and conditionally write the policy text."""

    label: str

    def read(self) -> Snapshot:
        """The current text and version."""
        ...

    def validate(self, text: str) -> PolicyValidation:
        """The validator's objection to `text` and its warnings (neither when no validator is
        at hand: see can_validate)."""
        ...

    @property
    def can_validate(self) -> bool:
        """Whether `validate` really asks the API."""
        ...

    def write(self, text: str, etag: str) -> Snapshot:
        """Write `text` if the source is still at `etag`, else raise PolicyChangedMeanwhile."""
        ...


class ApiSource:
    """The tailnet's policy through API v2: GET with ETag, validate, POST with If-Match."""

    def __init__(self, api: TailscaleApi) -> None:
        self.api = api
        self.label = f"tailnet {api.tailnet} policy file"

    def read(self) -> Snapshot:
        """GET the HuJSON text and its ETag."""
        policy = self.api.get_policy()
        return Snapshot(policy.text, policy.etag)

    def validate(self, text: str) -> PolicyValidation:
        """Ask the validate endpoint."""
        return self.api.validate_policy(text)

    @property
    def can_validate(self) -> bool:
        """The API always validates."""
        return True

    def write(self, text: str, etag: str) -> Snapshot:
        """POST with If-Match; a 412 becomes PolicyChangedMeanwhile."""
        from tsops.tailscale_api import PolicyChanged

        try:
            policy = self.api.set_policy(text, etag)
        except PolicyChanged as error:
            raise PolicyChangedMeanwhile(error.message) from error
        return Snapshot(policy.text, policy.etag)


def file_etag(data: bytes) -> str:
    """The version tag of a policy file: the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class FileSource:
    """A policy file in the operator's repository, edited in place; validated by the API if any."""

    def __init__(self, path: Path, api: TailscaleApi | None) -> None:
        self.path = path
        self.api = api
        self.label = str(path)

    def read(self) -> Snapshot:
        """Read the file's exact bytes (line endings kept)."""
        data = self._bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
            raise HuJSONError(f"invalid policy: not UTF-8 text (byte 0x{data[error.start]:02x})",
                              line, column, source=str(self.path)) from None
        return Snapshot(text, file_etag(data))

    def _bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise TsopsError(f"{self.path}: cannot read the policy file: {error}") from error

    def validate(self, text: str) -> PolicyValidation:
        """Ask the API's validate endpoint when credentials were available."""
        return self.api.validate_policy(text) if self.api is not None else PolicyValidation()

    @property
    def can_validate(self) -> bool:
        """Whether an API client is at hand."""
        return self.api is not None

    def write(self, text: str, etag: str) -> Snapshot:
        """Replace the file atomically if its bytes are still `etag` (tsops.files.replace_file:
        same mode, a symlink stays a symlink, the temporary file is created exclusively)."""
        current = self._bytes()
        if file_etag(current) != etag:
            raise PolicyChangedMeanwhile(f"{self.path} changed since tsops read it")
        data = text.encode("utf-8")
        try:
            replace_file(self.path, data, expected=current)
        except FileChangedMeanwhile as error:
            raise PolicyChangedMeanwhile(f"{self.path} changed since tsops read it") from error
        return Snapshot(text, file_etag(data))


@dataclass(frozen=True)
class Record:
    """One write tsops made: the versions before and after, when, and why."""

    number: int
    written_at: str
    reason: str
    before: Snapshot
    after: Snapshot


class History:
    """Every version tsops wrote, in a state directory: NNNN.json, .before and .after texts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def records(self) -> list[Record]:
        """Every write, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for meta in sorted(self.directory.glob("[0-9][0-9][0-9][0-9].json")):
            found.append(self._load(meta))
        return found

    def last(self) -> Record | None:
        """The latest write, if any."""
        records = self.records()
        return records[-1] if records else None

    def get(self, number: int) -> Record:
        """Write number `number`, or a TsopsError listing what exists."""
        meta = self.directory / f"{number:04d}.json"
        if not meta.is_file():
            numbers = ", ".join(str(r.number) for r in self.records()) or "none"
            raise TsopsError(f"no policy write number {number} in {self.directory} "
                             f"(kept: {numbers})")
        return self._load(meta)

    def add(self, before: Snapshot, after: Snapshot, reason: str) -> Record:
        """Keep one write; return its record."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        last = self.last()
        number = last.number + 1 if last else 1
        stem = self.directory / f"{number:04d}"
        # Private: a policy file may name people and hosts that not every local user may read.
        write_private(stem.with_suffix(".before.hujson"), before.text.encode())
        write_private(stem.with_suffix(".after.hujson"), after.text.encode())
        written_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_private(stem.with_suffix(".json"), (json.dumps({
            "number": number, "written_at": written_at, "reason": reason,
            "etag_before": before.etag, "etag_after": after.etag,
        }, indent=2) + "\n").encode())
        return Record(number, written_at, reason, before, after)

    def _load(self, meta: Path) -> Record:
        stem = meta.with_suffix("")
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            before = stem.with_suffix(".before.hujson").read_bytes().decode()
            after = stem.with_suffix(".after.hujson").read_bytes().decode()
            return Record(int(data["number"]), str(data["written_at"]), str(data["reason"]),
                          Snapshot(before, str(data["etag_before"])),
                          Snapshot(after, str(data["etag_after"])))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TsopsError(f"{meta}: not a readable record of a policy write ({error}); move "
                             f"it out of {self.directory} to go on") from error


def default_state_dir(inventory: LoadedInventory) -> Path:
    """`policy.state_dir`, else $XDG_STATE_HOME (~/.local/state)/tsops/policy/<tailnet>[-file]."""
    policy = inventory.model.policy
    if policy.state_dir is not None:
        return inventory.local_path(policy.state_dir)
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    tailnet = inventory.model.tailnet.name
    name = "default" if tailnet == "-" else re.sub(r"[^A-Za-z0-9._-]+", "_", tailnet)
    if policy.source == "file":
        assert policy.file is not None
        digest = hashlib.sha256(str(inventory.local_path(policy.file).resolve()).encode())
        name += f"-file-{digest.hexdigest()[:12]}"
    return base / "tsops" / "policy" / name
