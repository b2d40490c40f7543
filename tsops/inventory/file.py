"""An inventory edit made safely: the edited text validated on a private copy, and only then
written over the file (atomically, keeping its mode, a symlink staying a symlink), and only if
nobody changed the file meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tsops.errors import InventoryError
from tsops.files import replace_file, temporary_beside
from tsops.inventory.load import LoadedInventory, load_inventory


@contextmanager
def candidate(path: Path, text: str, refused: str) -> Iterator[tuple[Path, LoadedInventory]]:
    """The edited inventory next to the file, loaded with the loader's own validation.

    Created 0600 and given the file's own mode; it replaces the file only if the caller moves
    it there, else it is removed. `refused` ends the error list when the edit is invalid.
    """
    # Beside `path` itself, so that its relative paths resolve as in the inventory; created
    # exclusively under a random name, so that nothing planted there is written through.
    temporary = temporary_beside(path, text.encode("utf-8"))
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


def commit(path: Path, before: str, after: str) -> None:
    """Write the validated `after` over the inventory, unless it no longer holds `before`."""
    replace_file(path, after.encode("utf-8"), expected=before.encode("utf-8"),
                 changed=lambda p: f"{p} changed since tsops read it: the edit was not written; "
                                   "rerun the command")
