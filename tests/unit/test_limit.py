"""`--limit`: names, groups and tags, with globs, commas and ! exclusions, as in Ansible."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsops.context import select
from tsops.errors import ExitCode, UsageError
from tsops.inventory.load import LoadedInventory, load_inventory

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "example.yaml"


@pytest.fixture(scope="module")
def inventory() -> LoadedInventory:
    # servers: bastion (tag:bastion), db1 and db2 (group db, tag:db); recorders: rec1, rec2
    return load_inventory(EXAMPLE)


def names(inventory: LoadedInventory, *limits: str) -> list[str]:
    return [t.name for t in select(inventory, limits)]


@pytest.mark.parametrize(("limits", "expected"), [
    ((), ["bastion", "db1", "db2"]),
    (("db1",), ["db1"]),
    (("db",), ["db1", "db2"]),                      # a group
    (("tag:bastion",), ["bastion"]),                # a tag
    (("db*",), ["db1", "db2"]),                     # a glob
    (("db[2]",), ["db2"]),
    (("tag:*",), ["bastion", "db1", "db2"]),
    (("db1,bastion",), ["bastion", "db1"]),         # commas, in inventory order
    (("db1", "bastion"), ["bastion", "db1"]),       # repeated values add up
    (("db,!db1",), ["db2"]),                        # an exclusion
    (("!db1",), ["bastion", "db2"]),                # only exclusions: from every server
    (("!tag:db",), ["bastion"]),
    ((" db1 , db2 ",), ["db1", "db2"]),
])
def test_patterns(inventory: LoadedInventory, limits: tuple[str, ...],
                  expected: list[str]) -> None:
    assert names(inventory, *limits) == expected


@pytest.mark.parametrize(("limits", "message"), [
    (("web*",), "--limit web*: no server of"),
    (("db1,nope",), "--limit nope: no server of"),
    (("!nope",), "--limit nope: no server of"),
    (("rec1",), "--limit rec1: rec1 is a recorder of"),
    (("rec*",), "rec1, rec2 are recorders"),
    (("db1,,db2",), "an empty pattern"),
    (("!",), "an empty pattern"),
    (("db1,!db*",), "selects no server"),
])
def test_bad_patterns_are_refused(inventory: LoadedInventory, limits: tuple[str, ...],
                                  message: str) -> None:
    with pytest.raises(UsageError) as refused:
        select(inventory, limits)
    assert message in refused.value.message
    assert "\n" not in refused.value.message
    assert refused.value.exit_code == ExitCode.BAD_INPUT
