"""Policy coverage and recorder presence on a real lab (one lab for the whole story).

An operator's policy already has a hand-written rule for the servers, without a recorder, ahead
of where tsops would put its own: Tailscale SSH takes the first match, so those sessions would
never be recorded. tsops refuses to write (bootstrap and policy apply: exit 3, the policy
untouched), status names the rule and its line; with `policy.managed_rules: first` tsops puts
its rule ahead, the coverage is clean and a session is recorded. Then the recorders' service
stops: once its device is offline Tailscale SSH runs sessions unrecorded (fail-open), and status
and verify say so with exit 3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_main_job import bootstrap
from tests.sim.recorder.bundle import allow_port_80
from tests.sim.tailscale.tailnet_hosts import recordings, wait_for_recording
from tsops.policy import hujson

# Break-glass access the operator wrote by hand: every member, root, nothing recorded.
BREAK_GLASS = ('    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], '
               '"users": ["root"]},\n')
HANG = 180  # bounds that only keep a broken run from hanging


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would."""
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, timeout=600,
                          env={**os.environ, TOKEN_VARIABLE: tailnet.token})


def with_break_glass(text: str) -> str:
    """The lab's seed policy with the hand-written rule in an `ssh` list of its own."""
    close = text.rindex("}")
    return text[:close] + '  "ssh": [\n' + BREAK_GLASS + "  ],\n" + text[close:]


def policy_posts(tailnet: LabTailnet) -> int:
    """How many times the policy file was written through the API."""
    return sum(1 for r in tailnet.control.state.requests()
               if r.method == "POST" and r.path.endswith("/acl"))


def recorder_online(tailnet: LabTailnet) -> bool:
    """Whether the control plane shows a device with tag:recorder online."""
    state = tailnet.control.state
    return any("tag:recorder" in d.tags and d.online(state.now()) for d in state.devices())


@pytest.mark.lab(hosts=2)
def test_a_shadowing_rule_is_refused_then_managed_first_is_clean_then_no_recorder_alarms(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host2"))
    path = tailnet.recorded_inventory(tmp_path, {"host1": ()}, recorder="host2", min_free_gb=0)
    state = tailnet.control.state
    state.seed_policy(with_break_glass(state.policy().text))
    seeded = state.policy()
    line = seeded.text.splitlines().index(BREAK_GLASS.rstrip("\n")) + 1

    # bootstrap enrolls and records, but does not write a policy that leaves the gap.
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 3, stderr
    assert report["policy"]["error"].startswith(
        f"refusing to write tailnet {state.tailnet} policy file: 1 coverage gap(s)")
    [gap] = report["policy"]["coverage_gaps"]
    assert (gap["rule"], gap["line"], gap["reason"], gap["certain"]) == (
        0, line, "no-recorder", True)
    assert gap["servers"] == ["host1"] and gap["intended"] == "servers-recorded"
    assert [h["outcome"] for h in report["hosts"]] == ["changed"]
    assert state.policy().text == seeded.text and policy_posts(tailnet) == 0

    # policy apply: exit 3, one line per gap naming the rule and its line, nothing written.
    refused = tsops(tailnet, "policy", "apply", str(path), "--yes", "--no-input")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    expected = (f"coverage gap: host1: ssh[0] (line {line}): src [autogroup:member] dst "
                "[tag:server] users [root] matches first for any member as root: no recorder; "
                "ahead of tsops rule 'servers-recorded'")
    assert expected in refused.stderr.splitlines()
    assert state.policy().text.encode() == seeded.text.encode()
    assert state.policy().etag == seeded.etag and policy_posts(tailnet) == 0

    # status: the policy lacks the managed rule, and the hand-written rule is a gap.
    drift = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert drift.returncode == 3, drift.stdout + drift.stderr
    status = json.loads(drift.stdout)
    coverage = {c["name"]: c for c in status["coverage"]["checks"]}
    assert coverage["coverage"]["state"] == "drift"
    assert coverage["coverage"]["actual"] == f"1 gap(s) at ssh[0] (line {line})"
    assert coverage["recorders-online"]["state"] == "ok"
    assert status["coverage"]["gaps"][0]["message"] == expected
    table = tsops(tailnet, "status", "--no-input", str(path))
    assert table.returncode == 3 and expected in table.stdout

    # The gap is real: root's session runs, and nothing records it.
    host1 = next(d for d in state.devices() if d.hostname == "host1")
    status_code, out, _ = tailnet.tailnet_ssh("host1", "root", "echo unrecorded-by-rule-0")
    assert (status_code, out) == (0, "unrecorded-by-rule-0\n")

    # managed_rules: first puts tsops's rule ahead of the operator's: clean, written once.
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["policy"]["managed_rules"] = "first"
    with path.open("w") as out_file:
        yaml.dump(document, out_file)
    applied = tsops(tailnet, "policy", "apply", str(path), "--yes", "--no-input")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "coverage gap" not in applied.stderr
    assert policy_posts(tailnet) == 1
    written = state.policy().text
    rules = hujson.loads(written)["ssh"]
    assert [r.get("recorder") for r in rules] == [["tag:recorder"], None]
    assert written.index("tsops: servers-recorded") < written.index(BREAK_GLASS.strip())
    clean = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert {c["name"]: c["state"] for c in json.loads(clean.stdout)["coverage"]["checks"]} == {
        "recorders-online": "ok", "coverage": "ok"}
    assert "unrecorded-by-rule-0" not in "".join(recordings(lab.host("host2"),
                                                            host1.node_id).values())
    status_code, out, _ = tailnet.tailnet_ssh("host1", "root", "echo recorded-by-tsops")
    assert (status_code, out) == (0, "recorded-by-tsops\n")
    wait_for_recording(lab.host("host2"), host1.node_id, "recorded-by-tsops", timeout=HANG)

    # The recorders' service stops; once its device is offline, sessions run unrecorded
    # (fail-open) although the rule enforces recording: status and verify alarm, exit 3.
    lab.host("host2").nsenter("systemctl stop tsrecorder.service")
    deadline = time.monotonic() + HANG
    while recorder_online(tailnet):
        assert time.monotonic() < deadline, "the recorder's device never went offline"
        time.sleep(1)
    status_code, out, _ = tailnet.tailnet_ssh("host1", "root", "echo fail-open")
    assert (status_code, out) == (0, "fail-open\n")
    alarmed = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert alarmed.returncode == 3, alarmed.stdout + alarmed.stderr
    checks = {c["name"]: c for c in json.loads(alarmed.stdout)["coverage"]["checks"]}
    assert checks["recorders-online"]["state"] == "drift"
    assert checks["recorders-online"]["actual"].startswith(
        "no online device with tag:recorder: Tailscale SSH runs the sessions")
    verified = tsops(tailnet, "verify", "--no-input", "--canary-timeout", "5", str(path))
    assert verified.returncode == 3, verified.stdout + verified.stderr
    assert ("no online device carries tag:recorder: Tailscale SSH runs the sessions of the "
            "rules recording to it unrecorded, even with enforceRecorder") in verified.stderr
