"""The whole main job against an API that misbehaves as the real one does at times: rate
limits with Retry-After, a server error that hides a created auth key, a stale offline twin of
the recorder's device, and at the end an API that hangs while `status` runs.

One lab: bootstrap must succeed with the retries on stderr and no extra auth key alive; the
stale twin must not fool the recorder's health gate; status with the API hung must still
report every host, mark what needs the API unknown and exit 1 within its timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.sim.control.state import RegisterRequest
from tests.sim.recorder.bundle import allow_port_80

KEYS = "/api/v2/tailnet/[^/]+/keys"
DEVICES = "/api/v2/tailnet/[^/]+/devices"


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would, the API token in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", *args], capture_output=True, text=True, check=False,
        timeout=600, env={**os.environ, TOKEN_VARIABLE: tailnet.token})


def listed_keys(tailnet: LabTailnet) -> list[dict[str, Any]]:
    """Every auth key as the API lists it (GET /tailnet/-/keys), as an operator would check."""
    request = urllib.request.Request(f"{tailnet.control.api_url}/tailnet/-/keys",
                                     headers={"Authorization": f"Bearer {tailnet.token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        keys: list[dict[str, Any]] = json.load(answer)["keys"]
    return keys


def stale_twin(tailnet: LabTailnet, hostname: str, tag: str) -> str:
    """An old enrollment of `hostname` with `tag`, gone offline, as real tailnets keep them."""
    control = tailnet.control
    key = control.create_auth_key([tag], description="an enrollment long ago")
    node = control.state.register(RegisterRequest(
        auth_key=key.secret, machine_key=f"mkey:stale-{hostname}", hostname=hostname,
        advertise_tags=[tag], os="linux", client_version="1.60.0", endpoint="", ssh=True))
    control.advance_clock(60)  # no poll since: offline
    return str(node["id"])


@pytest.mark.lab(hosts=3)
def test_bootstrap_through_rate_limits_server_errors_and_a_stale_twin(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host3"))
    # min_free_gb 1: the check of free space is not what this test is about (shared disks).
    path = tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ("tag:db",)},
                                      min_free_gb=1)
    twin = stale_twin(tailnet, "host3", "tag:recorder")
    control = tailnet.control
    keys_before = {k.id for k in control.auth_keys()}
    # The first key creation is rate limited (Retry-After: 1); the next fails with 503 after
    # the key was made (the answer hides it); every later one goes through.
    control.inject_failure("POST", KEYS, 429, retry_after="1")
    control.inject_failure("POST", KEYS, 503, after_handling=True)

    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {
        "host1": "changed", "host2": "changed"}
    assert report["policy"]["changed"] is True
    # The retries are on stderr, each one line: what, why, how long, which try.
    assert ("Tailscale API: create an auth key: rate limited by the API (rate limit exceeded); "
            "trying again in 1.0 s (try 2 of at most 4)") in result.stderr
    assert re.search(r"Tailscale API: create an auth key: HTTP 503 \(simulated server error "
                     r"503\) \(revoked 1 key\(s\) the failed tries made\); trying again in "
                     r"[0-9.]+ s \(try 2 of at most 4\)", result.stderr), result.stderr
    assert [r.status for r in control.requests() if r.method == "POST"
            and r.path.endswith("/keys")] == [429, 503, 200, 200, 200]

    # No extra live key: every key this run made (the hidden one included) is revoked now.
    made = [k for k in listed_keys(tailnet) if k["id"] not in keys_before]
    assert len(made) == 4  # recorder, host1, host2, and the one the 503 hid
    assert all("revoked" in k for k in made), made
    assert len({k["description"] for k in made}) == 3  # the hidden key shares its call's

    # The stale twin is still there and offline; the recorder's own device passed the gate.
    recorders = [d for d in control.devices() if d.hostname == "host3"]
    assert sorted(d.id for d in recorders if not d.online(control.state.now())) == [twin]
    status = tsops(tailnet, "status", "-o", "json", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    recorder = next(h for h in json.loads(status.stdout)["hosts"] if h["name"] == "host3")
    assert next(c for c in recorder["checks"] if c["name"] == "tailnet")["state"] == "ok"

    # The API hangs: status still reports every host, marks the API's checks unknown, exit 1.
    hung = control.inject_delay("GET", DEVICES, 3600, times=None)
    down = tsops(tailnet, "--api-timeout", "2", "status", "-o", "json", str(path))
    assert down.returncode == 1, down.stdout + down.stderr
    data = json.loads(down.stdout)
    assert sorted(h["name"] for h in data["hosts"]) == ["host1", "host2", "host3"]
    checks = {(h["name"], c["name"]): c["state"] for h in data["hosts"] for c in h["checks"]}
    assert checks[("host1", "tags")] == checks[("host3", "tailnet")] == "unknown"
    assert checks[("host1", "reachable")] == checks[("host3", "unit")] == "ok"
    assert data["policy"]["state"] == "unknown"
    [unavailable] = data["unavailable"]
    assert unavailable["service"] == "tailscale-api"
    assert unavailable["message"] == (
        f"Tailscale API: list devices: GET {control.api_url}/tailnet/example.com/devices: no "
        "progress on the answer within 2 s (change it with --api-timeout or timeouts.api in "
        "the inventory)")
    assert hung.served == 1  # asked once, then nothing else waited on it
    assert "Traceback" not in down.stderr
