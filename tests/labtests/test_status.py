"""`tsops status` on a converged lab, then with drift made by hand, then with a host down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.lab import Lab
from tests.lab.s3 import S3Server, free_port
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_main_job import bootstrap
from tests.labtests.test_recorder import (  # noqa: F401 (executable is a fixture)
    BUCKET,
    executable,
    s3_storage,
    write_inventory,
)
from tests.labtests.test_recorder import bootstrap as recorder_bootstrap
from tests.labtests.test_recorder import tsops as recorder_tsops
from tests.sim.recorder.bundle import allow_port_80


def status(tailnet: LabTailnet, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `tsops status` as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", "status", "--no-input", *args, str(path)],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, TOKEN_VARIABLE: tailnet.token},
    )


def checks(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(host, check) -> state, from the JSON report."""
    return {(h["name"], c["name"]): c["state"] for h in report["hosts"] for c in h["checks"]}


@pytest.mark.lab(hosts=3)
def test_status_clean_then_each_drift_then_a_host_down(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host3"))
    # The lab's overlay has a few GiB free; the default threshold (10 GiB) would be drift.
    path = tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ("tag:db",)},
                                      min_free_gb=1)
    code, _, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    state = tailnet.control.state

    seen = len(state.requests())
    clean = status(tailnet, path, "-o", "json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["state"] == "ok" and report["policy"]["state"] == "ok"
    assert {h["name"]: (h["role"], h["state"], h["round_trips"]) for h in report["hosts"]} == {
        "host1": ("server", "ok", 1), "host2": ("server", "ok", 1),
        "host3": ("recorder", "ok", 1)}
    assert set(checks(report).values()) == {"ok"}
    made = tailnet.api_requests(seen)
    assert made and {r.method for r in made} == {"GET"}

    host1 = next(d for d in state.devices() if d.hostname == "host1")
    state.set_device_tags(host1.id, ["tag:server", "tag:db"], state.authenticate(tailnet.token))
    lab.host("host2").nsenter("tailscale set --ssh=false --accept-risk=lose-ssh")
    lab.host("host3").nsenter("systemctl stop tsrecorder.service")
    policy = state.policy().text
    assert '"enforceRecorder": true' in policy
    state.write_policy(policy.replace('"enforceRecorder": true', '"enforceRecorder": false'), None)

    seen = len(state.requests())
    drift = status(tailnet, path, "-o", "json")
    assert drift.returncode == 3, drift.stdout + drift.stderr
    report = json.loads(drift.stdout)
    failed = {key for key, value in checks(report).items() if value != "ok"}
    assert {("host1", "tags"), ("host2", "ssh"), ("host3", "unit")} <= failed
    assert not failed & {("host1", "ssh"), ("host2", "tags"), ("host1", "reachable")}
    tags = next(c for h in report["hosts"] if h["name"] == "host1" for c in h["checks"]
                if c["name"] == "tags")
    assert (tags["expected"], tags["actual"]) == ("tag:server", "tag:db tag:server")
    assert report["policy"]["state"] == "drift"
    assert "servers-recorded" in report["policy"]["actual"]
    assert '"enforceRecorder": false' in report["policy"]["diff"]
    made = tailnet.api_requests(seen)
    assert made and {r.method for r in made} == {"GET"}

    table = status(tailnet, path)
    assert table.returncode == 3
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()
            if line.startswith("host")}
    assert rows["host1"][:7] == ["host1", "server", "ok", "ok", "ok", "drift", "ok"]
    assert rows["host2"][:7] == ["host2", "server", "ok", "ok", "ok", "ok", "drift"]
    assert rows["host3"][:3] == ["host3", "recorder", "ok"] and "drift" in rows["host3"]
    assert "host2: ssh: expected on; found off" in table.stdout
    assert "policy: drift:" in table.stdout

    lab.host("host1").nsenter("systemctl stop ssh.service")
    lab.host("host2").nsenter("systemctl stop tailscaled.service")
    down = status(tailnet, path, "-o", "json")
    assert down.returncode == 1, down.stdout + down.stderr
    report = json.loads(down.stdout)
    host = next(h for h in report["hosts"] if h["name"] == "host1")
    assert host["state"] == "error" and "connection refused" in host["reason"]
    assert checks(report)[("host1", "reachable")] == "error"
    # The other hosts are still reported: tailscaled stopped is an enrolment drift.
    assert checks(report)[("host2", "enrolled")] == "drift"
    enrolled = next(c for h in report["hosts"] if h["name"] == "host2" for c in h["checks"]
                    if c["name"] == "enrolled")
    assert enrolled["actual"] == "tailscaled inactive"
    assert checks(report)[("host3", "unit")] == "drift"


@pytest.mark.lab(hosts=1)
def test_status_sees_a_bucket_policy_changed_by_hand(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, executable: Path,  # noqa: F811 (fixture)
    tmp_path: Path,
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    path = write_inventory(tailnet, tmp_path / "inventory.yaml", [host.name],
                           s3_storage(lab_s3), executable)
    recorder_bootstrap(tailnet, path)
    env = ("--no-input",)
    clean = recorder_tsops(tailnet, "status", *env, "-o", "json", str(path))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["storage"]["state"] == "ok"

    # Someone loosens the bucket by hand: the deny-deletes statement goes.
    s3 = lab_s3.client()
    document = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    document["Statement"] = [s for s in document["Statement"]
                             if s.get("Sid") != "DenyDeletingRecordings"]
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(document))
    drift = recorder_tsops(tailnet, "status", *env, "-o", "json", str(path))
    assert drift.returncode == 3, drift.stdout + drift.stderr
    report = json.loads(drift.stdout)
    assert report["storage"]["state"] == "drift"
    assert "bucket policy" in report["storage"]["actual"]
    assert checks(report)[(host.name, "destination")] == "drift"
    assert {state for key, state in checks(report).items()
            if key != (host.name, "destination")} == {"ok"}

    # The next bootstrap puts it back, and status is clean again.
    recorder_bootstrap(tailnet, path)
    again = recorder_tsops(tailnet, "status", *env, "-o", "json", str(path))
    assert again.returncode == 0, again.stdout + again.stderr

    # S3 stopped (nothing listens at the endpoint any more): every host is still probed and
    # reported; what needed S3 is unknown, not drift, and the reason is one problem (exit 1).
    stopped = {**s3_storage(lab_s3), "endpoint": f"https://127.0.0.1:{free_port('127.0.0.1')}"}
    down_path = write_inventory(tailnet, tmp_path / "s3-down.yaml", [host.name], stopped,
                                executable)
    down = recorder_tsops(tailnet, "status", *env, "--s3-timeout", "2", "-o", "json",
                          str(down_path))
    assert down.returncode == 1, down.stdout + down.stderr
    report = json.loads(down.stdout)
    assert [h["name"] for h in report["hosts"]] == [host.name]
    assert checks(report)[(host.name, "reachable")] == "ok"
    assert checks(report)[(host.name, "unit")] == "ok"
    assert checks(report)[(host.name, "destination")] == "unknown"
    assert report["storage"]["state"] == "unknown"
    assert report["storage"]["actual"].startswith("not checked: S3: read bucket")
    assert report["recordings"]["state"] == "unknown"
    assert len(report["problems"]) == 1 and "cannot reach S3" in report["problems"][0]
    assert "Traceback" not in down.stderr
