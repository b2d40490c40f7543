"""The inventory's ssh_config is parsed once per run, not once per host (found by bench/scale.py:
with one Host block per server, every host paid for the whole fleet's file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from paramiko import SSHConfig

from tsops.inventory.load import Target
from tsops.remote import Remote, parsed_ssh_config


def target(name: str) -> Target:
    return Target(name=name, role="server", group=None, address=name, tags=("tag:server",),
                  user="root", port=22, identity_file=None, sudo=False, jump_host=None, line=1)


def write_config(path: Path, hosts: int) -> Path:
    path.write_text("".join(f"Host node{i}\n  HostName 10.214.0.{10 + i}\n  Port {2200 + i}\n"
                            for i in range(hosts)) + "Host *\n  User ops\n")
    return path


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every parse of an ssh_config file, by anyone (Fabric included)."""
    counted: list[int] = []
    original = SSHConfig.parse

    def counting(self: SSHConfig, file_obj: Any) -> None:
        counted.append(1)
        original(self, file_obj)

    monkeypatch.setattr(SSHConfig, "parse", counting)
    return counted


def test_every_connection_of_a_run_shares_one_parse(
    tmp_path: Path, parses: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fabric import Connection

    config = write_config(tmp_path / "ssh_config", 20)
    monkeypatch.setattr(Connection, "open", lambda self: None)  # nothing is contacted
    opened = [Remote(target(f"node{i}"), ssh_config=str(config))._open() for i in range(20)]
    assert len(parses) == 1
    # Each host still gets its own block and the `Host *` defaults, as Fabric's own parse gives
    # (user and port come from the inventory, which overrides ssh_config).
    for i, connection in enumerate(opened):
        assert connection.host == f"10.214.0.{10 + i}"
        assert (connection.ssh_config["port"], connection.ssh_config["user"]) == \
            (str(2200 + i), "ops")


def test_a_changed_file_is_parsed_again(tmp_path: Path, parses: list[int]) -> None:
    config = write_config(tmp_path / "ssh_config", 2)
    first = parsed_ssh_config(str(config))
    assert parsed_ssh_config(str(config)) is first
    write_config(config, 3)
    os.utime(config, ns=(1, 1))  # a different mtime even on a coarse clock
    again = parsed_ssh_config(str(config))
    assert again is not first
    assert again.lookup("node2")["hostname"] == "10.214.0.12"
    assert len(parses) == 2


def test_a_missing_file_is_refused_as_fabric_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        parsed_ssh_config(str(tmp_path / "missing"))
