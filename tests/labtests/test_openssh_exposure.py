"""OpenSSH exposure on real lab hosts: `keep` reported, `restrict` applied, a lockout reverted.

One lab of three hosts serves the module; each test has a host of its own (host1 keep, host2
restrict, host3 lockout), so their order does not matter. The hosts start as a fresh Debian
server does: sshd on every address. The lab normally keeps sshd on the lab address only (its
bind-mounted `listen.conf`), to leave the tailnet address's port 22 to simulated Tailscale SSH;
these tests empty that file instead, and their control server announces no tailnet prefix, so
no simulated Tailscale SSH listens there (Tailscale SSH is not what they test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.conftest import lab_unavailable
from tests.lab.errors import LabUnavailable
from tests.lab.lab import Lab, LabHost
from tests.lab.tailnet import LAB_TAGS, SEED_POLICY, TOKEN_VARIABLE, LabTailnet
from tests.sim.control.server import ControlServer
from tests.sim.tailscale.build import ensure_repo_tree
from tests.sim.tailscale.server import RepoServer
from tsops.servers.exposure import DROPIN, STATE_DIR, UNIT_PREFIX

pytestmark = pytest.mark.lab

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 22), timeout=5).close()
    print("accepted")
except ConnectionRefusedError:
    print("refused")
"""


@pytest.fixture(scope="module")
def exposure_lab() -> Iterator[tuple[Lab, LabTailnet]]:
    """Three hosts with sshd on every address, and a tailnet without a data plane."""
    lab = Lab(host_count=3)
    try:
        lab.start()
    except LabUnavailable as error:
        lab.stop()
        lab_unavailable(error)
    except BaseException:
        lab.stop()
        raise
    try:
        for host in lab.hosts:
            # In place: the container sees the same file through its read-only bind mount.
            (host.workdir / "sshd_listen.conf").write_text("")
            host.nsenter("systemctl restart ssh.service")
        owners = ",\n".join(f'    "{tag}": ["autogroup:admin"]' for tag in LAB_TAGS)
        with ControlServer(lab.gateway, 0) as control, \
                RepoServer(ensure_repo_tree(), lab.gateway, 0) as repo:
            control.state.seed_policy(SEED_POLICY % owners)
            tailnet = LabTailnet(lab, control, repo, control.state.create_api_token())
            try:
                yield lab, tailnet
            finally:
                tailnet.stop()
    finally:
        lab.stop()


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would, the API token in the environment."""
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token}
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=600)


def inventory(tailnet: LabTailnet, path: Path, host: str, openssh: dict[str, Any] | None) -> Path:
    """The lab inventory for one host, with its `openssh` setting."""
    tailnet.inventory(path, {host: ()})
    yaml = YAML()
    document = yaml.load(path)
    if openssh is not None:
        document["servers"]["hosts"][host] = {"openssh": openssh}
    with path.open("w") as out:
        yaml.dump(document, out)
    return path


def lab_host(lab: Lab, name: str) -> LabHost:
    return next(host for host in lab.hosts if host.name == name)


def connect(host: LabHost, address: str) -> str:
    """A plain TCP connection to `address`:22 from inside the host: accepted or refused."""
    return host.nsenter(f"python3 -c '{CONNECT}' {address}").stdout.strip()


def listeners(host: LabHost) -> list[str]:
    """sshd's listening sockets, as `ss` shows them."""
    lines = host.nsenter("ss -Hltnp").stdout.splitlines()
    return sorted(line.split()[3] for line in lines if '(("sshd"' in line)


def no_revert_left(host: LabHost) -> None:
    """No dead-man timer and no revert files stay behind once a change is settled."""
    assert host.nsenter(f"ls -A {STATE_DIR}").stdout == ""
    timers = host.nsenter("systemctl list-units --all --no-legend 'tsops-*'").stdout
    assert UNIT_PREFIX not in timers


def bootstrap(tailnet: LabTailnet, path: Path) -> tuple[int, dict[str, Any], str]:
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    hosts = {h["name"]: h for h in json.loads(result.stdout)["hosts"]} if result.stdout else {}
    return result.returncode, hosts, result.stdout + result.stderr


def test_keep_reports_every_listener_as_an_unrecorded_path(
        exposure_lab: tuple[Lab, LabTailnet], tmp_path: Path) -> None:
    lab, tailnet = exposure_lab
    host = lab_host(lab, "host1")
    path = inventory(tailnet, tmp_path / "inventory.yaml", "host1", None)
    plan = tsops(tailnet, "plan", str(path))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert ("host1: OpenSSH reachable on all IPv4 addresses (0.0.0.0:22): unrecorded path"
            in plan.stdout.splitlines())
    assert ("host1: OpenSSH reachable on all IPv6 addresses ([::]:22): unrecorded path"
            in plan.stdout.splitlines())
    code, _, output = bootstrap(tailnet, path)
    assert code == 0, output
    status = tsops(tailnet, "status", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    assert ("host1: OpenSSH reachable on all IPv4 addresses (0.0.0.0:22): unrecorded path"
            in status.stdout.splitlines())
    data = json.loads(tsops(tailnet, "status", "-o", "json", str(path)).stdout)
    (entry,) = data["hosts"]
    assert entry["openssh"]["mode"] == "keep" and entry["openssh"]["matches"] is True
    assert entry["openssh"]["listening"] == ["all IPv4 addresses (0.0.0.0:22)",
                                             "all IPv6 addresses ([::]:22)"]
    # keep changes nothing on the host.
    assert host.nsenter(f"test -e {DROPIN}", check=False).returncode == 1
    assert listeners(host) == ["0.0.0.0:22", "[::]:22"]


def test_restrict_keeping_the_lab_address_is_applied_once(
        exposure_lab: tuple[Lab, LabTailnet], tmp_path: Path) -> None:
    lab, tailnet = exposure_lab
    host = lab_host(lab, "host2")
    openssh = {"mode": "restrict", "listen": [host.ip, "127.0.0.1"]}
    path = inventory(tailnet, tmp_path / "inventory.yaml", "host2", openssh)
    assert connect(host, "127.0.0.2") == "accepted"  # every address, before
    plan = tsops(tailnet, "plan", "-o", "json", str(path))
    (planned,) = json.loads(plan.stdout)["hosts"]
    assert [c["kind"] for c in planned["changes"]][-1] == "openssh"
    assert planned["openssh"]["matches"] is False

    code, hosts, output = bootstrap(tailnet, path)
    assert code == 0, output
    assert hosts["host2"]["outcome"] == "changed"
    assert any(done.startswith("restrict sshd to") for done in hosts["host2"]["done"])
    assert host.nsenter(f"cat {DROPIN}").stdout.splitlines()[1:] == [
        f"ListenAddress {host.ip}", "ListenAddress 127.0.0.1"]
    assert host.nsenter("/usr/sbin/sshd -t", check=False).returncode == 0
    assert listeners(host) == sorted([f"{host.ip}:22", "127.0.0.1:22"])
    assert connect(host, "127.0.0.2") == "refused"
    assert connect(host, "127.0.0.1") == "accepted"
    no_revert_left(host)

    # Nothing left to change: one probe, no change.
    code, again, output = bootstrap(tailnet, path)
    assert code == 0, output
    assert (again["host2"]["outcome"], again["host2"]["round_trips"]) == ("unchanged", 1)
    assert tsops(tailnet, "plan", "--changes-exit-code", str(path)).returncode == 0
    status = tsops(tailnet, "status", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "host2: openssh restrict: matches" in status.stdout.splitlines()
    data = json.loads(tsops(tailnet, "status", "-o", "json", str(path)).stdout)
    (entry,) = data["hosts"]
    check = next(c for c in entry["checks"] if c["name"] == "openssh")
    assert check["state"] == "ok"
    assert entry["openssh"]["matches"] is True
    assert entry["openssh"]["wanted"] == sorted([f"{host.ip}:22", "127.0.0.1:22"])


def test_a_restrict_that_cuts_tsops_off_is_reverted_by_the_host(
        exposure_lab: tuple[Lab, LabTailnet], tmp_path: Path) -> None:
    lab, tailnet = exposure_lab
    host = lab_host(lab, "host3")
    # tsops manages host3 over its lab address, which this setting leaves out.
    openssh = {"mode": "restrict", "listen": ["127.0.0.1"], "revert_after": "15s"}
    path = inventory(tailnet, tmp_path / "inventory.yaml", "host3", openssh)
    code, hosts, output = bootstrap(tailnet, path)
    assert code == 1, output
    reason = hosts["host3"]["reason"]
    assert hosts["host3"]["outcome"] == "failed"
    assert reason.startswith("OpenSSH restrict cut tsops off"), reason
    assert ("the host reverted it by itself and is reachable again: removed the tsops drop-in "
            "(there was none before), restarted ssh.service") in reason
    # Enrollment came first and stays; OpenSSH is as it was.
    assert host.nsenter(f"test -e {DROPIN}", check=False).returncode == 1
    assert listeners(host) == ["0.0.0.0:22", "[::]:22"]
    no_revert_left(host)
    with host.connection() as connection:
        assert connection.run("hostname", hide=True).stdout.strip() == "host3"
    text = tsops(tailnet, "plan", str(path))
    assert "restrict sshd to 127.0.0.1" in text.stdout
