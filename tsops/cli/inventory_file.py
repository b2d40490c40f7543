"""An inventory edit shown to the operator as a unified diff (the edit itself is
tsops.inventory.file)."""

from __future__ import annotations

import difflib
from pathlib import Path

from tsops.cli import console


def print_diff(path: Path, before: str, after: str, label: str) -> None:
    """The edit as a unified diff, `label` naming the new side."""
    console.out.file.write("".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"{path} (current)", tofile=f"{path} ({label})")))
    console.out.file.flush()
