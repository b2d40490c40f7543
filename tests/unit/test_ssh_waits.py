"""Bounded SSH waits and Ctrl-C, as an operator meets them: tsops run as a process against a
host whose sshd accepts connections and never answers (the control plane is the simulator)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.sim.control import ControlServer
from tests.unit.ssh_server import HungServer, SshServer, client_key

HANG_BOUND_S = 60  # only catches a hang; never a measure of speed


@pytest.fixture
def control() -> Iterator[ControlServer]:
    with ControlServer() as server:
        yield server


@pytest.fixture
def hung() -> Iterator[HungServer]:
    with HungServer() as server:
        yield server


def write_inventory(folder: Path, control: ControlServer, port: int,
                    ssh_timeout: int | None = None) -> Path:
    (folder / "ssh_config").write_text(f"Host *\n  UserKnownHostsFile {folder}/known_hosts\n"
                                       f"  IdentityFile {client_key(folder)}\n")
    connection: dict[str, object] = {"ssh_config": str(folder / "ssh_config")}
    if ssh_timeout is not None:
        connection["ssh_timeout"] = ssh_timeout
    document = {
        "version": 1,
        "tailnet": {"name": control.tailnet, "api_url": control.url, "allow_plain_http": True,
                    "credentials": {"api_token": {"env": "TSOPS_TEST_TOKEN"}}},
        "connection": connection,
        "servers": {"tags": ["tag:server"],
                    "hosts": {"host1": {"address": "127.0.0.1", "port": port}}},
    }
    path = folder / "inventory.yaml"
    with path.open("w") as out:
        YAML().dump(document, out)
    return path


def tsops(*args: str, control: ControlServer) -> subprocess.Popen[str]:
    env = {**os.environ, "TSOPS_TEST_TOKEN": control.create_api_token()}
    env.pop("TSOPS_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "tsops", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_hung_sshd_is_one_line_naming_host_and_banner_without_paramiko_noise(
        tmp_path: Path, control: ControlServer, hung: HungServer) -> None:
    inventory = write_inventory(tmp_path, control, hung.port, ssh_timeout=1)
    process = tsops("plan", str(inventory), control=control)
    out, err = process.communicate(timeout=HANG_BOUND_S)
    assert process.returncode == 1
    line = (f"host1: cannot plan: timed out within 1 s waiting for the SSH banner "
            f"(at 127.0.0.1:{hung.port})")
    assert line in out.splitlines()
    assert "Traceback" not in err and "paramiko" not in err.lower()


def test_the_option_overrides_the_inventory(tmp_path: Path, control: ControlServer,
                                            hung: HungServer) -> None:
    inventory = write_inventory(tmp_path, control, hung.port, ssh_timeout=600)
    process = tsops("--ssh-timeout", "1", "plan", str(inventory), control=control)
    out, err = process.communicate(timeout=HANG_BOUND_S)
    assert "timed out within 1 s waiting for the SSH banner" in out + err


def test_ctrl_c_mid_connect_prints_one_line_and_exits_130(
        tmp_path: Path, control: ControlServer, hung: HungServer) -> None:
    inventory = write_inventory(tmp_path, control, hung.port, ssh_timeout=600)
    process = tsops("plan", str(inventory), control=control)
    try:
        assert hung.accepted.wait(HANG_BOUND_S)  # tsops is now waiting for the banner
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=HANG_BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert err.splitlines() == ["interrupted"]


def test_ctrl_c_while_a_command_runs_prints_one_line_and_exits_130(
        tmp_path: Path, control: ControlServer) -> None:
    with SshServer(hang_commands=True) as server:
        inventory = write_inventory(tmp_path, control, server.port)
        (tmp_path / "known_hosts").write_text(server.known_line())
        process = tsops("plan", str(inventory), control=control)
        try:
            assert server.commands.wait(HANG_BOUND_S)  # the facts probe is running
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=HANG_BOUND_S)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130
    assert err.splitlines() == ["interrupted"]
