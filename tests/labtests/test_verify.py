"""`tsops verify` on a bootstrapped lab: canary sessions over Tailscale SSH, recordings found."""

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
from tests.lab.s3 import S3Server
from tests.lab.tailnet import OPERATOR_LOGIN, TOKEN_VARIABLE, LabTailnet, TailnetSSHDenied
from tests.labtests.test_main_job import bootstrap
from tests.labtests.test_recorder import BUCKET, s3_storage
from tests.labtests.test_recorder import tsops as recorder_tsops
from tests.sim.recorder.bundle import allow_port_80

DESTINATION = "/var/lib/tsrecorder/recordings"
EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "example.yaml"


def verify(tailnet: LabTailnet, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `tsops verify` as an operator on the tailnet would."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", "verify", "--no-input", *args, str(path)],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, TOKEN_VARIABLE: tailnet.token},
    )


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON report's servers by name."""
    return {s["name"]: s for s in report["servers"]}


@pytest.mark.lab(hosts=3)
def test_verify_proves_each_server_recorded_then_sees_what_breaks_it(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    recorder = lab.host("host3")
    allow_port_80(recorder)
    path = tailnet.recorded_inventory(tmp_path, {"host1": (), "host2": ("tag:db",)},
                                      min_free_gb=1)
    code, _, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    devices = {d.hostname: d for d in tailnet.control.state.devices()}

    proved = verify(tailnet, path, "-o", "json")
    assert proved.returncode == 0, proved.stdout + proved.stderr
    report = json.loads(proved.stdout)
    assert report["state"] == "recorded"
    servers = by_name(report)
    assert set(servers) == {"host1", "host2"}
    for name, server in servers.items():
        node = devices[name].node_id
        assert (server["state"], server["node_id"]) == ("recorded", node), server
        assert server["recording"].startswith(f"{node}/")
        # The recording is on the recorder: the operator's session, the marker in its output.
        cast = recorder.nsenter(f"cat {DESTINATION}/{server['recording']}").stdout
        header = json.loads(cast.splitlines()[0])
        assert header["srcNodeID"] == tailnet.operator.node_id
        assert header["sshUser"] == "root" and header["command"].startswith("echo tsops-canary-")
        marker = header["command"].removeprefix("echo ")
        assert any(json.loads(line)[2].strip() == marker for line in cast.splitlines()[1:])

    table = verify(tailnet, path, "--limit", "host1")
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.startswith("host1: recorded after ")
    assert table.stdout.rstrip().endswith("1 of 1 servers proved recorded")

    # The recorder unreachable from the servers (a route on each that refuses it; the recorder
    # stays online, for with no online recorder Tailscale SSH runs sessions unrecorded):
    # enforceRecorder refuses every session; verify says so, exit 3.
    blocked = f"ip route add prohibit {recorder.ip}/32"
    for name in ("host1", "host2"):
        lab.host(name).nsenter(blocked)
    refused = verify(tailnet, path, "-o", "json", "--canary-timeout", "5")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    states = {name: s["state"] for name, s in by_name(json.loads(refused.stdout)).items()}
    assert states == {"host1": "refused", "host2": "refused"}
    for name in ("host1", "host2"):
        lab.host(name).nsenter(blocked.replace(" add ", " del "))

    # tailscaled stopped on host2: nothing answers Tailscale SSH there; host1 still proved.
    lab.host("host2").nsenter("systemctl stop tailscaled.service")
    down = verify(tailnet, path, "-o", "json", "--canary-timeout", "10")
    assert down.returncode == 3, down.stdout + down.stderr
    servers = by_name(json.loads(down.stdout))
    assert servers["host1"]["state"] == "recorded"
    assert servers["host2"]["state"] == "refused"
    assert "not answering" in servers["host2"]["detail"]


@pytest.mark.lab(hosts=2)
def test_the_example_inventorys_verifier_recipe_passes_its_own_proof(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    # The example inventory's ssh_rules and canary sections, taken as they are written: the
    # people's rule is a `check` rule (no unattended session passes it), the verifier's is an
    # accept rule for one unprivileged account. The one change: the verifier's `src` is a tag
    # there (a tagged machine runs verify), and the lab's control machine is a user's device.
    yaml = YAML()
    example = yaml.load(EXAMPLE.read_text())
    rules = [dict(rule) for rule in example["ssh_rules"]]
    verifier = next(rule for rule in rules if rule["users"] == [example["canary"]["user"]])
    assert verifier["action"] == "accept" and verifier["enforce_recorder"] is True
    assert any(rule["action"] == "check" for rule in rules)
    verifier["src"] = [OPERATOR_LOGIN]
    account = example["canary"]["user"]
    # The people's rule names group:sre: the tailnet defines it (the operator is not in it).
    state = tailnet.control.state
    state.write_policy(state.policy().text.replace(
        "{\n", '{\n  "groups": {"group:sre": ["sre@example.com"]},\n', 1), None)

    allow_port_80(lab.host("host2"))
    path = tailnet.recorded_inventory(tmp_path, {"host1": ()}, recorder="host2", min_free_gb=1)
    document = yaml.load(path.read_text())
    document["ssh_rules"] = rules
    document["canary"] = dict(example["canary"])
    with path.open("w") as out:
        yaml.dump(document, out)
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, json.dumps(report) + stderr
    server = lab.host("host1")
    entry = server.nsenter(f"getent passwd {account}").stdout.split(":")
    assert entry[0] == account and entry[6].strip() == "/bin/sh"
    assert server.nsenter(f"passwd -S {account}").stdout.split()[1] == "L"  # locked

    proved = verify(tailnet, path, "-o", "json")
    assert proved.returncode == 0, proved.stdout + proved.stderr
    (result,) = json.loads(proved.stdout)["servers"]
    assert result["state"] == "recorded", result
    cast = lab.host("host2").nsenter(f"cat {DESTINATION}/{result['recording']}").stdout
    header = json.loads(cast.splitlines()[0])
    assert (header["sshUser"], header["localUser"]) == (account, account)
    # The verifier identity gets nothing more than that account: root is refused.
    with pytest.raises(TailnetSSHDenied):
        tailnet.tailnet_ssh("host1", "root", "true")
    # A rerun has nothing left to do: the account exists.
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, json.dumps(report) + stderr
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {"host1": "unchanged"}
    assert report["policy"]["changed"] is False


@pytest.mark.lab(hosts=2)
def test_verify_finds_the_canary_recordings_in_an_s3_bucket(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host2"))
    path = tailnet.recorded_inventory(tmp_path, {"host1": ()}, recorder="host2")
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["storage"] = s3_storage(lab_s3)
    with path.open("w") as out:
        yaml.dump(document, out)
    boot = recorder_tsops(tailnet, "bootstrap", "--yes", "--no-input", str(path))
    assert boot.returncode == 0, boot.stdout + boot.stderr
    s3 = lab_s3.client()
    # Someone else's recording of host1 from before: listed, read, not mistaken for the canary.
    node = next(d.node_id for d in tailnet.control.state.devices() if d.hostname == "host1")
    s3.put_object(Bucket=BUCKET, Key=f"{node}/earlier.cast",
                  Body=b'{"version": 2}\n[0.1, "o", "tsops-canary-0000000000000000"]\n')

    proved = recorder_tsops(tailnet, "verify", "--no-input", "-o", "json", str(path))
    assert proved.returncode == 0, proved.stdout + proved.stderr
    (server,) = json.loads(proved.stdout)["servers"]
    assert server["state"] == "recorded" and server["recording"].startswith(f"{node}/")
    assert server["recording"] != f"{node}/earlier.cast"
    body = s3.get_object(Bucket=BUCKET, Key=server["recording"])["Body"].read().decode()
    header = json.loads(body.splitlines()[0])
    assert header["command"] == "echo " + header["command"].split()[-1]
    assert header["srcNodeID"] == tailnet.operator.node_id

    # The operator's AWS credentials cannot read the bucket: an error (exit 1), not drift.
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
    unreadable = recorder_tsops(tailnet, "verify", "--no-input", "-o", "json", str(path))
    assert unreadable.returncode == 1, unreadable.stdout + unreadable.stderr
    (server,) = json.loads(unreadable.stdout)["servers"]
    assert server["state"] == "error"
    assert "access denied (403): reading recordings needs s3:ListBucket" in server["detail"]
