"""The audit trail on a bootstrapped lab: one timeline of tsops's changes, someone else's policy
edit (with its diff) and the sessions; log streaming applied once, drift found and repaired."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.lab.tailnet import OPERATOR_LOGIN, TOKEN_VARIABLE, LabTailnet
from tests.sim.recorder.bundle import allow_port_80

HEC_VARIABLE = "TSOPS_LAB_HEC_TOKEN"
HEC = "lab-hec-token-value"
COLLECTOR = "https://siem.lab.invalid/services/collector"
ACL_LINE = '{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"]},'
BOB_LINE = '{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:db:5432"]},'
RECORDINGS = "/var/lib/tsrecorder/recordings"


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as the operator, the API token and the collector's token in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", *args], capture_output=True, text=True, check=False,
        timeout=600, env={**os.environ, TOKEN_VARIABLE: tailnet.token, HEC_VARIABLE: HEC},
    )


def puts(tailnet: LabTailnet, since: int) -> list[str]:
    """The stream writes tsops made after the first `since` requests."""
    return [r.path for r in tailnet.api_requests(since) if r.method == "PUT"]


def copy_recordings(lab: Lab, folder: Path) -> Path:
    """The recorder's recordings, copied here (they are on the recorder's disk)."""
    packed = lab.host("host3").nsenter(f"tar -C {RECORDINGS} -cf - . | base64 -w0").stdout
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(packed))) as archive:
        archive.extractall(folder, filter="data")
    return folder


@pytest.mark.lab(hosts=3)
def test_one_timeline_with_the_other_persons_edit_and_streaming_kept(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host3"))
    path = tailnet.recorded_inventory(tmp_path, {"host1": ()}, min_free_gb=1)
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["log_streaming"] = {"configuration": {
        "destination": "splunk", "url": COLLECTOR, "token": {"env": HEC_VARIABLE}}}
    with path.open("w") as out:
        yaml.dump(document, out)

    first = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["log_streaming"]["streams"] == [
        {"log_type": "configuration", "outcome": "created", "error": None}]
    stream = tailnet.control.logging.stream("configuration")
    assert stream is not None and (stream["url"], stream["token"]) == (COLLECTOR, HEC)
    added = tsops(tailnet, "add-server", "--yes", "--no-input", str(path), "host2")
    assert added.returncode == 0, added.stdout + added.stderr

    # Someone else edits the policy through the API, with a token of their own.
    bob = httpx.Client(base_url=tailnet.control.api_url, timeout=10, headers={
        "Authorization": f"Bearer {tailnet.control.create_api_token(user='bob@example.com')}"})
    current = bob.get("/tailnet/-/acl")
    assert ACL_LINE in current.text
    edited = current.text.replace(ACL_LINE, f"{ACL_LINE}\n    {BOB_LINE}")
    assert bob.post("/tailnet/-/acl", content=edited,
                    headers={"If-Match": current.headers["ETag"]}).status_code == 200
    for host, marker in (("host1", "audit-one"), ("host2", "audit-two")):
        code, output, error = tailnet.tailnet_ssh(host, "root", f"echo {marker}")
        assert (code, output.strip()) == (0, marker), error

    recordings = copy_recordings(lab, tmp_path / "recordings")
    shown = tsops(tailnet, "audit", "timeline", str(path), "--since", "1h", "--until", "2h",
                  "--recordings", str(recordings), "-o", "json")
    assert shown.returncode == 2 and "is before --since" in shown.stdout  # the error object
    shown = tsops(tailnet, "audit", "timeline", str(path), "--since", "1h",
                  "--recordings", str(recordings), "-o", "json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    entries: list[dict[str, Any]] = json.loads(shown.stdout)["entries"]
    times = [e["time"] for e in entries]
    assert times == sorted(times)

    def find(kind: str, target: str, text: str = "") -> int:
        return next(i for i, e in enumerate(entries) if e["kind"] == kind
                    and e["target"] == target and text in e["summary"])

    enrol1, enrol2 = find("enrolment", "host1"), find("enrolment", "host2")
    ours = find("policy", "tailnet example.com", "(tsops write 1)")
    bobs = next(i for i, e in enumerate(entries) if e["kind"] == "policy"
                and e["actor"] == "bob@example.com")
    one, two = find("session", "host1", "echo audit-one"), find("session", "host2",
                                                                "echo audit-two")
    assert {entries[i]["actor"] for i in (enrol1, enrol2, ours)} == {"admin@example.com"}
    assert {entries[i]["actor"] for i in (one, two)} == {OPERATOR_LOGIN}
    assert enrol1 < ours < enrol2 < bobs  # audit times are to the millisecond
    # A session's start is to the second (the cast header): it is not before bob's second.
    assert entries[bobs]["time"][:19] <= entries[one]["time"][:19] <= entries[two]["time"][:19]
    diff = entries[bobs]["diff"]
    assert entries[bobs]["diff_source"] == "tsops's policy history and the policy file now"
    assert f"+    {BOB_LINE}" in diff.splitlines()
    assert [line for line in diff.splitlines()
            if line[:1] in "+-" and line[:3] not in ("+++", "---")] == [f"+    {BOB_LINE}"]
    # Without --recordings the sessions are read where they are: on the recorder, over SSH.
    direct = tsops(tailnet, "audit", "timeline", str(path), "--since", "1h", "-o", "json")
    assert direct.returncode == 0, direct.stdout + direct.stderr
    assert [e for e in json.loads(direct.stdout)["entries"] if e["kind"] == "session"] == [
        e for e in entries if e["kind"] == "session"]
    server = tsops(tailnet, "audit", "timeline", str(path), "--server", "host2",
                   "--recordings", str(recordings), "-o", "json")
    assert {e["target"] for e in json.loads(server.stdout)["entries"]} == {
        "host2", "tailnet example.com"}
    ecs = tsops(tailnet, "audit", "timeline", str(path), "--recordings", str(recordings),
                "-o", "ecs")
    assert ecs.returncode == 0, ecs.stderr
    actions = [json.loads(line)["event"]["action"] for line in ecs.stdout.splitlines()]
    assert actions.count("ssh-session-recorded") >= 2 and "policy-file-changed" in actions

    # Log streaming: the rerun writes nothing; a change by hand is drift; bootstrap repairs it.
    before = len(tailnet.control.state.requests())
    again = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["log_streaming"]["streams"][0]["outcome"] == "unchanged"
    assert puts(tailnet, before) == []
    assert bob.put("/tailnet/-/logging/configuration/stream", json={
        "destinationType": "splunk", "url": "https://elsewhere.lab.invalid",
        "token": "x"}).status_code == 200
    bob.close()
    drift = tsops(tailnet, "status", "--no-input", str(path))
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert ('log-streaming-configuration: drift: expected configuration logs streamed to splunk '
            f'{COLLECTOR}; found url: "https://elsewhere.lab.invalid" -> "{COLLECTOR}"'
            ) in drift.stdout
    before = len(tailnet.control.state.requests())
    repaired = tsops(tailnet, "bootstrap", "--yes", "--no-input", str(path))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert puts(tailnet, before) == ["/api/v2/tailnet/example.com/logging/configuration/stream"]
    stream = tailnet.control.logging.stream("configuration")
    assert stream is not None and (stream["url"], stream["token"]) == (COLLECTOR, HEC)
    status = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    [streamed] = json.loads(status.stdout)["log_streaming"]
    assert (streamed["state"], streamed["publishing"]["state"]) == ("ok", "ok")

    log = tsops(tailnet, "audit", "log", str(path), "--actor", "bob", "-o", "json")
    assert [e["kind"] for e in json.loads(log.stdout)["events"]] == ["policy", "log-streaming"]
    for result in (first, again, drift, repaired, status, log, shown):
        assert HEC not in result.stdout + result.stderr
