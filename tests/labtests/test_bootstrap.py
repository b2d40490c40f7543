"""`tsops plan` and `tsops bootstrap` on real lab hosts enrolling into the simulated tailnet."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.sim.control import ControlServer

SERVERS = {
    "host1": (),
    "host2": ("tag:db",),
    "host3": ("tag:web",),
    "host4": ("tag:db", "tag:web"),
}


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would, the API token in the environment."""
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token}
    return subprocess.run(
        [sys.executable, "-m", "tsops", *args], capture_output=True, text=True, env=env,
        check=False, timeout=600,
    )


def bootstrap_json(tailnet: LabTailnet, inventory: Path) -> dict[str, Any]:
    """Run a bootstrap that must succeed and return its JSON report by host."""
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    return {host["name"]: host for host in json.loads(result.stdout)["hosts"]}


def devices(tailnet: LabTailnet) -> dict[str, list[str]]:
    """Tags of every device the control simulator knows, by hostname."""
    return {d.hostname: sorted(d.tags) for d in tailnet.control.state.devices()}


def expected_tags() -> dict[str, list[str]]:
    return {name: sorted({"tag:server", *tags}) for name, tags in SERVERS.items()}


@pytest.mark.lab(hosts=4)
def test_bootstrap_from_scratch_then_converged(lab: Lab, tailnet: LabTailnet,
                                               tmp_path: Path) -> None:
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", SERVERS)
    plan = tsops(tailnet, "plan", "--changes-exit-code", str(inventory))
    assert plan.returncode == 3, plan.stderr
    assert "Plan: 4 of 4 host(s) to change" in plan.stdout
    assert tailnet.control.state.devices() == []

    first = bootstrap_json(tailnet, inventory)
    assert {name: host["outcome"] for name, host in first.items()} == dict.fromkeys(
        SERVERS, "changed")
    assert devices(tailnet) == expected_tags()
    assert all(d.ssh for d in tailnet.control.state.devices())
    keys = tailnet.control.state.auth_keys()
    assert len(keys) == 4
    assert all(k.uses == 1 and not k.reusable and k.revoked is not None for k in keys)
    for host in lab.hosts:
        # Nothing staged is left: no staging directory, nothing in tsops's run directory.
        assert host.nsenter("ls -d /tmp/tsops-stage.* /run/tsops/* 2>/dev/null | wc -l"
                            ).stdout.strip() == "0"
        status = json.loads(host.nsenter("tailscale status --json").stdout)
        assert status["BackendState"] == "Running"
        assert sorted(status["Self"]["Tags"]) == expected_tags()[host.name]
        prefs = json.loads(host.nsenter("tailscale debug prefs").stdout)
        assert prefs["RunSSH"] is True

    # The second run: nothing to change, one SSH round trip per host, no mutating API call.
    requests_before = len(tailnet.control.state.requests())
    second = bootstrap_json(tailnet, inventory)
    assert {name: (h["outcome"], h["round_trips"]) for name, h in second.items()} == (
        dict.fromkeys(SERVERS, ("unchanged", 1)))
    calls = tailnet.api_requests(requests_before)
    assert [(c.method, c.path) for c in calls] == [("GET", "/api/v2/tailnet/example.com/devices")]
    assert len(tailnet.control.state.auth_keys()) == 4
    again = tsops(tailnet, "plan", "--changes-exit-code", str(inventory))
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.lab(hosts=2)
def test_changed_tags_are_retagged_through_the_api(tailnet: LabTailnet, tmp_path: Path) -> None:
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {"host1": (), "host2": ()})
    bootstrap_json(tailnet, inventory)
    tailnet.inventory(inventory, {"host1": ("tag:db",), "host2": ()})
    plan = tsops(tailnet, "plan", str(inventory))
    device = next(d for d in tailnet.control.state.devices() if d.hostname == "host1")
    assert "host1:\n  + retag tag:server -> tag:server tag:db\n" in plan.stdout
    assert f"API POST /device/{device.id}/tags: tag:server tag:db" in plan.stdout
    assert "host2: no change" in plan.stdout
    keys_before = len(tailnet.control.state.auth_keys())
    result = bootstrap_json(tailnet, inventory)
    assert (result["host1"]["outcome"], result["host2"]["outcome"]) == ("changed", "unchanged")
    assert devices(tailnet) == {"host1": ["tag:db", "tag:server"], "host2": ["tag:server"]}
    # Retagging goes through the API: no new key, the same device.
    assert len(tailnet.control.state.auth_keys()) == keys_before
    assert next(d for d in tailnet.control.state.devices() if d.hostname == "host1").id == (
        device.id)


@pytest.mark.lab(hosts=1)
def test_new_login_server_moves_the_running_node_with_force_reauth(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    # `tailscale up` refuses to move a running node to another login server without
    # --force-reauth; the inventory's login server changed (same tailnet, a new address).
    (host,) = lab.hosts
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {"host1": ()})
    bootstrap_json(tailnet, inventory)
    with ControlServer(lab.gateway, 0, tailnet=tailnet.control.tailnet) as control:
        control.state.seed_policy(tailnet.control.state.policy().text)
        moved = LabTailnet(lab, control, tailnet.repo, control.state.create_api_token())
        try:
            moved.inventory(inventory, {"host1": ()})
            plan = tsops(moved, "plan", "--changes-exit-code", str(inventory))
            assert plan.returncode == 3, plan.stdout + plan.stderr
            assert (
                f"host1:\n  + move from login server {tailnet.control.url} to {control.url} "
                "(re-authenticates: --force-reauth) and enroll as host1 with tags tag:server "
                "and Tailscale SSH on\n"
            ) in plan.stdout
            result = bootstrap_json(moved, inventory)
            assert result["host1"]["outcome"] == "changed", result
            [device] = control.state.devices()
            assert (device.hostname, device.tags, device.ssh) == ("host1", ["tag:server"], True)
            status = json.loads(host.nsenter("tailscale status --json").stdout)
            assert (status["BackendState"], status["Self"]["ID"]) == ("Running", device.node_id)
            prefs = json.loads(host.nsenter("tailscale debug prefs").stdout)
            assert prefs["ControlURL"] == control.url
            [key] = control.state.auth_keys()
            assert key.uses == 1 and key.revoked is not None
            assert bootstrap_json(moved, inventory)["host1"]["outcome"] == "unchanged"
        finally:
            moved.stop()


@pytest.mark.lab(hosts=3)
def test_one_host_down_the_others_succeed_and_a_rerun_converges(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {h.name: () for h in lab.hosts})
    down = lab.host("host2")
    down.nsenter("systemctl stop ssh.service")
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", str(inventory))
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()
            if line.startswith("host")}
    assert "changed" in rows["host1"] and "changed" in rows["host3"]
    assert "failed" in rows["host2"]
    assert "host2: failed: connection refused\n" in result.stderr
    assert sorted(devices(tailnet)) == ["host1", "host3"]

    down.nsenter("systemctl start ssh.service")
    rerun = bootstrap_json(tailnet, inventory)
    assert {n: h["outcome"] for n, h in rerun.items()} == {
        "host1": "unchanged", "host2": "changed", "host3": "unchanged"}
    assert sorted(devices(tailnet)) == ["host1", "host2", "host3"]


@pytest.mark.lab(hosts=1)
def test_the_auth_key_never_shows(lab: Lab, tailnet: LabTailnet, tmp_path: Path) -> None:
    (host,) = lab.hosts
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {"host1": ()})
    # Sample every process's command line on the host while tsops runs.
    host.nsenter("nohup sh -c 'while :; do ps -ww -eo args >> /root/ps.log; sleep 0.02; done' "
                 ">/dev/null 2>&1 & echo $! > /root/sampler.pid")
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    host.nsenter("kill $(cat /root/sampler.pid)")
    (key,) = tailnet.control.state.auth_keys()
    ps_log = host.nsenter("cat /root/ps.log").stdout
    # The key is read from the staged 0600 file, by path: never in an argument.
    assert re.search(r"tailscale up --reset --force-reauth "
                     r"--auth-key=file:/tmp/tsops-stage\.\w{10}/authkey ", ps_log), ps_log[-2000:]
    assert key.secret not in ps_log
    assert key.secret not in result.stdout + result.stderr
    leftover = host.nsenter(f"grep -rl {key.secret} /run /tmp /var/tmp /root /etc "
                            "/var/lib/tailscale", check=False)
    assert leftover.stdout == ""


@pytest.mark.lab(hosts=1)
def test_pinned_version_is_installed_then_changed(lab: Lab, tailnet: LabTailnet,
                                                  tmp_path: Path) -> None:
    (host,) = lab.hosts
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {"host1": ()}, version="1.76.1")
    bootstrap_json(tailnet, inventory)
    assert host.nsenter("tailscale version").stdout.splitlines()[0] == "1.76.1"
    node = tailnet.control.state.devices()[0].node_id
    tailnet.inventory(inventory, {"host1": ()}, version="1.78.3")
    plan = tsops(tailnet, "plan", str(inventory))
    assert "  + change 1.76.1 to tailscale 1.78.3 (apt)\n" in plan.stdout
    assert bootstrap_json(tailnet, inventory)["host1"]["done"] == [
        "change 1.76.1 to tailscale 1.78.3 (apt)"]
    assert host.nsenter("tailscale version").stdout.splitlines()[0] == "1.78.3"
    assert [d.node_id for d in tailnet.control.state.devices()] == [node]


@pytest.mark.lab(hosts=1)
def test_tarball_is_verified_before_anything_is_installed(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    (host,) = lab.hosts
    tarball = tailnet.repo.tree.tarball("1.78.3")
    good = tarball.with_name(tarball.name + ".sha256").read_text().split()[0]
    inventory = tmp_path / "inventory.yaml"
    tailnet.inventory(inventory, {"host1": ()}, install={
        "method": "tarball", "tarball": {"url": tailnet.repo.tarball_url("1.78.3"),
                                         "sha256": "0" * 63 + "1"}})
    failed = tsops(tailnet, "bootstrap", "--yes", "--no-input", str(inventory))
    assert failed.returncode == 1
    assert "host1: failed: install tailscale 1.78.3 (tarball) failed (exit 3): the tarball " \
        "does not match its sha256: nothing installed" in failed.stderr
    assert host.nsenter("test -e /usr/bin/tailscale", check=False).returncode == 1

    # A local file is checked on this machine first, then uploaded and checked again there.
    tailnet.inventory(inventory, {"host1": ()}, install={
        "method": "tarball", "tarball": {"path": str(tarball), "sha256": good}})
    result = bootstrap_json(tailnet, inventory)
    assert result["host1"]["outcome"] == "changed"
    assert host.nsenter("tailscale version").stdout.splitlines()[0] == "1.78.3"
    assert host.nsenter("systemctl is-active tailscaled").stdout.strip() == "active"
    assert host.nsenter("ls /run | grep -c '^tsops-.*tgz$'", check=False).stdout.strip() == "0"


@pytest.mark.lab(hosts=3)
def test_ctrl_c_mid_step_exits_130_at_once_and_a_rerun_finishes(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    for host in lab.hosts:
        host.nsenter("echo 'DPkg::Pre-Invoke {\"touch /run/dpkg-started; sleep 3\";};' "
                     "> /etc/apt/apt.conf.d/99slow")
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {h.name: () for h in lab.hosts})
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token}
    running = subprocess.Popen(
        [sys.executable, "-m", "tsops", "bootstrap", "--yes", "--no-input", "--concurrency", "1",
         str(inventory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    first = lab.host("host1")
    deadline = time.monotonic() + 60
    while first.nsenter("test -e /run/dpkg-started", check=False).returncode != 0:
        assert time.monotonic() < deadline and running.poll() is None
        time.sleep(0.1)
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=120)  # a bound that only catches a hang
    assert running.returncode == 130
    assert stderr.splitlines() == ["interrupted"]  # one line, whatever was running
    # Nothing started on the hosts not yet begun.
    for name in ("host2", "host3"):
        assert lab.host(name).nsenter("test -e /run/dpkg-started", check=False).returncode == 1
    # The step cut off on host1 is safe to run again: once whatever it left running on host1
    # is done, a rerun finishes every host.
    deadline = time.monotonic() + 120
    while first.nsenter("cat /proc/[0-9]*/comm | grep -qxE 'apt-get|apt|dpkg'",
                        check=False).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    rerun = bootstrap_json(tailnet, inventory)
    assert {n: h["outcome"] for n, h in rerun.items()} == dict.fromkeys(
        ("host1", "host2", "host3"), "changed")
    assert sorted(devices(tailnet)) == ["host1", "host2", "host3"]
