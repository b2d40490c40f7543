"""Writing the operator's files safely: the inventory, a policy file in a repository, history.

`replace_file` is the one way tsops rewrites a file it did not create: the new bytes go to a
temporary file created exclusively (O_EXCL, mode 0600 until it is complete) beside the real
target, so that a symlinked target stays a symlink and the rename stays on one file system; the
target's mode is kept; and the file is refused when its bytes are no longer those tsops read, so
an edit made meanwhile is never overwritten. `write_private` creates a new file readable by its
owner only.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from tsops.errors import TsopsError


class FileChangedMeanwhile(TsopsError):
    """The file's bytes changed since tsops read them: nothing was written."""


def real_target(path: Path) -> Path:
    """The file a (possibly symlinked) path names: where the bytes really are."""
    return path.resolve(strict=False) if path.is_symlink() else path


def temporary_beside(target: Path, data: bytes) -> Path:
    """`data` in a new file next to `target`, created exclusively with mode 0600."""
    while True:
        candidate = target.with_name(f".{target.name}.tsops-{secrets.token_hex(4)}.tmp")
        try:
            handle = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    return candidate


def replace_file(path: Path, data: bytes, *, expected: bytes | None,
                 changed: Callable[[Path], str] | None = None) -> None:
    """Replace the file at `path` with `data`, atomically, if it still holds `expected`.

    `expected` None: the file may hold anything (or not exist). `changed` words the refusal.
    """
    target = real_target(path)
    temporary = temporary_beside(target, data)
    try:
        try:
            current = target.read_bytes()
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            current, mode = None, 0o600
        if expected is not None and current != expected:
            raise FileChangedMeanwhile(changed(path) if changed else
                                       f"{path} changed since tsops read it; nothing was "
                                       "written")
        temporary.chmod(mode)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist) readable and writable by its owner only."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
