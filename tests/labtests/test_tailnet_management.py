"""tsops manages servers over Tailscale SSH once they are enrolled, and those sessions are recorded.

`connection.via: tailnet-once-enrolled`: the first bootstrap reaches the servers over OpenSSH
(they are not tailnet nodes yet); every later run reaches them at their tailnet address through
Tailscale SSH, as the control machine's tailnet identity, under the managed rule that records
and enforces. The proof is on the recorder: each of tsops's commands on a server is one
recorded session whose header names the operator's node and the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.lab.tailnet import OPERATOR_LOGIN, TOKEN_VARIABLE, LabTailnet
from tests.sim.recorder.bundle import allow_port_80
from tests.sim.tailscale.build import VERSIONS
from tests.sim.tailscale.tailnet_hosts import recordings

SERVERS = ("host1", "host2")
RECORDER = "host3"
DESTINATION = "/var/lib/tsrecorder/recordings"
PROBE_LINE = "section tailscale_version"  # a line of the servers' facts probe


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would (no prompts)."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", *args], capture_output=True, text=True, check=False,
        timeout=600, env={**os.environ, TOKEN_VARIABLE: tailnet.token},
    )


def with_via(source: Path, target: Path, via: str) -> Path:
    """A copy of the inventory at `source` that manages its servers `via` this path."""
    yaml = YAML()
    document = yaml.load(source.read_text())
    document["connection"]["via"] = via
    document["connection"]["tailnet_identity"] = OPERATOR_LOGIN
    with target.open("w") as out:
        yaml.dump(document, out)
    return target


def casts(lab: Lab, tailnet: LabTailnet) -> dict[str, dict[str, str]]:
    """Server name -> its recordings on the recorder (file name -> text)."""
    nodes = {d.hostname: d.node_id for d in tailnet.control.state.devices()}
    return {name: recordings(lab.host(RECORDER), nodes[name], DESTINATION) for name in SERVERS}


def new_sessions(before: dict[str, dict[str, str]],
                 after: dict[str, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """The headers of the recordings made between two readings, per server."""
    return {name: [json.loads(text.splitlines()[0]) for file, text in sorted(after[name].items())
                   if file not in before[name]] for name in SERVERS}


def wait_for_sessions(lab: Lab, tailnet: LabTailnet, before: dict[str, dict[str, str]],
                      counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The new recordings once every server has `counts` of them, complete (the SSH server
    finishes an upload after the client got its exit status, so they can trail the run)."""
    import time

    deadline = time.monotonic() + 60  # a hang guard, not a speed check
    while True:
        after = casts(lab, tailnet)
        complete = all(text.endswith("\n") for files in after.values()
                       for text in files.values())
        found = new_sessions(before, after)
        if complete and {n: len(found[n]) for n in SERVERS} == counts:
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.lab(hosts=3)
def test_management_moves_to_tailscale_ssh_once_enrolled_and_is_recorded(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host(RECORDER))
    base = tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ("tag:db",)},
                                      min_free_gb=1)
    path = with_via(base, tmp_path / "tailnet.yaml", "tailnet-once-enrolled")
    openssh = with_via(base, tmp_path / "openssh.yaml", "openssh")
    assert tsops(tailnet, "check", str(path)).returncode == 0

    # First contact: nothing is enrolled, so OpenSSH; nothing of it is recorded.
    first = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert first.returncode == 0, first.stderr
    assert {h["name"]: h["outcome"] for h in json.loads(first.stdout)["hosts"]} == {
        "host1": "changed", "host2": "changed"}
    assert casts(lab, tailnet) == {"host1": {}, "host2": {}}

    # The same converged servers over OpenSSH: the round trips to match.
    over_openssh = tsops(tailnet, "status", "--no-input", "-o", "json", str(openssh))
    assert over_openssh.returncode == 0, over_openssh.stdout + over_openssh.stderr
    status_trips = {h["name"]: h["round_trips"] for h in json.loads(over_openssh.stdout)["hosts"]
                    if h["name"] in SERVERS}
    assert status_trips == {"host1": 1, "host2": 1}
    assert casts(lab, tailnet) == {"host1": {}, "host2": {}}

    # Enrolled and online: bootstrap again, over Tailscale SSH; it changes nothing.
    before = casts(lab, tailnet)
    again = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert {h["name"]: (h["outcome"], h["round_trips"]) for h in report["hosts"]} == {
        "host1": ("unchanged", 1), "host2": ("unchanged", 1)}
    assert report["policy"]["changed"] is False
    sessions = wait_for_sessions(lab, tailnet, before, {"host1": 1, "host2": 1})
    operator = tailnet.operator
    for name in SERVERS:
        assert len(sessions[name]) == 1, sessions
        header = sessions[name][0]
        assert header["srcNodeUser"] == OPERATOR_LOGIN, header
        assert header["srcNodeID"] == operator.node_id
        assert header["sshUser"] == "root" and header["localUser"] == "root"
        assert header["command"].startswith("sh -c ") and PROBE_LINE in header["command"]

    # plan: one probe per server, each a recorded Tailscale SSH session.
    before = casts(lab, tailnet)
    planned = tsops(tailnet, "plan", "--no-input", "-o", "json", str(path))
    assert planned.returncode == 0, planned.stderr
    assert all(not h["changes"] for h in json.loads(planned.stdout)["hosts"])
    sessions = wait_for_sessions(lab, tailnet, before, {"host1": 1, "host2": 1})
    assert {n: len(s) for n, s in sessions.items()} == {"host1": 1, "host2": 1}

    # status: as many round trips per server as over OpenSSH, each one recorded.
    before = casts(lab, tailnet)
    over_tailnet = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert over_tailnet.returncode == 0, over_tailnet.stdout + over_tailnet.stderr
    status = json.loads(over_tailnet.stdout)
    assert {h["name"]: h["round_trips"] for h in status["hosts"]
            if h["name"] in SERVERS} == status_trips
    assert {h["name"]: h["state"] for h in status["hosts"]} == {
        "host1": "ok", "host2": "ok", RECORDER: "ok"}
    sessions = wait_for_sessions(lab, tailnet, before, status_trips)
    assert {n: len(s) for n, s in sessions.items()} == status_trips
    assert all(h["srcNodeUser"] == OPERATOR_LOGIN for s in sessions.values() for h in s)


@pytest.mark.lab(hosts=3)
def test_via_tailnet_refuses_a_server_that_is_not_enrolled(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    base = tailnet.recorded_inventory(tmp_path, {"host1": ()})
    path = with_via(base, tmp_path / "tailnet.yaml", "tailnet")
    result = tsops(tailnet, "plan", "--no-input", "-o", "json", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    host = next(h for h in json.loads(result.stdout)["hosts"] if h["name"] == "host1")
    assert "via tailnet" in host["problem"] and "device list" in host["problem"]
    # Nothing was done over OpenSSH behind the operator's back: tailscale is not installed.
    assert lab.host("host1").nsenter("command -v tailscale", check=False).returncode != 0


@pytest.mark.lab(hosts=3)
def test_a_tailscale_upgrade_over_tailscale_ssh(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host(RECORDER))
    base = tailnet.recorded_inventory(tmp_path, {"host1": ()}, min_free_gb=1)
    path = with_via(base, tmp_path / "tailnet.yaml", "tailnet-once-enrolled")
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["tailscale"]["install"]["version"] = VERSIONS[0]
    with path.open("w") as out:
        yaml.dump(document, out)
    first = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert first.returncode == 0, first.stderr

    # The upgrade restarts tailscaled, which serves tsops's own session: it runs in a unit of
    # its own, and tsops waits for it across the restart.
    document["tailscale"]["install"]["version"] = VERSIONS[-1]
    with path.open("w") as out:
        yaml.dump(document, out)
    upgrade = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert [h["outcome"] for h in json.loads(upgrade.stdout)["hosts"]] == ["changed"]
    version = lab.host("host1").nsenter("tailscale version").stdout.splitlines()[0]
    assert version == VERSIONS[-1]
    node = next(d.node_id for d in tailnet.control.state.devices() if d.hostname == "host1")
    commands = [json.loads(text.splitlines()[0]).get("command", "") for text in
                recordings(lab.host(RECORDER), node, DESTINATION).values()]
    assert any("systemd-run" in c and f"tailscale={VERSIONS[-1]}" in c for c in commands)
    again = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert again.returncode == 0, again.stderr
    assert [h["outcome"] for h in json.loads(again.stdout)["hosts"]] == ["unchanged"]


@pytest.mark.lab(hosts=3)
def test_add_server_makes_first_contact_over_openssh_then_the_tailnet_takes_over(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host(RECORDER))
    base = tailnet.recorded_inventory(tmp_path, {"host1": ()}, min_free_gb=1)
    path = with_via(base, tmp_path / "tailnet.yaml", "tailnet-once-enrolled")
    first = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert first.returncode == 0, first.stderr

    added = tsops(tailnet, "add-server", "--yes", "--no-input", "--tag", "tag:web",
                  str(path), "host2")
    assert added.returncode == 0, added.stdout + added.stderr
    assert any(line.startswith("host2: recorded") for line in added.stdout.splitlines())
    # host2 was not a tailnet node: enrolled over OpenSSH, so its only recording is the canary.
    nodes = {d.hostname: d.node_id for d in tailnet.control.state.devices()}
    host2 = [json.loads(t.splitlines()[0]).get("command", "")
             for t in recordings(lab.host(RECORDER), nodes["host2"], DESTINATION).values()]
    assert len(host2) == 1 and host2[0].startswith("echo tsops-canary-")

    # From now on both servers are managed over Tailscale SSH, one recorded session each.
    before = casts(lab, tailnet)
    status = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    assert {h["name"]: h["round_trips"] for h in json.loads(status.stdout)["hosts"]
            if h["name"] in SERVERS} == {"host1": 1, "host2": 1}
    sessions = wait_for_sessions(lab, tailnet, before, {"host1": 1, "host2": 1})
    for name in SERVERS:
        (header,) = sessions[name]
        assert header["srcNodeUser"] == OPERATOR_LOGIN and PROBE_LINE in header["command"]


@pytest.mark.lab(hosts=3)
def test_remove_server_uninstalls_over_tailscale_ssh(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    import time

    allow_port_80(lab.host(RECORDER))
    base = tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ()}, min_free_gb=1)
    path = with_via(base, tmp_path / "tailnet.yaml", "tailnet-once-enrolled")
    first = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert first.returncode == 0, first.stderr
    node = next(d.node_id for d in tailnet.control.state.devices() if d.hostname == "host2")

    # The logout ends Tailscale SSH under tsops's own session: it runs in a delayed unit, and
    # tsops sees the node leave the tailnet.
    gone = tsops(tailnet, "remove-server", "--uninstall", "--yes", "--no-input", str(path),
                 "host2")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "the node left the tailnet" in gone.stdout
    assert "host2:" not in path.read_text()
    assert not any(d.hostname == "host2" for d in tailnet.control.state.devices())
    commands = [json.loads(text.splitlines()[0]).get("command", "") for text in
                recordings(lab.host(RECORDER), node, DESTINATION).values()]
    assert any("systemd-run" in c and "tailscale logout" in c for c in commands), commands
    # The rest of the uninstall goes on in its unit: the package goes away.
    deadline = time.monotonic() + 120  # a hang guard, not a speed check
    while True:
        package = lab.host("host2").nsenter("dpkg-query -W -f='${Status}' tailscale",
                                            check=False).stdout
        if package == "deinstall ok config-files" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert package == "deinstall ok config-files"
