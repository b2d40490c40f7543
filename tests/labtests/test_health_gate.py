"""The health gate against an S3 that checks credentials (moto with IAM enforcement on).

The recorder's principal has exactly the policy `tsops recorder iam-policy` prints for the
inventory (never a copy of it); the operator's credentials are a separate admin principal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab, LabHost
from tests.lab.s3 import S3Server
from tests.lab.tailnet import RECORDED_RULE, TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_recorder import BUCKET, s3_storage, write_inventory
from tests.sim.recorder.bundle import allow_port_80, build_executable
from tsops.inventory.model import Storage
from tsops.recorders.gate import HOW_HOST, HOW_STATIC, Gate, canary_key
from tsops.remote import RunResult

WRONG_SECRET = "not-the-recorders-secret"


@pytest.fixture
def iam_s3(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto on the lab bridge over HTTPS, checking every request's credentials (IAM on)."""
    with S3Server(host=lab.gateway, iam=True) as server:
        server.trust_on(lab.hosts)
        for name, value in server.client_environment().items():
            monkeypatch.setenv(name, value)
        yield server


def tsops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=600)


def enforcing_inventory(tailnet: LabTailnet, folder: Path, host: LabHost,
                        s3: S3Server) -> Path:
    """One recorder on S3 with its own keys (from the environment) and an enforcing rule."""
    path = write_inventory(tailnet, folder / "inventory.yaml", [host.name], s3_storage(s3),
                           build_executable(folder / "tsrecorder"))
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["ssh_rules"] = [dict(RECORDED_RULE)]
    document["policy"] = {"source": "api", "state_dir": str(folder / "policy-state")}
    with path.open("w") as out:
        yaml.dump(document, out)
    return path


def report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def enforced(tailnet: LabTailnet) -> bool:
    """Whether the tailnet's policy file carries enforceRecorder: true anywhere."""
    return '"enforceRecorder": true' in tailnet.control.policy().text


@pytest.mark.lab(hosts=1)
def test_the_gate_passes_with_exactly_the_printed_policy_and_fails_on_a_wrong_secret(
    lab: Lab, tailnet: LabTailnet, iam_s3: S3Server, tmp_path: Path
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    inventory = enforcing_inventory(tailnet, tmp_path, host, iam_s3)
    env = {**os.environ, **iam_s3.operator_environment(), TOKEN_VARIABLE: tailnet.token}
    printed = tsops(env, "recorder", "iam-policy", str(inventory))
    assert printed.returncode == 0, printed.stderr
    key_id, secret = iam_s3.iam_user("recorder", printed.stdout)  # exactly what tsops prints
    bootstrap = ("bootstrap", "--yes", "--no-input", "-o", "json", str(inventory))

    # A wrong secret: the recorder itself stops at startup (its bucket check is refused), so
    # the gate fails with one line naming why; no enforceRecorder is written.
    wrong = tsops({**env, "LAB_RECORDER_KEY_ID": key_id, "LAB_RECORDER_SECRET": WRONG_SECRET},
                  *bootstrap)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    (host_result,) = report(wrong)["recorders"]["hosts"]
    assert (host_result["outcome"], host_result["healthy"]) == ("failed", False), host_result
    reason = host_result["reason"]
    assert "its last log line: " in reason and "SignatureDoesNotMatch" in reason, reason
    assert "\n" not in reason
    assert "refusing to write enforceRecorder: true" in report(wrong)["policy"]["error"]
    assert not enforced(tailnet)
    assert WRONG_SECRET not in wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr

    # The recorder's own keys, exactly that policy: verified, and the rule enforces.
    right_env = {**env, "LAB_RECORDER_KEY_ID": key_id, "LAB_RECORDER_SECRET": secret}
    plan = tsops(right_env, "plan", str(inventory))
    assert f"health gate: canary object written {HOW_STATIC}" in plan.stdout, plan.stdout
    first = tsops(right_env, *bootstrap)
    assert first.returncode == 0, first.stdout + first.stderr
    (host_result,) = report(first)["recorders"]["hosts"]
    assert host_result["healthy"] and host_result["verification"] == "verified"
    assert host_result["verified_how"] == HOW_STATIC
    assert enforced(tailnet)
    admin = iam_s3.client()
    assert admin.get_object(Bucket=BUCKET, Key=canary_key(host.name))["Body"].read().startswith(
        f"tsops canary {host.name} ".encode())

    # A second bootstrap with the bucket policy in place: works, no AccessDenied anywhere.
    second = tsops(right_env, *bootstrap)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "AccessDenied" not in second.stdout + second.stderr
    assert report(second)["recorders"]["storage"]["outcome"] == "unchanged"
    assert [h["healthy"] for h in report(second)["recorders"]["hosts"]] == [True]

    # The canary itself, with a wrong secret for the recorder's key: refused, saying so.
    storage = Storage.model_validate(s3_storage(iam_s3))
    with_wrong = Gate(storage, "binary", "podman", lambda _s, keys: iam_s3.client() if keys
                      is None else principal(iam_s3, keys), (key_id, WRONG_SECRET))
    refused = with_wrong.check(host.name, None)
    assert refused.line == (f"failed: bucket {BUCKET} is not writable as the recorder "
                            "writes (its keys): SignatureDoesNotMatch")

    # Without static keys the canary goes from the recorder host itself: this lab host has
    # no instance metadata service, so the recorder is "not verified", saying why.
    storage = Storage.model_validate(s3_storage(iam_s3) | {"credentials": None})
    gate = Gate(storage, "binary", "podman", lambda _s, keys: iam_s3.client(), None)
    result = gate.check(host.name, NsenterRemote(host))
    assert result.verdict == "not verified" and result.how == HOW_HOST
    assert "no instance metadata service answered at 169.254.169.254" in result.detail

    # With one (the lab's stand-in on the host's own loopback, serving the recorder's keys
    # as a role's), the same canary is put from the host, signed there, and verified.
    serve_instance_metadata(host, key_id, secret)
    result = gate.check(host.name, NsenterRemote(host))
    assert result.verified, result.line
    assert result.how == HOW_HOST


def principal(s3: S3Server, keys: tuple[str, str]) -> Any:
    """A boto3 S3 client of the lab's S3 with these keys."""
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint, verify=str(s3.ca_bundle),
                        region_name="us-east-1", aws_access_key_id=keys[0],
                        aws_secret_access_key=keys[1])


class NsenterRemote:
    """tsops's connection interface over the lab's nsenter (as root on the host)."""

    round_trips = 0

    def __init__(self, host: LabHost) -> None:
        self.host = host
        self.name = host.name

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        done = self.host.nsenter(script, check=False, input=stdin)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def put(self, local: Path, remote: str) -> None:
        raise AssertionError("no upload expected")

    def close(self) -> None:
        pass


IMDS = """\
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY, SECRET = sys.argv[1], sys.stdin.readline().strip()
TOKEN = "lab-imds-token"


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        ok = self.path == "/latest/api/token"
        self.reply(200 if ok else 404, TOKEN.encode() if ok else b"")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.reply(401)
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            return self.reply(200, b"lab-recorder")
        if self.path == base + "lab-recorder":
            return self.reply(200, json.dumps({"Code": "Success", "AccessKeyId": KEY,
                                               "SecretAccessKey": SECRET}, indent=2).encode())
        self.reply(404)


HTTPServer(("169.254.169.254", 80), Handler).serve_forever()
"""


def serve_instance_metadata(host: LabHost, key_id: str, secret: str) -> None:
    """An IMDSv2 stand-in on the host's own loopback (169.254.169.254, inside its namespace
    only), run by the host's systemd, giving these keys as an instance role's."""
    host.nsenter("cat > /run/lab-imds.py", input=IMDS)
    host.nsenter("ip addr add 169.254.169.254/32 dev lo")
    host.nsenter("umask 077; cat > /run/lab-imds.secret", input=secret + "\n")
    host.nsenter(f"systemd-run --unit lab-imds -p StandardInput=file:/run/lab-imds.secret "
                 f"python3 /run/lab-imds.py {key_id}")
    host.nsenter("for i in $(seq 50); do curl -sf -X PUT -o /dev/null "
                 "http://169.254.169.254/latest/api/token && exit 0; sleep 0.2; done; exit 1")
