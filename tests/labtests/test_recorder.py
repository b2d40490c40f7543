"""`tsops bootstrap` deploying recorders on lab hosts: S3 on the lab moto, local, two hosts."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace
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
from tsops.recorders.render import (
    RecorderSpec,
    bucket_policy,
    normalize_policy,
    recorder_flags,
    render_authkey_env,
    render_env,
    render_unit,
)

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
    plan = tsops(tailnet, "plan", "--changes-exit-code", str(inventory))
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
    # The sandbox is in force: no capability at all, no new privileges, a system call filter.
    status = host.nsenter(f"grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/{pid}/status").stdout
    assert status.split() == ["CapBnd:", "0" * 16, "NoNewPrivs:", "1", "Seccomp:", "2"]
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
    again = tsops(tailnet, "plan", "--changes-exit-code", str(inventory))
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


FAKE_DOCKER = r"""#!/bin/sh
# Lab stand-in for docker, as strict as docker about what a unit asks for. `run` starts the
# image's program (the image: the host's /usr, /etc/ssl, and /opt/tsrecorder as /tsrecorder) in
# a root of its own, where only --volume mounts are shared with the host, only --env names (or
# NAME=VALUE) reach the environment, and with --read-only nothing outside the volumes is
# writable. An option it does not know is refused, so a flag tsops adds must be taught here.
# rm and stop succeed (systemd stops the process itself).
set -eu
umask 022  # the unit's UMask is not the daemon's: docker makes mount points 0755
if [ "${1:-}" != __inside ]; then
  case "${1:-}" in
    rm|stop) exit 0 ;;
    run) exec unshare --mount --propagation private "$0" __inside "$@" ;;
    *) echo "docker stand-in: unsupported command ${1:-}" >&2; exit 125 ;;
  esac
fi
shift 2
user=0:0; read_only=; volumes=; envs=
while [ $# -gt 0 ]; do
  case "$1" in
    --rm|--name=*|--cap-drop=ALL|--security-opt=no-new-privileges) ;;
    --read-only) read_only=1 ;;
    --user=*) user=${1#--user=} ;;
    --volume=*) volumes="$volumes ${1#--volume=}" ;;
    --env=*) envs="$envs ${1#--env=}" ;;
    -*) echo "docker stand-in: unsupported option $1" >&2; exit 125 ;;
    *) break ;;
  esac
  shift
done
[ $# -ge 2 ] || { echo "docker stand-in: run needs an image and a command" >&2; exit 125; }
shift  # the image
program=$1; shift
root=$(mktemp -d)
mount -t tmpfs -o mode=0755 image "$root"
mkdir -p "$root/usr" "$root/etc/ssl" "$root/dev" "$root/proc"
mkdir -m 1777 "$root/tmp"  # as in an image: only the container layer, lost with it
for dir in /usr /etc/ssl; do
  mount --rbind "$dir" "$root$dir"; mount -o remount,bind,ro "$root$dir"
done
for link in /bin /sbin /lib /lib64; do [ ! -L "$link" ] || cp -P "$link" "$root$link"; done
mount --rbind /dev "$root/dev"
mount --rbind /proc "$root/proc"
touch "$root/tsrecorder"; mount --bind /opt/tsrecorder "$root/tsrecorder"
for volume in $volumes; do
  source=${volume%%:*}; rest=${volume#*:}; target=${rest%%:*}; mode=${rest#"$target"}
  case "$source:$target:$mode" in
    /*:/*:|/*:/*::ro) ;;
    *) echo "docker stand-in: bad --volume=$volume" >&2; exit 125 ;;
  esac
  mkdir -p "$source" "$root$target"  # docker -v creates a missing host directory
  mount --bind "$source" "$root$target"
  [ "$mode" != :ro ] || mount -o remount,bind,ro "$root$target"
done
[ -z "$read_only" ] || mount -o remount,ro "$root"
set -- "$program" "$@"
for assignment in $envs; do
  name=${assignment%%=*}
  case "$name" in ''|[!A-Za-z_]*|*[!A-Za-z0-9_]*)
    echo "docker stand-in: bad --env=$assignment" >&2; exit 125 ;;
  esac
  if [ "$name" != "$assignment" ]; then set -- "$assignment" "$@"
  elif eval "[ -n \"\${$name+set}\" ]"; then eval "set -- \"$name=\${$name}\" \"\$@\""
  fi
done
exec chroot "$root" setpriv --reuid="${user%%:*}" --regid="${user##*:}" --clear-groups \
  env -i PATH=/usr/local/bin:/usr/bin:/bin "$@"
"""
FAKE_DOCKER_SERVICE = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"


def install_docker_stand_in(host: LabHost, executable: Path) -> None:
    """The docker stand-in as /usr/bin/docker, the simulated recorder as the image's program."""
    host.nsenter("base64 -d > /opt/tsrecorder && chmod 0755 /opt/tsrecorder",
                 input=base64.b64encode(executable.read_bytes()).decode())
    host.nsenter("cat > /usr/bin/docker && chmod 0755 /usr/bin/docker", input=FAKE_DOCKER)
    host.nsenter("cat > /etc/systemd/system/docker.service && systemctl daemon-reload",
                 input=FAKE_DOCKER_SERVICE)


@pytest.mark.lab(hosts=1)
def test_the_docker_stand_in_shares_only_volumes_named_env_and_honours_read_only(
    lab: Lab, executable: Path
) -> None:
    host = lab.hosts[0]
    install_docker_stand_in(host, executable)
    host.nsenter("mkdir -p /srv/shared /srv/private && touch /srv/private/host-file")
    look = ("env | grep -v ^PWD= | sort; touch /srv/shared/written && echo shared-writable; "
            "touch /tmp/outside 2>/dev/null && echo root-writable; "
            "ls /srv/private 2>/dev/null && echo private-visible; "
            "cat /etc/passwd >/dev/null 2>&1 && echo host-etc-visible; id -u")  # sh adds PWD
    run = ("KEPT=kept DROPPED=dropped docker run --rm --name=t --user=65532:65532 "
           "{flags} tailscale/tsrecorder:v0 /bin/sh -c '{look}'")
    host.nsenter("chown 65532 /srv/shared")
    strict = host.nsenter(run.format(
        flags="--read-only --volume=/srv/shared:/srv/shared --env=KEPT --env=SET=/x --env=UNSET",
        look=look)).stdout.split()
    assert strict == ["KEPT=kept", "PATH=/usr/local/bin:/usr/bin:/bin", "SET=/x",
                      "shared-writable", "65532"]
    assert host.nsenter("ls /srv/shared").stdout.split() == ["written"]
    # Without --read-only the root takes writes (lost with the container); without --volume
    # the directory is not there; without --env nothing of the caller's environment is.
    lax = host.nsenter(run.format(flags="", look=look))
    assert lax.stdout.split() == ["PATH=/usr/local/bin:/usr/bin:/bin", "root-writable",
                                  "65532"], lax.stderr
    refused = host.nsenter(run.format(flags="--privileged", look="true"), check=False)
    assert (refused.returncode, refused.stderr.strip()) == (
        125, "docker stand-in: unsupported option --privileged")


@pytest.mark.lab(hosts=1)
def test_container_runtime_unit_runs_as_the_image_user(
    lab: Lab, tailnet: LabTailnet, executable: Path, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    install_docker_stand_in(host, executable)
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
    # What the container got (what `docker inspect` shows): the key file's path, no secret.
    environment = host.nsenter(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.split()
    assert "TS_AUTHKEY_FILE=/run/tsrecorder/authkey" in environment
    assert not [v for v in environment if "tskey" in v or v.startswith("TS_AUTHKEY=")]
    assert host.nsenter("stat -c '%u %a' /run/tsrecorder /run/tsrecorder/authkey").stdout.split(
        "\n")[:2] == ["65532 500", "65532 400"]
    session = record_a_session(tailnet)
    assert host.nsenter(f"cat /srv/recordings/{session.key}").stdout.encode() == session.sent
    second = bootstrap(tailnet, inventory)
    assert [(h["outcome"], h["healthy"]) for h in second["hosts"]] == [("unchanged", True)]

    # Each flag of the unit's command matters: without it the recorder does not start.
    unit = host.nsenter("cat /etc/systemd/system/tsrecorder.service").stdout
    (command,) = [line.removeprefix("ExecStart=") for line in unit.splitlines()
                  if line.startswith("ExecStart=")]
    environment_of_unit = host.nsenter(
        "systemctl show -p Environment --value tsrecorder").stdout.strip()
    for flag, failure in [
        ("--volume=/var/lib/tsrecorder:/var/lib/tsrecorder",
         "state directory /var/lib/tsrecorder does not exist"),
        ("--volume=/run/tsrecorder:/run/tsrecorder:ro",
         "reading TS_AUTHKEY_FILE /run/tsrecorder/authkey: No such file or directory"),
        ("--volume=/srv/recordings:/srv/recordings",
         "destination /srv/recordings is not writable"),
        ("--env=TSRECORDER_LOGIN_SERVER", "TSRECORDER_LOGIN_SERVER is not set"),
    ]:
        assert f" {flag} " in command
        mutant = command.replace(f" {flag} ", " ")
        run = host.nsenter(f"env -i {environment_of_unit} timeout 120 {mutant}", check=False)
        assert run.returncode not in (0, 124) and failure in run.stderr, (flag, run.stderr)


# Stands in for tsrecorder: writes what systemd handed it (argv and the variables tsops sets)
# into its statedir, which only ReadWritePaths= makes writable under ProtectSystem=strict.
ECHO_RECORDER = """#!/usr/bin/python3
import json, os, sys
statedir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--statedir="))
names = ("TSRECORDER_LOGIN_SERVER", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TS_AUTHKEY")
with open(os.path.join(statedir, "seen.json"), "w") as out:
    json.dump({"argv": sys.argv[1:], "env": {n: os.environ.get(n) for n in names}}, out)
"""


@pytest.mark.lab(hosts=1)
def test_systemd_reads_hostile_values_back_exactly_as_rendered(lab: Lab) -> None:
    """Real systemd parses a unit and env files full of quotes, `$`, `%`, `;` and spaces."""
    host = lab.hosts[0]
    spec = RecorderSpec(
        hostname='rec 1;${USER}%n"\\x\'', runtime="binary",
        binary_path="/opt/ts rec$HOME;%n/tsrecorder", image="tailscale/tsrecorder:v1.80.0",
        container_engine="docker", service_user="echo-recorder",
        statedir="/var/lib/ts state ${HOME};50%n &x $HOME", ui=True,
        login_server='https://ctl.example.com/a"b\\c %n${HOME};x `id`',
        storage=Storage.model_construct(**{
            **Storage.model_validate({"destination": "/srv/x"}).__dict__,
            "destination": "/srv/rec ordings;$PATH%%"}),
    )
    secrets = {"AWS_ACCESS_KEY_ID": 'AK"${HOME}%n', "AWS_SECRET_ACCESS_KEY": "se cr\\et`id`$(id)'#",
               "TS_AUTHKEY": "tskey-auth-$x \"y\" \\z"}
    unit = render_unit(spec)
    quoted = {name: shlex.quote(path) for name, path in [
        ("binary", spec.binary_path), ("folder", str(Path(spec.binary_path).parent)),
        ("statedir", spec.statedir), ("destination", spec.storage.destination)]}
    host.nsenter("useradd --system --user-group --no-create-home echo-recorder")
    host.nsenter(f"mkdir -p {quoted['folder']} && cat > {quoted['binary']} && "
                 f"chmod 0755 {quoted['binary']} && install -d -o echo-recorder "
                 f"{quoted['statedir']} {quoted['destination']} && mkdir -p /etc/tsrecorder",
                 input=ECHO_RECORDER)
    host.nsenter("cat > /etc/tsrecorder/env",
                 input=render_env(secrets["AWS_ACCESS_KEY_ID"], secrets["AWS_SECRET_ACCESS_KEY"]))
    host.nsenter("cat > /etc/tsrecorder/authkey.env",
                 input=render_authkey_env(secrets["TS_AUTHKEY"]))
    host.nsenter("cat > /etc/systemd/system/hostile.service && systemctl daemon-reload && "
                 "systemctl start hostile.service", input=unit)
    seen_path = shlex.quote(f"{spec.statedir}/seen.json")
    deadline = time.monotonic() + 60  # a bound on the wait, not a timed assertion
    while host.nsenter(f"test -s {seen_path}", check=False).returncode != 0:
        assert time.monotonic() < deadline, host.nsenter(
            "journalctl -u hostile --no-pager | tail -20", check=False).stdout
        time.sleep(0.5)
    host.nsenter("systemctl stop hostile.service")
    seen = json.loads(host.nsenter(f"cat {seen_path}").stdout)
    assert seen["argv"] == recorder_flags(spec)
    assert "--hostname=rec 1;${USER}%n\"\\x'" in seen["argv"]
    assert seen["env"] == {"TSRECORDER_LOGIN_SERVER": spec.login_server, **secrets}
    assert replace(spec, hostname="rec1") != spec  # the values above were not the benign ones
