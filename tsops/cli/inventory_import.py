"""`tsops inventory import ansible`: an Ansible inventory's hosts as a tsops inventory."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tsops.cli import console
from tsops.errors import InventoryError, UsageError
from tsops.inventory import ansible
from tsops.inventory.load import load_inventory


def run_import_ansible(source: Path, *, base: Path | None, to: Path | None,
                       force: bool) -> None:
    """Read, convert and check; write only an inventory that `tsops check` accepts."""
    if to is not None and to.exists() and not force:
        raise UsageError(f"--to {to}: the file exists; give --force to replace it")
    imported = ansible.convert(ansible.read(source))
    base_text = None
    if base is not None:
        load_inventory(base)  # the base must itself be valid (exit 2 naming its problems)
        base_text = base.read_text(encoding="utf-8")
    text = ansible.render(imported, source, base_text, str(base))
    # What is written must load: check it where it will live, so relative paths resolve there.
    where = (to or Path("inventory.yaml")).resolve().parent
    handle, name = tempfile.mkstemp(dir=where if to is not None else None, suffix=".yaml",
                                       prefix=".tsops-import-")
    scratch = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        try:
            load_inventory(scratch)
        except InventoryError as error:
            raise InventoryError([f"{source}: the imported inventory would not be valid: "
                                  + problem.replace(name, "(imported)")
                                  for problem in error.problems]) from None
        for note in imported.notes:
            console.warning(note)
        if to is None:
            sys.stdout.write(text)
            return
        scratch.chmod(0o644)
        scratch.replace(to)
        console.err.print(f"wrote {to}: {len(imported.hosts)} server(s); check it with "
                          f"`tsops check {to}`")
    finally:
        scratch.unlink(missing_ok=True)
