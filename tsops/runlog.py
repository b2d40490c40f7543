"""The run log: one JSON line per tsops command that changes something, as change evidence.

Kept on the operator's machine at `$XDG_STATE_HOME/tsops/runs.jsonl` (default
`~/.local/state/tsops/runs.jsonl`; directory 0700, file 0600), appended when the command ends,
however it ends (except a refusal for bad input, exit 2, before anything was done): when, who
(login and machine), the command line (which never holds a secret: secrets come from the
keyring, the environment or a prompt), the inventory and its SHA-256, the exit code, and what
the command reported it changed. Read-only commands are not logged.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

# Commands (as their words on the command line) that only read: never logged.
READ_ONLY = {
    ("check",), ("plan",), ("status",), ("completion",), ("policy", "diff"),
    ("recorder", "iam-policy"), ("recordings", "list"), ("recordings", "show"),
    ("recordings", "cat"), ("recordings", "play"), ("recordings", "search"),
    ("recordings", "export"), ("recordings", "verify"), ("recordings", "public-key"),
    ("secrets", "get"), ("secrets", "list"),
}
# Flags that make a changing command read-only.
READ_ONLY_FLAGS = {"--dry-run", "--help", "--list"}

BAD_INPUT = 2  # refused before anything was done: nothing to keep evidence of
_changes: list[str] = []


def note(change: str) -> None:
    """Remember one thing this command changed, for its line in the run log."""
    _changes.append(change)


def path() -> Path:
    """Where the run log is."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tsops" / "runs.jsonl"


def _command_words(argv: list[str]) -> tuple[str, ...]:
    words = [a for a in argv if not a.startswith("-")]
    return tuple(words[:2])


def logged(argv: list[str]) -> bool:
    """Whether this command line changes something (and so is logged)."""
    words = _command_words(argv)
    if not words or READ_ONLY_FLAGS & set(argv):
        return False
    return words[:1] not in READ_ONLY and words not in READ_ONLY


def _inventory(argv: list[str]) -> dict[str, str] | None:
    import hashlib

    for word in argv:
        candidate = Path(word)
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
            return {"path": str(candidate.resolve()), "sha256": digest}
    return None


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def record(argv: list[str], started: datetime.datetime, exit_code: int) -> None:
    """Append this command's line to the run log (a failure to write it is only reported)."""
    if not logged(argv) or exit_code == BAD_INPUT:
        return
    # Imported here: every command (--help too) passes through, and most are not logged.
    import json
    import socket
    ended = datetime.datetime.now(datetime.UTC)
    entry: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ended": ended.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user": _who(), "machine": socket.gethostname(),
        "command": ["tsops", *argv], "cwd": str(Path.cwd()),
        "inventory": _inventory(argv), "exit_code": exit_code, "changes": list(_changes),
    }
    target = path()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (json.dumps(entry, sort_keys=True) + "\n").encode())
    finally:
        os.close(descriptor)
