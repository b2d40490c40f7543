"""Closing the OpenSSH door: restrict, then off, with tsops managing over Tailscale SSH.

The whole of issue "every path recorded": a server first reached over OpenSSH is enrolled, the
policy lets tsops's own identity in over Tailscale SSH (recorded and enforced like everyone
else), and only then is sshd restricted to loopback, then turned off. From then on the lab
address answers no OpenSSH at all; tsops still manages the server, one round trip per host, and
each of its commands is a recorded session.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab, LabHost
from tests.lab.tailnet import OPERATOR_LOGIN, LabTailnet
from tests.labtests.test_tailnet_management import (
    PROBE_LINE,
    RECORDER,
    casts,
    tsops,
    wait_for_sessions,
    with_via,
)
from tests.sim.recorder.bundle import allow_port_80

SERVERS = ("host1", "host2")


def openssh_answers(host: LabHost) -> bool:
    """Whether anything accepts a TCP connection on the host's lab address, port 22."""
    try:
        with socket.create_connection((host.ip, 22), timeout=10):
            return True
    except ConnectionRefusedError:
        return False


def set_openssh(path: Path, setting: dict[str, object]) -> None:
    """Give the inventory's servers this `openssh` setting."""
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["servers"]["openssh"] = setting
    with path.open("w") as out:
        yaml.dump(document, out)


@pytest.mark.lab(hosts=3)
def test_openssh_restricted_then_off_while_tsops_manages_over_tailscale_ssh(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host(RECORDER))
    for name in SERVERS:
        # The lab pins sshd to the lab address in a file of its own, which a drop-in cannot
        # take away; empty it in place (sshd keeps its socket until restarted). tsops's own
        # drop-in is then the only ListenAddress, as on a stock Debian server.
        (lab.host(name).workdir / "sshd_listen.conf").write_text("")
    base = tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ("tag:db",)},
                                      min_free_gb=1)
    path = with_via(base, tmp_path / "inventory.yaml", "tailnet-once-enrolled")
    set_openssh(path, {"mode": "restrict", "listen": ["127.0.0.1"], "revert_after": "2m"})
    assert tsops(tailnet, "check", str(path)).returncode == 0

    # First run: enrolled over OpenSSH, the policy written, and only then sshd restricted to
    # loopback (the lab address not listed), confirmed over Tailscale SSH before disarming.
    first = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    hosts = {h["name"]: h for h in json.loads(first.stdout)["hosts"]}
    for name in SERVERS:
        assert hosts[name]["outcome"] == "changed"
        assert any("OpenSSH" in step or "openssh" in step for step in hosts[name]["done"]), hosts
        server = lab.host(name)
        assert not openssh_answers(server)
        assert "127.0.0.1:22" in server.nsenter("ss -Hltn").stdout
        assert server.nsenter("systemctl list-timers --all --no-legend 'tsops-openssh-*'"
                              ).stdout.strip() == ""  # disarmed

    # Tailscale SSH is the way in, and it is recorded.
    before = casts(lab, tailnet)
    code, out, _ = tailnet.tailnet_ssh("host1", "root", "echo still-here")
    assert (code, out) == (0, "still-here\n")
    sessions = wait_for_sessions(lab, tailnet, before, {"host1": 1, "host2": 0})
    assert sessions["host1"][0]["command"] == "echo still-here"

    # Then off: sshd stopped and disabled, over Tailscale SSH, confirmed over it again.
    set_openssh(path, {"mode": "off", "revert_after": "2m"})
    off = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert off.returncode == 0, off.stdout + off.stderr
    for name in SERVERS:
        server = lab.host(name)
        assert not openssh_answers(server)
        state = server.nsenter("systemctl is-active ssh.service; systemctl is-enabled "
                               "ssh.service", check=False).stdout.split()
        assert state == ["inactive", "disabled"], state
        assert ":22 " not in server.nsenter("ss -Hltn").stdout.replace(
            f"{tailnet.tailnet_address(name)}:22 ", "")  # only Tailscale SSH holds port 22

    # A rerun of bootstrap, plan and status: over Tailscale SSH only, one round trip each,
    # every one of them a recorded session with tsops's command in its header.
    before = casts(lab, tailnet)
    again = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert {h["name"]: (h["outcome"], h["round_trips"]) for h in report["hosts"]} == {
        "host1": ("unchanged", 1), "host2": ("unchanged", 1)}
    assert report["policy"]["changed"] is False
    planned = tsops(tailnet, "plan", "--no-input", "--changes-exit-code", "-o", "json",
                    str(path))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    status = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert {h["name"]: (h["state"], h["round_trips"]) for h in report["hosts"]
            if h["name"] in SERVERS} == {"host1": ("ok", 1), "host2": ("ok", 1)}
    sessions = wait_for_sessions(lab, tailnet, before, {"host1": 3, "host2": 3})
    for name in SERVERS:
        assert len(sessions[name]) == 3, sessions
        for header in sessions[name]:
            assert header["srcNodeUser"] == OPERATOR_LOGIN and header["sshUser"] == "root"
            assert header["command"].startswith("sh -c ") and PROBE_LINE in header["command"]
