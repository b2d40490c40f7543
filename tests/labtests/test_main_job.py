"""The main job end to end: recorder, its health, servers, then the policy; sessions recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.sim.recorder.bundle import allow_port_80
from tests.sim.recorder.cast import SourceNode, shell_output
from tests.sim.recorder.session import Outcome, run_session

ALICE = SourceNode("alice-laptop.example.ts.net", "nALICE1CNTRL", login="alice@example.com",
                   user_id=1)


def inventory(tailnet: LabTailnet, tmp_path: Path) -> Path:
    """host1, host2 servers; host3 the recorder writing to a local directory; one ssh rule."""
    return tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ("tag:db",)})


def bootstrap(tailnet: LabTailnet, path: Path) -> tuple[int, dict[str, Any], str]:
    """Run bootstrap; return its exit code, JSON report and standard error."""
    result = subprocess.run(
        [sys.executable, "-m", "tsops", "bootstrap", "--yes", "--no-input", "-o", "json",
         str(path)], capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, TOKEN_VARIABLE: tailnet.token},
    )
    return result.returncode, json.loads(result.stdout), result.stderr


def policy_writes(tailnet: LabTailnet) -> int:
    """How many times the policy file was written through the API."""
    return sum(1 for r in tailnet.control.state.requests()
               if r.method == "POST" and r.path.endswith("/acl"))


@pytest.mark.lab(hosts=3)
def test_bootstrap_records_every_session_and_converges(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host3"))
    path = inventory(tailnet, tmp_path)
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    assert report["policy"]["changed"] is True
    policy = tailnet.control.state.policy().text
    assert '"recorder": ["tag:recorder"]' in policy and '"enforceRecorder": true' in policy
    assert "// tsops: servers-recorded" in policy
    assert policy.startswith("// The lab tailnet's policy file")  # the operator's comment kept

    session = run_session(tailnet.control, "host1", ALICE, "root",
                          shell_output("root@host1:~# ", [("id", "uid=0(root)\n")]))
    assert session.outcome is Outcome.RECORDED
    node = next(d.node_id for d in tailnet.control.state.devices() if d.hostname == "host1")
    found = lab.host("host3").nsenter(
        f"ls /var/lib/tsrecorder/recordings/{node}/").stdout.split()
    assert len(found) == 1 and found[0].endswith(".cast")

    writes = policy_writes(tailnet)
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    assert report["policy"]["changed"] is False
    assert policy_writes(tailnet) == writes
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {
        "host1": "unchanged", "host2": "unchanged"}


@pytest.mark.lab(hosts=3)
def test_an_unhealthy_recorder_blocks_enforcement(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    # Without the lab's port-80 allowance the recorder's service user cannot listen: it fails.
    path = inventory(tailnet, tmp_path)
    before = tailnet.control.state.policy().text
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 1, stderr
    assert "refus" in report["policy"]["error"] and "tag:recorder" in report["policy"]["error"]
    assert tailnet.control.state.policy().text == before
    assert policy_writes(tailnet) == 0
    # The servers were still enrolled: the refusal touches only the policy step.
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {
        "host1": "changed", "host2": "changed"}
