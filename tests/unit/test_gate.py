"""The health gate's canary (tsops.recorders.gate): whose credentials write it, from where.

The from-host script is run here for real (sh and curl) against a local fake instance
metadata service and a fake S3 on loopback, which record what they were sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tsops.events import Recorded
from tsops.inventory.model import Storage
from tsops.recorders.gate import (
    HOW_EARLIER,
    HOW_HOST,
    HOW_STATIC,
    Gate,
    canary_key,
    host_canary_script,
    host_verdict,
    parse_host_canary,
)
from tsops.recorders.phase import RecorderPhaseResult, RecorderResult, StorageResult
from tsops.remote import RunResult

ROLE_KEY, ROLE_SECRET, ROLE_TOKEN = "ASIAROLEKEY", "role/secret+value", "session-token/xyz="
IMDS_TOKEN = "imds-token-123"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@dataclass
class Seen:
    """What the fake services were asked."""

    puts: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[tuple[str, str, str]] = field(default_factory=list)
    status: int = 200
    code: str = ""
    objects: dict[str, bytes] = field(default_factory=dict)


def serve(seen: Seen) -> ThreadingHTTPServer:
    """One loopback server: IMDSv2 under /latest, S3 (path style) under /<bucket>/<key>."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/latest/api/token":
                seen.metadata.append(("PUT", self.path, ""))
                self._send(200, IMDS_TOKEN.encode())
                return
            seen.puts.append({"path": self.path, "headers": dict(self.headers.items()),
                              "body": body})
            if seen.status == 200:
                seen.objects[self.path] = body
                self._send(200)
            else:
                self._send(seen.status, f"<?xml version='1.0'?>\n<Error><Code>{seen.code}"
                                        "</Code><Message>no</Message></Error>".encode())

        def do_GET(self) -> None:
            token = self.headers.get("X-aws-ec2-metadata-token", "")
            seen.metadata.append(("GET", self.path, token))
            if token != IMDS_TOKEN:
                self._send(401)
            elif self.path == "/latest/meta-data/iam/security-credentials/":
                self._send(200, b"lab-recorder-role")
            elif self.path == "/latest/meta-data/iam/security-credentials/lab-recorder-role":
                document = {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": ROLE_KEY,
                            "SecretAccessKey": ROLE_SECRET, "Token": ROLE_TOKEN,
                            "Expiration": "2030-01-01T00:00:00Z"}
                self._send(200, json.dumps(document, indent=2).encode())
            else:
                self._send(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def services() -> Iterator[tuple[Seen, str]]:
    seen = Seen()
    server = serve(seen)
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class LocalHost:
    """A recorder host that is this machine: scripts run with sh; what ran is kept."""

    name = "rec1"
    round_trips = 0

    def __init__(self, metadata: str) -> None:
        self.metadata = metadata
        self.ran: list[str] = []

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        script = script.replace("http://169.254.169.254/latest", self.metadata)
        self.ran.append(script)
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                              check=False, timeout=60, input=stdin)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def put(self, local: Path, remote: str) -> None:
        raise AssertionError("no upload")

    def close(self) -> None:
        pass


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def refused(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")


class Bucket:
    """A fake S3 bucket that knows which keys wrote each object."""

    def __init__(self, seen: Seen | None = None, wrong: tuple[str, str] | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.writers: dict[str, tuple[str, str] | None] = {}
        self.seen = seen
        self.wrong = wrong

    def client(self, storage: Storage, keys: tuple[str, str] | None) -> Any:
        bucket = self

        class Client:
            def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
                if keys is None:
                    raise AssertionError("the canary was put with the operator's credentials")
                if keys == bucket.wrong:
                    raise refused("SignatureDoesNotMatch")
                bucket.objects[Key], bucket.writers[Key] = Body, keys

            def get_object(self, Bucket: str, Key: str) -> dict[str, Body]:
                assert keys is None, "read back with the operator's credentials"
                if bucket.seen is not None:
                    return {"Body": Body(bucket.seen.objects[f"/{Bucket}/{Key}"])}
                return {"Body": Body(bucket.objects[Key])}

            def head_object(self, Bucket: str, Key: str) -> dict[str, str]:
                if Key not in bucket.objects:
                    raise ClientError({"Error": {"Code": "404", "Message": ""}}, "HeadObject")
                return {}

        return Client()


def s3_storage(endpoint: str = "https://s3.example.test") -> Storage:
    return Storage.model_validate({"destination": "s3://lab-recordings", "endpoint": endpoint,
                                   "region": "eu-west-1"})


def test_static_keys_write_the_canary_and_the_operator_only_reads_it() -> None:
    bucket, writes = Bucket(), Recorded()
    written: list[str] = []
    gate = Gate(s3_storage(), "binary", "podman", bucket.client, ("AKIDREC", "sec"),
                on_write=written.append)
    result = gate.check("rec1", remote=None)
    assert result.verified and result.how == HOW_STATIC
    assert bucket.writers == {canary_key("rec1"): ("AKIDREC", "sec")}
    assert result.line == ("canary s3://lab-recordings/tsops-canary/rec1 written and read back "
                           f"({HOW_STATIC})")
    assert written == ["put_object (canary)"] and writes.lines == []


def test_a_wrong_secret_fails_the_gate_with_one_line_naming_the_code() -> None:
    keys = ("AKIDREC", "wrong")
    result = Gate(s3_storage(), "binary", "podman", Bucket(wrong=keys).client, keys).check(
        "rec1", remote=None)
    assert not result.verified and result.verdict == "failed"
    assert result.line == ("failed: bucket lab-recordings is not writable as the recorder "
                           "writes (its keys): SignatureDoesNotMatch")
    assert "\n" not in result.line and "wrong" not in result.line


def test_a_canary_from_an_earlier_run_counts_only_when_present() -> None:
    bucket = Bucket()
    gate = Gate(s3_storage(), "binary", "podman", bucket.client, ("AKIDREC", "sec"))
    first = gate.check("rec1", remote=None, write=False)  # none yet: written now
    assert first.verified and first.how == HOW_STATIC and bucket.objects
    again = gate.check("rec1", remote=None, write=False)
    assert again.verified and again.how == HOW_EARLIER


def test_without_keys_and_without_a_connection_the_recorder_is_not_verified() -> None:
    result = Gate(s3_storage(), "binary", "podman", Bucket().client, None).check("rec1", None)
    assert result.verdict == "not verified" and not result.verified


@needs_curl
def test_without_keys_the_canary_is_put_from_the_host_with_its_instance_role(
        services: tuple[Seen, str]) -> None:
    seen, base = services
    storage = s3_storage(base)
    gate = Gate(storage, "binary", "podman", Bucket(seen).client, None)
    host = LocalHost(f"{base}/latest")
    result = gate.check("rec1", host)
    assert result.verified, result.line
    assert result.how == HOW_HOST
    [put] = seen.puts
    assert put["path"] == "/lab-recordings/tsops-canary/rec1"
    headers = {k.lower(): v for k, v in put["headers"].items()}
    # Signed (SigV4, S3, the storage's region) with the role's credentials and session token.
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={ROLE_KEY}/")
    assert "/eu-west-1/s3/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == ROLE_TOKEN
    assert headers["x-amz-content-sha256"] == hashlib.sha256(put["body"]).hexdigest()
    assert headers["content-md5"] == base64.b64encode(
        hashlib.md5(put["body"], usedforsecurity=False).digest()).decode()
    assert put["body"].startswith(b"tsops canary rec1 ")
    # Not curl's default form type (a form body is what some servers parse away).
    assert headers["content-type"] == "application/octet-stream"
    assert [m[:2] for m in seen.metadata] == [
        ("PUT", "/latest/api/token"), ("GET", "/latest/meta-data/iam/security-credentials/"),
        ("GET", "/latest/meta-data/iam/security-credentials/lab-recorder-role")]
    # No credential in the script tsops sent (they are fetched and used on the host).
    for secret in (ROLE_KEY, ROLE_SECRET, ROLE_TOKEN, IMDS_TOKEN):
        assert secret not in host.ran[0]


@needs_curl
def test_a_refused_write_from_the_host_fails_with_the_s3_error_code(
        services: tuple[Seen, str]) -> None:
    seen, base = services
    seen.status, seen.code = 403, "AccessDenied"
    result = Gate(s3_storage(base), "binary", "podman", Bucket(seen).client, None).check(
        "rec1", LocalHost(f"{base}/latest"))
    assert result.verdict == "failed"
    assert result.line == ("failed: bucket lab-recordings is not writable as the recorder "
                           "writes (from its host): HTTP 403 AccessDenied")


@needs_curl
def test_no_instance_metadata_means_not_verified_with_the_reason(
        services: tuple[Seen, str]) -> None:
    seen, base = services
    closed = "http://127.0.0.1:9/latest"  # discard port: nothing listens
    result = Gate(s3_storage(base), "binary", "podman", Bucket(seen).client, None).check(
        "rec1", LocalHost(closed))
    assert result.verdict == "not verified"
    assert "no instance metadata service answered" in result.detail
    assert "storage.credentials" in result.detail
    assert seen.puts == []


def test_the_container_runtime_writes_from_the_container_network_namespace() -> None:
    script = host_canary_script(s3_storage(), "container", "podman", "tsops-canary/rec1",
                                b"x\n")
    assert "podman inspect -f '{{.State.Pid}}' tsrecorder" in script
    assert 'IN="nsenter -t $pid -n"' in script
    assert script.count("$IN curl") == 3  # token, metadata, the canary PUT
    assert "--aws-sigv4 aws:amz:eu-west-1:s3 " in script
    assert "https://s3.example.test/lab-recordings/tsops-canary/rec1" in script


@pytest.mark.parametrize(("output", "expected"), [
    ("gate=written\ndetail=HTTP 200\n", ("written", "HTTP 200")),
    ("noise\ngate=refused\ndetail=HTTP 403 AccessDenied\ngate=x\n",
     ("refused", "HTTP 403 AccessDenied")),
    ("sh: 1: syntax error\n", ("", "sh: 1: syntax error")),
])
def test_parse_host_canary(output: str, expected: tuple[str, str]) -> None:
    assert parse_host_canary(output) == expected


def test_host_verdicts() -> None:
    assert host_verdict("written", "HTTP 200", HOW_HOST, "b") is None
    unreachable = host_verdict("unreachable", "curl: (7) refused", HOW_HOST, "b")
    assert unreachable is not None and unreachable.verdict == "failed"
    assert unreachable.detail == "the recorder host cannot reach S3: curl: (7) refused"
    unverifiable = host_verdict("unverifiable", "curl is not installed", HOW_HOST, "b")
    assert unverifiable is not None and unverifiable.line == (
        "not verified: curl is not installed")
    garbled = host_verdict("", "", HOW_HOST, "b")
    assert garbled is not None and garbled.verdict == "not verified"


def test_a_not_verified_recorder_fails_nothing_by_itself_but_is_not_healthy() -> None:
    storage = StorageResult("s3://b", "unchanged")
    unverified = RecorderResult("rec1", "unchanged", "health: not verified: no curl",
                                verification="not verified")
    failed = RecorderResult("rec1", "failed", "refused", verification="failed")
    assert not RecorderPhaseResult("tag:recorder", storage, [unverified]).failed
    assert not RecorderPhaseResult("tag:recorder", storage, [unverified]).healthy_tags
    assert RecorderPhaseResult("tag:recorder", storage, [failed]).failed


def test_the_last_log_line_is_the_recorders_own_output_on_one_line() -> None:
    from tsops.recorders.host import last_log_line

    probe = last_log_line()
    assert "_TRANSPORT=stdout" in probe.command and "-n 1" in probe.command
    assert probe.parse("bucket 'b': SignatureDoesNotMatch:  the\tsignature\n") == (
        "bucket 'b': SignatureDoesNotMatch: the signature")
    assert probe.parse("") == ""


def test_policy_steps_gate_a_tag_only_through_the_inventorys_own_recorders(
        tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.unit.test_flow_servers import DEVICES, healthy_recorder, run_for
    from tests.unit.test_flow_servers import write_inventory as write
    from tests.unit.test_flow_verify import Api
    from tsops.inventory.load import load_inventory
    from tsops.recorders.phase import verified_recorder_tags

    inventory = load_inventory(write(tmp_path))
    events = Recorded()
    rec1 = healthy_recorder("rec1")
    with run_for(inventory, {"rec1": rec1}, Api(DEVICES), events) as context:
        assert verified_recorder_tags(context, {"tag:elsewhere"}) == set()
        assert rec1.ran == []  # nothing to check: no recorder of this inventory carries it
        assert verified_recorder_tags(context, {"tag:recorder"}) == {"tag:recorder"}
    assert events.of("warning") == [
        "tag:elsewhere: not verified: no recorder in this inventory's recorders section "
        "carries it, so tsops cannot prove it writes recordings (online is not healthy)"]
    assert ("info", "recorder rec1: verified: /var/lib/tsrecorder/recordings writable"
            ) in events.lines

    # The same recorder, offline in the API: not healthy, and its host is not even contacted.
    offline = [replace(d, connected_to_control=False) if d.hostname == "rec1" else d
               for d in DEVICES]
    events, rec1 = Recorded(), healthy_recorder("rec1")
    with run_for(inventory, {"rec1": rec1}, Api(offline), events) as context:
        assert verified_recorder_tags(context, {"tag:recorder"}) == set()
    assert rec1.ran == []
    assert events.of("warning") == [
        "recorder rec1: NOT healthy: health: not online with tag:recorder (the API shows no "
        "connected device of that name)"]
