"""`tsops check`: validate an inventory offline and show what it describes."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.table import Table

from tsops.cli import console
from tsops.cli.jsonout import emit
from tsops.context import check_renderable
from tsops.inventory.load import MAX_BYTES, STDIN, load_inventory


def run_check(path: Path, output: str = "table") -> None:
    """Load the inventory (raising InventoryError on any problem) and print a summary.

    `-` reads it from standard input (named `<stdin>` in messages; relative paths in it, such
    as an identity file, are taken from the current directory).
    """
    if str(path) == "-":
        inventory = load_inventory(STDIN, sys.stdin.buffer.read(MAX_BYTES + 1))
        path = STDIN
    else:
        inventory = load_inventory(path)
    check_renderable(inventory)
    for message in inventory.warnings:
        console.warning(message)
    model = inventory.model
    storage = model.storage.destination if model.storage else None
    if output == "json":
        emit({"inventory": str(path), "valid": True, "servers": len(inventory.servers),
              "recorders": len(inventory.recorders), "ssh_rules": len(model.ssh_rules),
              "storage": storage, "warnings": list(inventory.warnings),
              "hosts": [{"name": t.name, "role": t.role, "group": t.group,
                         "address": t.address, "user": t.user, "port": t.port,
                         "tags": list(t.tags)} for t in inventory.targets]})
        return
    table = Table(title=None, show_edge=False, pad_edge=False)
    for column in ("host", "role", "group", "address", "user", "port", "tags"):
        table.add_column(column)
    for target in inventory.targets:
        table.add_row(
            target.name, target.role, target.group or "-", target.address, target.user,
            str(target.port), " ".join(target.tags),
        )
    console.out.print(table)
    console.line(
        f"{path}: valid: {len(inventory.servers)} server(s), {len(inventory.recorders)} "
        f"recorder(s), {len(model.ssh_rules)} ssh rule(s), storage {storage or 'none'}"
    )
