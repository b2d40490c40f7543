"""`tsops rotate-storage` on lab hosts while the session generator keeps opening sessions.

Two recorders, sessions throughout: local directory -> S3, and bucket A -> bucket B (with the
migration interrupted and resumed). A new bucket whose policy refuses writes stops the
rotation before any recorder is touched.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab, LabHost
from tests.lab.s3 import S3Server, free_port
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_recorder import SSH_POLICY
from tests.sim.recorder.bundle import allow_port_80, build_executable
from tests.sim.recorder.cast import shell_output
from tests.sim.recorder.conftest import ALICE, register_server
from tests.sim.recorder.session import Outcome, SessionResult, run_session

OLD_DIR = "/srv/recordings"
RECORDER_ENV = {"LAB_RECORDER_KEY_ID": "AKIDRECORDER", "LAB_RECORDER_SECRET": "rec-secret-value"}


# Bounds that only keep a broken run from hanging: on a loaded machine (CI shares 2 cores with
# the lab) a rotation with sessions throughout takes minutes; no assertion depends on speed.
HANG = 600

def write_inventory(tailnet: LabTailnet, folder: Path, recorders: list[str],
                    storage: dict[str, Any]) -> Path:
    """These recorders (binary runtime) and this storage; comments an operator would keep."""
    path = tailnet.inventory(folder / "inventory.yaml", {})
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["recorders"] = {"tag": "tag:recorder", "runtime": "binary",
                             "binary": str(build_executable(folder / "tsrecorder")),
                             "hosts": dict.fromkeys(recorders)}
    document["storage"] = storage
    with path.open("w") as out:
        yaml.dump(document, out)
    text = path.read_text()
    text = text.replace("storage:\n", "# Where the auditors look.\nstorage:\n", 1)
    text = text.replace(f"  destination: {storage['destination']}\n",
                        f"  destination: {storage['destination']}  # see the runbook\n", 1)
    path.write_text(text)
    return path


def s3_storage(s3: S3Server, bucket: str) -> dict[str, Any]:
    """The lab's S3 storage section (moto over HTTPS), the recorder's own keys from env."""
    return {"destination": f"s3://{bucket}", "endpoint": s3.endpoint, "region": "us-east-1",
            "credentials": {"access_key_id": {"env": "LAB_RECORDER_KEY_ID"},
                            "secret_access_key": {"env": "LAB_RECORDER_SECRET"}}}


def tsops_env(tailnet: LabTailnet, state: Path, **extra: str) -> dict[str, str]:
    """What an operator's shell holds: API token, AWS keys, the recorder's keys (by name)."""
    return {**os.environ, TOKEN_VARIABLE: tailnet.token, "AWS_ACCESS_KEY_ID": "admin",
            "AWS_SECRET_ACCESS_KEY": "admin-secret", "XDG_STATE_HOME": str(state),
            **RECORDER_ENV, **extra}


def tsops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops; never a secret on its command line."""
    result = subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                            text=True, env=env, check=False, timeout=HANG)
    assert "rec-secret-value" not in result.stdout + result.stderr
    return result


def bootstrap(env: dict[str, str], inventory: Path) -> None:
    """A bootstrap that must succeed."""
    result = tsops(env, "bootstrap", "--yes", "--no-input", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr


def main_pids(hosts: list[LabHost]) -> list[str]:
    """Each recorder unit's main PID (a restart changes it)."""
    return [h.nsenter("systemctl show -p MainPID --value tsrecorder").stdout.strip()
            for h in hosts]


def local_recordings(hosts: list[LabHost], directory: str = OLD_DIR) -> dict[str, str]:
    """Every recording key in the hosts' directories, with its SHA-256."""
    found: dict[str, str] = {}
    for host in hosts:
        listing = host.nsenter(f"cd {directory} && find . -mindepth 2 -name '*.cast' "
                               "-exec sha256sum {} +", check=False).stdout
        for line in listing.splitlines():
            digest, name = line.split(maxsplit=1)
            found[name.removeprefix("./")] = digest
    return found


def bucket_recordings(s3: S3Server, bucket: str) -> dict[str, str]:
    """Every recording key in the bucket, with the SHA-256 of its bytes."""
    client = s3.client()
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".cast"):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found[item["Key"]] = hashlib.sha256(body).hexdigest()
    return found


class SessionGenerator(threading.Thread):
    """Opens a recorded session to web1 every 0.2 s until stopped; keeps every result."""

    def __init__(self, tailnet: LabTailnet) -> None:
        super().__init__(daemon=True)
        self.tailnet = tailnet
        self.results: list[SessionResult] = []
        self.halt = threading.Event()

    def run(self) -> None:
        """The loop (stops on halt)."""
        number = 0
        while not self.halt.is_set():
            number += 1
            output = shell_output("alice@web1:~$ ", [(f"echo {number}", f"{number}\n")])
            self.results.append(run_session(self.tailnet.control, "web1", ALICE, "alice",
                                            output))
            self.halt.wait(0.2)

    def recorded(self) -> list[SessionResult]:
        """The sessions recorded so far."""
        return [r for r in self.results if r.outcome is Outcome.RECORDED]

    def wait_for(self, count: int, timeout: float = HANG) -> None:
        """Wait until `count` sessions were recorded."""
        deadline = time.monotonic() + timeout
        while len(self.recorded()) < count:
            assert time.monotonic() < deadline, [(r.outcome, r.failure) for r in self.results]
            time.sleep(0.1)

    def stop(self) -> list[SessionResult]:
        """Stop and return every result."""
        self.halt.set()
        self.join(timeout=HANG)
        return self.results


def start_sessions(tailnet: LabTailnet) -> SessionGenerator:
    """The SSH policy that enforces recording, web1 in the tailnet, the generator running."""
    tailnet.control.state.seed_policy(SSH_POLICY)
    register_server(tailnet.control)
    generator = SessionGenerator(tailnet)
    generator.start()
    generator.wait_for(3)
    return generator


def check_sessions(results: list[SessionResult], restarts: int,
                   stored: dict[str, str]) -> None:
    """None refused or unrecorded; every recorded one stored with its bytes; at most one cut
    per restart.

    tsrecorder has no graceful drain: an upload in flight on the recorder being restarted is
    cut (the session ends), as with the real recorder; new sessions go to the other one. A
    moment with no recorder online would not refuse sessions but run them unrecorded (Tailscale
    SSH fails open then), so an unrecorded session is a failure of the rotation too.
    """
    outcomes = [r.outcome for r in results]
    assert Outcome.REFUSED not in outcomes, [(r.outcome, r.attempts) for r in results]
    assert Outcome.UNRECORDED not in outcomes, [(r.outcome, r.attempts) for r in results]
    assert outcomes.count(Outcome.ENDED) <= restarts, outcomes
    recorded = [r for r in results if r.outcome is Outcome.RECORDED]
    assert recorded
    for session in recorded:
        assert session.key is not None
        assert stored.get(session.key) == hashlib.sha256(session.sent).hexdigest(), session.key


@pytest.mark.lab(hosts=2)
def test_local_directory_to_s3_with_sessions_throughout(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, tmp_path: Path
) -> None:
    for host in lab.hosts:
        allow_port_80(host)
    names = [h.name for h in lab.hosts]
    inventory = write_inventory(tailnet, tmp_path, names,
                                {"destination": OLD_DIR, "min_free_gb": 0})
    env = tsops_env(tailnet, tmp_path / "state")
    bootstrap(env, inventory)
    generator = start_sessions(tailnet)
    rotate = ("rotate-storage", str(inventory), "--to", "s3://lab-new", "--endpoint",
              lab_s3.endpoint, "--access-key-env", "LAB_RECORDER_KEY_ID",
              "--secret-key-env", "LAB_RECORDER_SECRET")

    before = inventory.read_bytes()
    dry = tsops(env, *rotate, "--dry-run", "--migrate")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    print(dry.stdout, dry.stderr)
    assert "dry run: nothing was changed" in dry.stdout
    assert "+  destination: s3://lab-new  # see the runbook" in dry.stdout
    assert inventory.read_bytes() == before
    assert "lab-new" not in [b["Name"] for b in lab_s3.client().list_buckets()["Buckets"]]

    pids = main_pids(lab.hosts)
    started = time.monotonic()
    result = tsops(env, *rotate, "--migrate", "--yes", "--no-input")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    recorded_before = len(generator.recorded())
    generator.wait_for(recorded_before + 3)
    results = generator.stop()
    print(f"rotation took {took:.1f} s; {len(results)} sessions: "
          f"{[o.value for o in {r.outcome for r in results}]}")

    assert main_pids(lab.hosts) != pids  # both restarted
    text = inventory.read_text()
    assert "  destination: s3://lab-new  # see the runbook\n" in text
    assert "# Where the auditors look.\nstorage:\n" in text
    assert "secret" not in text.replace("secret_access_key", "")  # names, never values
    for host in lab.hosts:
        unit = host.nsenter("cat /etc/systemd/system/tsrecorder.service").stdout
        assert "--bucket=lab-new" in unit
    assert "every recording of" in result.stdout and "0 failed" in result.stdout

    source = local_recordings(lab.hosts)
    stored = bucket_recordings(lab_s3, "lab-new")
    assert source and all(stored.get(key) == digest for key, digest in source.items())
    check_sessions(results, restarts=2, stored=stored)

    # Idempotent: the same command again changes nothing, restarts nothing.
    text_before, pids = inventory.read_bytes(), main_pids(lab.hosts)
    again = tsops(env, *rotate, "--yes", "--no-input")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout
    assert (inventory.read_bytes(), main_pids(lab.hosts)) == (text_before, pids)
    resumed = tsops(env, *rotate, "--migrate", "--yes", "--no-input")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(source)} recording(s)" in resumed.stdout
    assert f": 0 copied (0 B), {len(source)} already present, 0 failed" in resumed.stdout

    # The explicit last step: the old directories emptied, each file verified in the bucket.
    delete = ("rotate-storage", str(inventory), "--delete-source", OLD_DIR)
    planned = tsops(env, *delete, "--dry-run")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"{len(source)} recording(s) to remove, each present at s3://lab-new" in (
        planned.stdout)
    assert local_recordings(lab.hosts) == source
    deleted = tsops(env, *delete, "--yes", "--no-input")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert f"deleted {len(source)} recording(s)" in deleted.stdout
    assert local_recordings(lab.hosts) == {}
    assert bucket_recordings(lab_s3, "lab-new") == stored


def seed(s3: S3Server, bucket: str, count: int) -> dict[str, str]:
    """`count` recordings of a few KB in the bucket, as older sessions; their SHA-256."""
    client = s3.client()
    digests = {}
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    for number in range(count):
        when = start + datetime.timedelta(minutes=number)
        key = f"nNODE{number % 7}CNTRL/{when:%Y-%m-%dT%H:%M:%S.000000Z}.cast"
        body = (b'{"version": 2, "width": 80, "height": 24}\n'
                + b"".join(b'[%d.0, "o", "line %d of %d\\r\\n"]\n' % (i, i, number)
                           for i in range(40 + number % 50)))
        client.put_object(Bucket=bucket, Key=key, Body=body)
        digests[key] = hashlib.sha256(body).hexdigest()
    return digests


def record_lines(state: Path) -> int:
    """Recordings verified so far in the rotation record (its lines after the header)."""
    records = list((state / "tsops" / "rotations").glob("*.jsonl"))
    if not records:
        return 0
    return max(0, len(records[0].read_text().splitlines()) - 1)


@pytest.mark.lab(hosts=2)
def test_bucket_to_bucket_with_sessions_and_an_interrupted_migration(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, tmp_path: Path
) -> None:
    for host in lab.hosts:
        allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path, [h.name for h in lab.hosts],
                                s3_storage(lab_s3, "lab-a"))
    state = tmp_path / "state"
    env = tsops_env(tailnet, state)
    bootstrap(env, inventory)
    old = seed(lab_s3, "lab-a", 600)
    generator = start_sessions(tailnet)
    rotate = [sys.executable, "-m", "tsops", "rotate-storage", str(inventory), "--to",
              "s3://lab-b", "--migrate", "--yes", "--no-input", "--concurrency", "2"]

    # Ctrl-C once the migration has verified 50 recordings.
    process = subprocess.Popen(rotate, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + HANG
    while record_lines(state) < 50 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=HANG)
    assert process.returncode == 130, out + err
    assert "interrupted" in err and "rerun to copy only what is missing" in err
    assert "  destination: s3://lab-b  # see the runbook\n" in inventory.read_text()
    verified = record_lines(state)
    assert 50 <= verified < 600
    record = next((state / "tsops" / "rotations").glob("*.jsonl"))
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    assert oct(record.parent.stat().st_mode & 0o777) == "0o700"

    source_after_switch = bucket_recordings(lab_s3, "lab-a")
    versions = lab_s3.client().list_object_versions(Bucket="lab-a").get("Versions", [])
    resumed = tsops(env, *rotate[3:])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "nothing to do" in resumed.stdout
    recorded_before = len(generator.recorded())
    generator.wait_for(recorded_before + 3)
    results = generator.stop()
    summary = re.search(r"migration s3://lab-a -> s3://lab-b: (\d+) recording\(s\), .*?: "
                        r"(\d+) copied \(.*?\), (\d+) already present, (\d+) failed",
                        resumed.stdout)
    assert summary is not None, resumed.stdout
    total, copied, present, failed = (int(g) for g in summary.groups())
    assert (total, failed) == (len(source_after_switch), 0)
    assert present >= verified and copied == total - present
    print(f"interrupted after {verified} verified; the rerun: {summary.group(0)}; "
          f"{len(generator.results)} sessions: {sorted({r.outcome.value for r in results})}")

    # Nothing was written to the source; everything is in B with the same SHA-256.
    assert bucket_recordings(lab_s3, "lab-a") == source_after_switch
    assert lab_s3.client().list_object_versions(Bucket="lab-a").get("Versions", []) == versions
    in_b = bucket_recordings(lab_s3, "lab-b")
    assert all(in_b.get(k) == d for k, d in source_after_switch.items())
    assert all(in_b[k] == d for k, d in old.items())
    check_sessions(results, restarts=2, stored=in_b)
    planned = tsops(env, "rotate-storage", str(inventory), "--delete-source", "s3://lab-a",
                    "--dry-run")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"{len(source_after_switch)} recording(s) to remove" in planned.stdout


def tls_moto(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Plain moto with TLS on loopback (a self-signed certificate for 127.0.0.1), started
    without the lab's launcher: a TLS-only bucket policy refuses every object write."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "moto.crt", tmp_path / "moto.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    port = free_port("127.0.0.1")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
         str(port), "-c", str(cert_path), "-k", str(key_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(cert_path))
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1,
                                        context=context):
                break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
    return process, endpoint, cert_path


@pytest.mark.lab(hosts=1)
def test_an_unwritable_new_bucket_stops_the_rotation(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path, [host.name],
                                {"destination": OLD_DIR, "min_free_gb": 0})
    env = tsops_env(tailnet, tmp_path / "state")
    bootstrap(env, inventory)
    process, endpoint, cert = tls_moto(tmp_path)
    try:
        before, pids = inventory.read_bytes(), main_pids([host])
        # Over TLS the bucket gets DenyInsecureTransport; moto on its own (not through the
        # lab's launcher, tests/lab/moto_launcher.py) applies a deny statement without its
        # condition, so every object write is refused: a bucket that is not writable. The
        # recorder gets static keys: without them the health gate writes its canary from the
        # recorder host with an instance role, which no lab host has ("not verified").
        result = tsops({**env, "AWS_CA_BUNDLE": str(cert)}, "rotate-storage", str(inventory),
                       "--to", "s3://lab-locked", "--endpoint", endpoint, "--region",
                       "us-east-1", "--access-key-env", "LAB_RECORDER_KEY_ID",
                       "--secret-key-env", "LAB_RECORDER_SECRET", "--yes", "--no-input")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rotation stopped before any recorder was changed" in result.stderr
    assert "lab-locked is not writable as the recorder writes" in result.stderr
    assert f"The recorders still write to {OLD_DIR}; the inventory is unchanged" in (
        result.stderr.replace("\n", " "))
    assert inventory.read_bytes() == before
    assert main_pids([host]) == pids
    assert "--dst=/srv/recordings" in host.nsenter(
        "cat /etc/systemd/system/tsrecorder.service").stdout

    tailnet.control.state.seed_policy(SSH_POLICY)
    register_server(tailnet.control)
    session = run_session(tailnet.control, "web1", ALICE, "alice",
                          shell_output("alice@web1:~$ ", [("uptime", "up 3 days\n")]))
    assert session.outcome is Outcome.RECORDED and session.key is not None
    assert host.nsenter(f"cat {OLD_DIR}/{session.key}").stdout.encode() == session.sent


@pytest.mark.lab(hosts=1)
def test_one_recorder_under_enforcement_needs_yes_and_reports_the_gap(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path, [host.name],
                                {"destination": OLD_DIR, "min_free_gb": 0})
    yaml = YAML()
    document = yaml.load(inventory.read_text())
    document["ssh_rules"] = [{"name": "servers-recorded", "src": ["autogroup:member"],
                              "dst": ["tag:server"], "users": ["root"],
                              "enforce_recorder": True}]
    document["policy"] = {"source": "api", "state_dir": str(tmp_path / "policy-state")}
    with inventory.open("w") as out:
        yaml.dump(document, out)
    env = tsops_env(tailnet, tmp_path / "state")
    bootstrap(env, inventory)
    rotate = ("rotate-storage", str(inventory), "--to", "/srv/recordings-2027")

    before, pids = inventory.read_bytes(), main_pids([host])
    refused = tsops(env, *rotate, "--no-input")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "warning: only 1 recorder accepts sessions now and ssh rules enforce" in (
        refused.stderr)
    assert "sessions will be refused during the restart" in refused.stderr
    assert (inventory.read_bytes(), main_pids([host])) == (before, pids)

    done = tsops(env, *rotate, "--yes", "--no-input")
    assert done.returncode == 0, done.stdout + done.stderr
    gap = re.search(r"recording gap: at most ([0-9.]+) s", done.stdout)
    assert gap is not None, done.stdout
    assert 0 < float(gap.group(1)) < 60
    print(f"single recorder: {gap.group(0)}")
    assert host.nsenter("stat -c '%U %a' /srv/recordings-2027").stdout.strip() == (
        "tsrecorder 700")
    tailnet.control.state.seed_policy(SSH_POLICY)
    register_server(tailnet.control)
    session = run_session(tailnet.control, "web1", ALICE, "alice",
                          shell_output("alice@web1:~$ ", [("uptime", "up 3 days\n")]))
    assert session.outcome is Outcome.RECORDED and session.key is not None
    assert host.nsenter(f"cat /srv/recordings-2027/{session.key}").stdout.encode() == (
        session.sent)


@pytest.mark.lab(hosts=2)
def test_a_recorder_failing_after_its_restart_puts_every_switched_one_back(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    for host in lab.hosts:
        allow_port_80(host)
    inventory = write_inventory(tailnet, tmp_path, [h.name for h in lab.hosts],
                                {"destination": OLD_DIR, "min_free_gb": 0})
    env = tsops_env(tailnet, tmp_path / "state")
    bootstrap(env, inventory)
    generator = start_sessions(tailnet)
    before = inventory.read_bytes()
    with S3Server(host=lab.gateway) as doomed:
        doomed.trust_on(lab.hosts)
        # The new store goes away once host1 is switched: host2's recorder cannot open it
        # after its restart, so its health gate fails and both go back.
        process = subprocess.Popen(
            [sys.executable, "-m", "tsops", "rotate-storage", str(inventory), "--to",
             "s3://lab-doomed", "--endpoint", doomed.endpoint,
             "--access-key-env", "LAB_RECORDER_KEY_ID", "--secret-key-env",
             "LAB_RECORDER_SECRET", "--yes", "--no-input"],
            env={**env, **doomed.client_environment()}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        progress = []
        for line in process.stderr:
            progress.append(line)
            if line.startswith(f"{lab.hosts[0].name}: changed"):
                doomed.stop()
        out, _ = process.communicate(timeout=HANG)
    stderr = "".join(progress)
    assert process.returncode == 1, out + stderr
    first, second = (h.name for h in lab.hosts)
    assert f"rotation stopped: {second}: health: tsrecorder.service is" in stderr
    assert (f"Back on {OLD_DIR} and verified healthy: {second}, {first}. The inventory is "
            "unchanged.") in stderr.replace("\n", " ")
    assert inventory.read_bytes() == before
    for host in lab.hosts:
        assert f"--dst={OLD_DIR}" in host.nsenter(
            "cat /etc/systemd/system/tsrecorder.service").stdout
    recorded_before = len(generator.recorded())
    generator.wait_for(recorded_before + 3)
    results = generator.stop()
    print(f"{len(results)} sessions: "
          f"{ {o.value: [r.outcome for r in results].count(o) for o in Outcome} }")
    assert Outcome.REFUSED not in [r.outcome for r in results]
    stored = local_recordings(lab.hosts)
    after = generator.recorded()[recorded_before:]
    assert after and all(stored.get(s.key or "") == hashlib.sha256(s.sent).hexdigest()
                         for s in after)
