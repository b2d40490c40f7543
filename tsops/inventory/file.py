"""An inventory edit made safely: the edited text validated on a private copy, and only then
moved over the file (atomically, keeping its mode), by the flows that edit it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tsops.errors import InventoryError
from tsops.inventory.load import LoadedInventory, load_inventory


@contextmanager
def candidate(path: Path, text: str, refused: str) -> Iterator[tuple[Path, LoadedInventory]]:
    """The edited inventory next to the file, loaded with the loader's own validation.

    Created 0600 and given the file's own mode; it replaces the file only if the caller moves
    it there, else it is removed. `refused` ends the error list when the edit is invalid.
    """
    temporary = path.with_name(f".{path.name}.tsops-{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    try:
        temporary.chmod(path.stat().st_mode & 0o777)
        try:
            loaded = load_inventory(temporary)
        except InventoryError as error:
            raise InventoryError([p.replace(str(temporary), str(path)) for p in error.problems]
                                 + [refused]) from error
        yield temporary, replace(loaded, path=path)
    finally:
        temporary.unlink(missing_ok=True)
