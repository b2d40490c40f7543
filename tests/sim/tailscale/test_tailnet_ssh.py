"""Tailscale SSH on lab hosts, from the control machine, the way tsops connects (lab tests).

The control machine is a node of the lab's tailnet (`tailnet.operator`); enrolled hosts answer
Tailscale SSH on their tailnet address; sessions are recorded by the simulated tsrecorder.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import lab_unavailable
from tests.lab.errors import LabUnavailable
from tests.lab.inspect import leftovers
from tests.lab.lab import Lab, LabHost
from tests.lab.tailnet import LabTailnet, TailnetSSHDenied, lab_tailnet, tailnet_ssh_to
from tests.sim.recorder.tailssh import KILLED_STATUS, REJECT_MESSAGE, TERMINATE_MESSAGE
from tests.sim.tailscale.tailnet_hosts import (
    enroll,
    recordings,
    start_recorder,
    wait_for_recording,
)

OWNERS = '"tagOwners": {"tag:server": [], "tag:db": [], "tag:recorder": []}'
RECORDED = """{
  %s,
  "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"]}],
  "ssh": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"],
     "users": ["root", "autogroup:nonroot"], "recorder": ["tag:recorder"],
     "enforceRecorder": true},
  ],
}""".replace("%s", OWNERS)
OTHER_NODES_ONLY = RECORDED.replace('"dst": ["tag:server"]', '"dst": ["tag:db"]')
ROOT_ONLY = RECORDED.replace('"users": ["root", "autogroup:nonroot"]', '"users": ["root"]')
CHECK = RECORDED.replace('"accept", "src": ["autogroup:member"], "dst": ["tag:server"]',
                         '"check", "src": ["autogroup:member"], "dst": ["tag:server"]')
UNRECORDED = """{
  %s,
  "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"],
           "users": ["root"]}],
}""".replace("%s", OWNERS)


@pytest.fixture
def tailnet(lab: Lab) -> Iterator[LabTailnet]:
    """The simulated tailnet around the lab."""
    with lab_tailnet(lab) as running:
        yield running


@pytest.mark.lab(hosts=2)
def test_recorded_session_from_the_control_machine(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    server, recorder_host = lab.hosts
    device = enroll(tailnet, server)
    start_recorder(tailnet, recorder_host, tmp_path)
    tailnet.control.seed_policy(RECORDED)
    address = tailnet.tailnet_address("host1")
    assert address == device.addresses[0]
    assert ipaddress.ip_address(address) in lab.tailnet_network

    # An address of the lab's tailnet prefix that is no node's: no identity, no session.
    stranger = str(lab.tailnet_network[250])
    subprocess.run(["ip", "addr", "add", f"{stranger}/32", "dev", lab.bridge], check=True)
    try:
        with pytest.raises(TailnetSSHDenied) as unknown:
            tailnet_ssh_to(address, "root", "true", source=stranger)
    finally:
        subprocess.run(["ip", "addr", "del", f"{stranger}/32", "dev", lab.bridge], check=True)
    assert unknown.value.banner == "tailscale: failed to get connection info\n"
    # Nor from the lab network: Tailscale SSH takes tailnet addresses only.
    with pytest.raises(TailnetSSHDenied):
        tailnet_ssh_to(address, "root", "true", source=lab.gateway)

    # The control machine joins the tailnet at its first connection (as tsops makes it).
    assert [d.hostname for d in tailnet.control.devices()] == ["host1", "recorder"]
    nonce = secrets.token_hex(8)
    command = f"echo tsops-canary-{nonce}; echo to-stderr >&2; exit 3"
    status, out, err = tailnet_ssh_to(address, "root", command)
    assert (status, out, err) == (3, f"tsops-canary-{nonce}\n", "to-stderr\n")

    operator = tailnet.operator
    assert [d.user for d in tailnet.control.devices() if d.node_id == operator.node_id] == [
        "ops@example.com"]
    assert operator.address == lab.operator_address
    cast = wait_for_recording(recorder_host, device.node_id, f"tsops-canary-{nonce}")
    header = json.loads(cast.splitlines()[0])
    assert header["srcNode"] == operator.name
    assert header["srcNodeID"] == operator.node_id
    assert header["srcNodeUser"] == "ops@example.com" == operator.login
    assert header["srcNodeUserID"] == operator.user_id
    assert (header["sshUser"], header["localUser"], header["command"]) == ("root", "root",
                                                                           command)
    assert (header["version"], header["width"], header["height"]) == (2, 0, 0)
    events = [json.loads(line) for line in cast.splitlines()[1:]]
    assert all(kind == "o" for _, kind, _ in events)
    assert "".join(text for _, _, text in events) == f"tsops-canary-{nonce}\n"  # no stderr

    # The session runs as the local user, in their home, from the operator's tailnet address.
    server.nsenter("useradd --create-home --shell /bin/bash alice")
    status, out, _ = tailnet.tailnet_ssh("host1", "alice", "id -un; pwd; echo $SSH_CLIENT")
    assert status == 0
    assert out.split()[:3] == ["alice", "/home/alice", operator.address]

    # With a terminal: one stream, all of it recorded, the terminal's size in the header.
    marker = f"pty-{nonce}"
    status, out, err = tailnet_ssh_to(address, "root", f"echo {marker}; tty; stty size; "
                                      "echo $TERM; echo oops >&2", pty=(100, 30))
    lines = out.split("\r\n")
    assert (status, err) == (0, "")
    assert lines[0] == marker and lines[1].startswith("/dev/pts/")
    assert lines[2:5] == ["30 100", "xterm", "oops"]
    cast = wait_for_recording(recorder_host, device.node_id, marker)
    header = json.loads(cast.splitlines()[0])
    assert (header["width"], header["height"], header["env"]) == (100, 30, {"TERM": "xterm"})
    assert "oops" in cast

    # Management SSH (what tsops uses) is OpenSSH on the lab address, unchanged.
    with server.connection() as conn:
        assert conn.run("hostname", hide=True).stdout.strip() == "host1"
    assert banner_of(server.ip).startswith(b"SSH-2.0-OpenSSH")
    assert banner_of(address) == b"SSH-2.0-Tailscale\r\n"


@pytest.mark.lab(hosts=2)
def test_refusals(lab: Lab, tailnet: LabTailnet, tmp_path: Path) -> None:
    server, recorder_host = lab.hosts
    device = enroll(tailnet, server)
    start_recorder(tailnet, recorder_host, tmp_path)

    tailnet.control.seed_policy(OTHER_NODES_ONLY)
    with pytest.raises(TailnetSSHDenied) as denied:
        tailnet.tailnet_ssh("host1", "root", "true")
    assert denied.value.banner == (
        "tailscale: tailnet policy does not permit you to SSH to this node\n"
    )
    tailnet.control.seed_policy(ROOT_ONLY)
    with pytest.raises(TailnetSSHDenied) as wrong_user:
        tailnet.tailnet_ssh("host1", "nobody", "true")
    assert "does not permit you to SSH as user 'nobody'" in wrong_user.value.banner
    tailnet.control.seed_policy(CHECK)
    with pytest.raises(TailnetSSHDenied) as check:
        tailnet.tailnet_ssh("host1", "root", "true")
    assert "check mode" in check.value.banner

    # enforceRecorder, the recorder online but its port unreachable from the server (a route
    # that refuses): refused, the command never runs.
    tailnet.control.seed_policy(RECORDED)
    assert recorder_online(tailnet)
    status, out, err = with_recorder_refused(
        server, recorder_host, lambda: tailnet.tailnet_ssh("host1", "root", "touch /root/ran"))
    assert (status, out, err) == (1, f"{REJECT_MESSAGE}\r\n", "")
    assert server.nsenter("test -e /root/ran", check=False).returncode == 1
    assert recordings(recorder_host, device.node_id) == {}
    # Not enforced: the same session runs, unrecorded (fail open).
    tailnet.control.seed_policy(RECORDED.replace('"enforceRecorder": true',
                                                 '"enforceRecorder": false'))
    assert with_recorder_refused(
        server, recorder_host, lambda: tailnet.tailnet_ssh("host1", "root", "echo open")) == (
        0, "open\n", "")
    assert recordings(recorder_host, device.node_id) == {}

    # No node with the recorder tag online at all: the control plane sends no recorder, and
    # the session runs unrecorded even under enforceRecorder (fail-open, reference section 6).
    tailnet.control.seed_policy(RECORDED)
    recorder_host.nsenter("systemctl stop tsrecorder")
    tailnet.control.state.advance_clock(60)  # past the recorder's last heartbeat
    assert not recorder_online(tailnet)
    status, out, err = tailnet.tailnet_ssh("host1", "root", "touch /root/ran; echo unrecorded")
    assert (status, out, err) == (0, "unrecorded\n", "")
    assert server.nsenter("test -e /root/ran", check=False).returncode == 0
    assert recordings(recorder_host, device.node_id) == {}

    # The upload failing mid-way ends an enforced session.
    recorder_host.nsenter("systemctl start tsrecorder")
    tailnet.control.seed_policy(RECORDED)
    wait_until_recorded(tailnet)
    stopper = threading.Timer(1.5, recorder_host.nsenter, ["systemctl kill -s KILL tsrecorder"])
    stopper.start()
    status, out, err = tailnet.tailnet_ssh("host1", "root", "echo before; sleep 6; echo after")
    stopper.join()
    assert (status, out) == (KILLED_STATUS, "before\n")
    assert err == f"\r\n\r\n{TERMINATE_MESSAGE}\r\n\r\n"

    # Without a recorder rule the session runs unrecorded.
    tailnet.control.seed_policy(UNRECORDED)
    assert tailnet.tailnet_ssh("host1", "root", "echo plain") == (0, "plain\n", "")


@pytest.mark.lab(hosts=1)
def test_nothing_answers_unless_running_with_ssh(lab: Lab, tailnet: LabTailnet) -> None:
    [server] = lab.hosts
    enroll(tailnet, server)
    tailnet.control.seed_policy(UNRECORDED)
    address = tailnet.tailnet_address("host1")
    assert tailnet.tailnet_ssh("host1", "root", "echo up") == (0, "up\n", "")

    server.nsenter("tailscale set --ssh=false")
    with pytest.raises(ConnectionRefusedError):
        tailnet_ssh_to(address, "root", "true", timeout=5)
    server.nsenter("tailscale set --ssh=true")
    assert tailnet.tailnet_ssh("host1", "root", "echo again") == (0, "again\n", "")

    for stop, start in (("tailscale down", "tailscale up --ssh --advertise-tags=tag:server "
                         f"--login-server={tailnet.control.url}"),
                        ("systemctl stop tailscaled", "systemctl start tailscaled")):
        server.nsenter(stop)
        assert address not in server.nsenter("ip -4 -o addr show dev eth0").stdout
        with pytest.raises(OSError):
            tailnet_ssh_to(address, "root", "true", timeout=5)
        server.nsenter(start)
        wait_for_ssh(address)
        assert tailnet.tailnet_ssh("host1", "root", "echo back") == (0, "back\n", "")

    server.nsenter("tailscale logout")
    with pytest.raises(OSError):
        tailnet_ssh_to(address, "root", "true", timeout=5)


@pytest.mark.lab
def test_labs_side_by_side_reach_their_own_nodes_and_leave_nothing() -> None:
    """Two labs at once: each its own tailnet prefix and operator; nothing left after."""
    slots = []
    try:
        with Lab(host_count=1) as first, Lab(host_count=1) as second:
            slots = [first.slot, second.slot]
            with lab_tailnet(first) as one, lab_tailnet(second) as two:
                assert first.tailnet_network != second.tailnet_network
                for tailnet in (one, two):
                    enroll(tailnet, tailnet.lab.hosts[0])
                    tailnet.control.seed_policy(UNRECORDED)
                    status, out, _ = tailnet.tailnet_ssh("host1", "root", "echo $SSH_CLIENT")
                    assert (status, out.split()[0]) == (0, tailnet.operator.address)
    except LabUnavailable as error:
        lab_unavailable(error)
    for slot in slots:
        assert leftovers(slot) == []
        routes = subprocess.run(["ip", "-4", "route", "show", "root", "100.64.0.0/10"],
                                capture_output=True, text=True, check=True).stdout
        assert f"100.64.{slot}." not in routes


def banner_of(address: str) -> bytes:
    """The SSH version line a server at address:22 sends."""
    with socket.create_connection((address, 22), timeout=5) as sock:
        return sock.recv(256).split(b"\n")[0] + b"\n"


def wait_for_ssh(address: str, timeout: float = 20) -> None:
    """Wait until Tailscale SSH answers at address:22."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            banner_of(address)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def recorder_online(tailnet: LabTailnet) -> bool:
    """Whether the control plane shows a device with tag:recorder online."""
    state = tailnet.control.state
    return any("tag:recorder" in d.tags and d.online(state.now()) for d in state.devices())


def with_recorder_refused(server: LabHost, recorder_host: LabHost,
                          session: Callable[[], tuple[int, str, str]]) -> tuple[int, str, str]:
    """Run `session` while the server's route to the recorder's address refuses (the recorder
    stays online: it reaches the control plane through the gateway)."""
    route = f"ip route add prohibit {recorder_host.ip}/32"
    server.nsenter(route)
    try:
        return session()
    finally:
        server.nsenter(route.replace(" add ", " del "))


def wait_until_recorded(tailnet: LabTailnet, timeout: float = 20) -> None:
    """Wait until the recorder is online and accepts (an enforced session goes through; with
    no recorder online it would go through unrecorded, so that is waited for first)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = -1
        if recorder_online(tailnet):
            status, _, _ = tailnet.tailnet_ssh("host1", "root", "true")
        if status == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the recorder never came back")
        time.sleep(0.5)
