"""`tsops bootstrap` deploying recorders on lab hosts: S3 on the lab moto, local, two hosts."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab, LabHost
from tests.lab.s3 import S3Server, free_port
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.sim.control.state import Device
from tests.sim.recorder.bundle import allow_port_80, build_executable
from tests.sim.recorder.cast import shell_output
from tests.sim.recorder.conftest import ALICE, register_server
from tests.sim.recorder.session import Outcome, run_session
from tsops.inventory.model import Storage
from tsops.recorder.render import bucket_policy, normalize_policy

BUCKET = "lab-recordings"
RECORDER_PRINCIPAL = "arn:aws:iam::123456789012:user/recorder"
BREAK_GLASS = "arn:aws:iam::123456789012:role/break-glass"
SSH_POLICY = """\
{
  "groups": {"group:ops": ["alice@example.com"]},
  "tagOwners": {"tag:server": [], "tag:recorder": []},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [{
    "action": "accept", "src": ["group:ops"], "dst": ["tag:server"],
    "users": ["autogroup:nonroot", "root"], "recorder": ["tag:recorder"],
    "enforceRecorder": true,
  }],
}
"""


@pytest.fixture
def executable(tmp_path: Path) -> Path:
    """The simulated tsrecorder, as the file an operator hands tsops to upload."""
    return build_executable(tmp_path / "tsrecorder")


def write_inventory(tailnet: LabTailnet, path: Path, recorders: list[str],
                    storage: dict[str, Any], binary: Path) -> Path:
    """An inventory with the lab's tailnet, no servers, these recorders and this storage."""
    tailnet.inventory(path, {})
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["recorders"] = {"tag": "tag:recorder", "runtime": "binary", "binary": str(binary),
                             "hosts": dict.fromkeys(recorders)}
    document["storage"] = storage
    with path.open("w") as out:
        yaml.dump(document, out)
    return path


def s3_storage(s3: S3Server) -> dict[str, Any]:
    """The lab's S3 storage section: governance lock, the recorder's own keys from env."""
    return {
        # HTTPS with the lab's CA: the bucket policy keeps its deny-non-TLS statement.
        "destination": f"s3://{BUCKET}", "endpoint": s3.endpoint, "region": "us-east-1",
        "object_lock": {"mode": "governance", "retention_days": 1},
        "noncurrent_days": 14,
        "recorder_principal": RECORDER_PRINCIPAL, "break_glass_principal": BREAK_GLASS,
        "credentials": {"access_key_id": {"env": "LAB_RECORDER_KEY_ID"},
                        "secret_access_key": {"env": "LAB_RECORDER_SECRET"}},
    }


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would: API token and AWS credentials in the environment."""
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token, "AWS_ACCESS_KEY_ID": "admin",
           "AWS_SECRET_ACCESS_KEY": "admin-secret", "LAB_RECORDER_KEY_ID": "AKIDRECORDER",
           "LAB_RECORDER_SECRET": "recorder-secret-value"}
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=600)


def bootstrap(tailnet: LabTailnet, inventory: Path) -> dict[str, Any]:
    """A bootstrap that must succeed; its JSON report's recorder section."""
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recorder-secret-value" not in result.stdout + result.stderr
    recorders: dict[str, Any] = json.loads(result.stdout)["recorders"]
    return recorders


def unit_state(host: LabHost) -> dict[str, str]:
    """The recorder unit's state, PID and start time (a restart changes them)."""
    shown = host.nsenter("systemctl show -p ActiveState -p MainPID -p ExecMainStartTimestamp "
                         "tsrecorder").stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def files(host: LabHost) -> str:
    """Mode, owner and mtime of what tsops writes (a rewrite changes the mtime)."""
    return host.nsenter("stat -c '%n %a %U %Y' /etc/systemd/system/tsrecorder.service "
                        "/etc/tsrecorder/env /var/lib/tsrecorder /usr/local/bin/tsrecorder"
                        ).stdout


def recorder_devices(tailnet: LabTailnet) -> dict[str, Device]:
    """The recorder devices by hostname."""
    return {d.hostname: d for d in tailnet.control.state.devices() if "tag:recorder" in d.tags}


def record_a_session(tailnet: LabTailnet) -> Any:
    """Open a recorded session to a server through the control's SSH policy."""
    tailnet.control.state.seed_policy(SSH_POLICY)
    if not any(d.hostname == "web1" for d in tailnet.control.state.devices()):
        register_server(tailnet.control)
    result = run_session(tailnet.control, "web1", ALICE, "alice",
                         shell_output("alice@web1:~$ ", [("uptime", "up 3 days\n")]))
    assert result.outcome is Outcome.RECORDED, (result.failure, result.attempts)
    return result


@pytest.mark.lab(hosts=1)
def test_s3_recorder_from_scratch_then_converged(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, executable: Path, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path / "inventory.yaml", [host.name],
                                s3_storage(lab_s3), executable)
    plan = tsops(tailnet, "plan", "--detailed-exitcode", str(inventory))
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert f"  + create bucket {BUCKET} in us-east-1 with Object Lock" in plan.stdout
    assert "DenyDeletingRecordings" in plan.stdout  # the policy as a JSON diff

    first = bootstrap(tailnet, inventory)
    assert first["storage"]["outcome"] == "changed", first
    assert first["healthy_tags"] == ["tag:recorder"]
    (result,) = first["hosts"]
    assert (result["outcome"], result["healthy"]) == ("changed", True), result
    assert result["checks"]["unit"] == "active"
    assert "written and read back" in result["checks"]["destination"]

    # On the host: unit active, secrets root-only, statedir owned by the service user.
    assert unit_state(host)["ActiveState"] == "active"
    listing = files(host).splitlines()
    assert "/etc/tsrecorder/env 600 root" in listing[1]
    assert "/var/lib/tsrecorder 700 tsrecorder" in listing[2]
    unit = host.nsenter("cat /etc/systemd/system/tsrecorder.service").stdout
    assert "recorder-secret-value" not in unit and "AKIDRECORDER" not in unit
    assert f"--dst=s3://{lab_s3.address} --bucket={BUCKET}" in unit
    assert "recorder-secret-value" in host.nsenter("cat /etc/tsrecorder/env").stdout
    assert host.nsenter("ls /etc/tsrecorder").stdout.split() == ["env"]  # key file removed
    pid = unit_state(host)["MainPID"]
    assert host.nsenter(f"ps -o user= -p {pid}").stdout.strip() == "tsrecorder"
    argv = host.nsenter(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert "secret" not in argv and "tskey" not in argv

    # The bucket as planned, read back: TLS only, and the recorder still writes (below).
    s3 = lab_s3.client()
    storage = Storage.model_validate(s3_storage(lab_s3))
    written = normalize_policy(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert written == normalize_policy(bucket_policy(storage, ui=False))
    assert "DenyInsecureTransport" in json.dumps(written)
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    lock = s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("GOVERNANCE", 1)
    encryption = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == (
        "AES256")
    assert all(s3.get_public_access_block(Bucket=BUCKET)[
        "PublicAccessBlockConfiguration"].values())
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 14

    # Online with its tag; a session lands in the bucket.
    device = recorder_devices(tailnet)[host.name]
    assert device.tags == ["tag:recorder"] and device.online(tailnet.control.state.now())
    keys = tailnet.control.state.auth_keys()
    assert len(keys) == 1 and keys[0].revoked is not None
    session = record_a_session(tailnet)
    assert session.recorder is not None and session.recorder.endpoint == host.ip
    stored = s3.get_object(Bucket=BUCKET, Key=session.key)["Body"].read()
    assert stored == session.sent

    # The rerun: no unit rewrite, no restart, no S3 write, no new key.
    before = (files(host), unit_state(host))
    versions = len(s3.list_object_versions(Bucket=BUCKET).get("Versions", []))
    keys_before = len(tailnet.control.state.auth_keys())
    second = bootstrap(tailnet, inventory)
    assert second["storage"]["outcome"] == "unchanged"
    assert second["storage"]["s3_writes"] == []
    assert [(h["outcome"], h["healthy"], h["done"]) for h in second["hosts"]] == [
        ("unchanged", True, [])]
    assert (files(host), unit_state(host)) == before
    assert len(s3.list_object_versions(Bucket=BUCKET).get("Versions", [])) == versions
    assert len(tailnet.control.state.auth_keys()) == keys_before
    again = tsops(tailnet, "plan", "--detailed-exitcode", str(inventory))
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.lab(hosts=2)
def test_two_recorders_with_a_local_destination(
    lab: Lab, tailnet: LabTailnet, executable: Path, tmp_path: Path
) -> None:
    for host in lab.hosts:
        allow_port_80(host)
    storage = {"destination": "/srv/recordings", "min_free_gb": 100000}
    inventory = write_inventory(tailnet, tmp_path / "inventory.yaml",
                                [h.name for h in lab.hosts], storage, executable)
    first = bootstrap(tailnet, inventory)
    assert first["storage"]["outcome"] == "unchanged"  # nothing to provision for a directory
    assert [(h["name"], h["outcome"], h["healthy"]) for h in first["hosts"]] == [
        (h.name, "changed", True) for h in lab.hosts]
    assert all("a full disk blocks every recorded session" in h["warnings"][0]
               for h in first["hosts"])
    assert sorted(recorder_devices(tailnet)) == sorted(h.name for h in lab.hosts)
    for host in lab.hosts:
        assert "/srv/recordings 700 tsrecorder" in host.nsenter(
            "stat -c '%n %a %U' /srv/recordings").stdout
        assert "--dst=/srv/recordings" in host.nsenter(
            "cat /etc/systemd/system/tsrecorder.service").stdout

    session = record_a_session(tailnet)
    assert session.recorder is not None
    serving = next(h for h in lab.hosts if h.ip == session.recorder.endpoint)
    stored = serving.nsenter(f"cat /srv/recordings/{session.key}").stdout.encode()
    assert stored == session.sent

    before = [(files(h), unit_state(h)) for h in lab.hosts]
    second = bootstrap(tailnet, inventory)
    assert [(h["outcome"], h["healthy"]) for h in second["hosts"]] == [("unchanged", True)] * 2
    assert [(files(h), unit_state(h)) for h in lab.hosts] == before


@pytest.mark.lab(hosts=1)
def test_s3_unreachable_fails_and_deploys_no_recorder(
    lab: Lab, tailnet: LabTailnet, executable: Path, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    storage = {"destination": f"s3://{BUCKET}", "region": "us-east-1",
               "endpoint": f"https://{lab.gateway}:{free_port(lab.gateway)}"}
    inventory = write_inventory(tailnet, tmp_path / "inventory.yaml", [host.name], storage,
                                executable)
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", str(inventory))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot reach S3" in result.stderr
    assert f"recorder {host.name}: skipped: storage was not provisioned" in result.stderr
    assert host.nsenter("ls /etc/systemd/system/tsrecorder.service /etc/tsrecorder",
                        check=False).returncode != 0
    assert recorder_devices(tailnet) == {}


@pytest.mark.lab(hosts=2)
def test_two_recorders_share_one_bucket(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, executable: Path, tmp_path: Path
) -> None:
    for host in lab.hosts:
        allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path / "inventory.yaml",
                                [h.name for h in lab.hosts], s3_storage(lab_s3), executable)
    first = bootstrap(tailnet, inventory)
    assert [(h["outcome"], h["healthy"]) for h in first["hosts"]] == [("changed", True)] * 2
    canaries = lab_s3.client().list_objects_v2(Bucket=BUCKET, Prefix="tsops-canary/")
    assert sorted(o["Key"] for o in canaries["Contents"]) == [
        f"tsops-canary/{h.name}" for h in lab.hosts]
    assert sorted(recorder_devices(tailnet)) == sorted(h.name for h in lab.hosts)
    session = record_a_session(tailnet)
    assert lab_s3.client().get_object(Bucket=BUCKET, Key=session.key)["Body"].read() == (
        session.sent)

    second = bootstrap(tailnet, inventory)
    assert second["storage"]["s3_writes"] == []
    assert [(h["outcome"], h["healthy"]) for h in second["hosts"]] == [("unchanged", True)] * 2


FAKE_DOCKER = """\
#!/bin/sh
# Lab stand-in for docker: `run` starts the simulated tsrecorder as the image's user with the
# flags after the image's /tsrecorder; rm and stop succeed (systemd stops the process itself).
command=$1; shift
[ "$command" = run ] || exit 0
while [ $# -gt 0 ]; do
  case "$1" in
    --user=*) user=${1#--user=} ;;
    -*) ;;
    *) shift; shift; break ;;
  esac
  shift
done
exec setpriv --reuid="${user%%:*}" --regid="${user##*:}" --clear-groups /opt/tsrecorder "$@"
"""
FAKE_DOCKER_SERVICE = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"


@pytest.mark.lab(hosts=1)
def test_container_runtime_unit_runs_as_the_image_user(
    lab: Lab, tailnet: LabTailnet, executable: Path, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    host.nsenter("base64 -d > /opt/tsrecorder && chmod 0755 /opt/tsrecorder",
                 input=base64.b64encode(executable.read_bytes()).decode())
    host.nsenter("cat > /usr/bin/docker && chmod 0755 /usr/bin/docker", input=FAKE_DOCKER)
    host.nsenter("cat > /etc/systemd/system/docker.service && systemctl daemon-reload",
                 input=FAKE_DOCKER_SERVICE)
    inventory = write_inventory(tailnet, tmp_path / "inventory.yaml", [host.name],
                                {"destination": "/srv/recordings"}, executable)
    yaml = YAML()
    document = yaml.load(inventory.read_text())
    document["recorders"]["runtime"] = "container"
    del document["recorders"]["binary"]
    with inventory.open("w") as out:
        yaml.dump(document, out)

    first = bootstrap(tailnet, inventory)
    assert [(h["outcome"], h["healthy"]) for h in first["hosts"]] == [("changed", True)]
    pid = unit_state(host)["MainPID"]
    assert host.nsenter(f"ps -o uid= -p {pid}").stdout.strip() == "65532"
    assert host.nsenter("stat -c '%u %a' /var/lib/tsrecorder /srv/recordings").stdout.split(
        "\n")[:2] == ["65532 700", "65532 700"]
    session = record_a_session(tailnet)
    assert host.nsenter(f"cat /srv/recordings/{session.key}").stdout.encode() == session.sent
    second = bootstrap(tailnet, inventory)
    assert [(h["outcome"], h["healthy"]) for h in second["hosts"]] == [("unchanged", True)]
