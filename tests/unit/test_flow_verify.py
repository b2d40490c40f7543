"""The verify flow with fakes: a tailnet whose sessions land at a destination, or do not.

The fakes refuse anything not scripted: a host answers only the commands given to it, the API
only lists devices, so a flow that touches more than it should fails loudly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from tsops.canary import MARKER_RE
from tsops.context import RunContext
from tsops.errors import ExitCode, UsageError
from tsops.events import Recorded
from tsops.flows.verify import verify
from tsops.inventory.load import LoadedInventory, Target, load_inventory
from tsops.remote import HostUnreachable, RunResult
from tsops.tailnet_ssh import SessionResult
from tsops.tailscale_api import Device, PolicyValidation

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DESTINATION = "/var/lib/tsrecorder/recordings"
BUCKET = "acme-recordings"
INVENTORY = f"""\
version: 1
tailnet:
  name: example.com
  credentials: {{api_token: {{env: TS_API_TOKEN}}}}
tailscale:
  install: {{method: preinstalled}}
servers:
  tags: [tag:server]
  hosts:
    web1: {{tags: [tag:web]}}
    db1: {{tags: [tag:db]}}
recorders:
  hosts: {{rec1: }}
storage:
  destination: {DESTINATION}
ssh_rules:
  - name: servers
    src: [autogroup:member]
    dst: [tag:server]
    users: [root]
"""


def device(name: str, address: str, tags: tuple[str, ...] = ("tag:server",)) -> Device:
    """An enrolled, connected device of that hostname."""
    return Device(id=f"id-{name}", node_id=f"n{name.upper()}CNTRL",
                  name=f"{name}.tail1.ts.net", hostname=name, tags=tags,
                  addresses=(address, "fd7a:115c:a1e0::1"), authorized=True,
                  connected_to_control=True)


DEVICES = [device("web1", "100.64.0.1", ("tag:server", "tag:web")),
           device("db1", "100.64.0.2", ("tag:server", "tag:db")),
           device("rec1", "100.64.0.9", ("tag:recorder",))]

Answer = RunResult | Exception | Callable[[str], RunResult]


class Host:
    """A host that answers the commands scripted for it and refuses any other."""

    def __init__(self, name: str, script: dict[str, Answer] | None = None,
                 prefix: dict[str, Answer] | None = None) -> None:
        self.name = name
        self.script = script or {}
        self.prefix = prefix or {}  # answers for commands that start with the key
        self.ran: list[str] = []
        self.round_trips = 0
        self.closed = False

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        self.round_trips += 1
        self.ran.append(script)
        answer = self.script.get(script)
        if answer is None:
            answer = next((a for p, a in self.prefix.items() if script.startswith(p)), None)
        if answer is None:
            raise AssertionError(f"{self.name}: unexpected command: {script[:80]!r}")
        if isinstance(answer, Exception):
            raise answer
        return answer(script) if callable(answer) else answer

    def put(self, local: Path, remote: str) -> None:
        raise AssertionError(f"{self.name}: unexpected upload of {local}")

    def close(self) -> None:
        self.closed = True


class Api:
    """A tailnet's devices; the flows under test may list them and delete one, nothing else."""

    def __init__(self, devices: list[Device]) -> None:
        self.devices = list(devices)
        self.deleted: list[str] = []
        self.closed = False

    def list_devices(self) -> list[Device]:
        return list(self.devices)

    def delete_device(self, device_id: str) -> None:
        self.deleted.append(device_id)
        self.devices = [d for d in self.devices if d.id != device_id]

    def validate_policy(self, text: str) -> PolicyValidation:
        return PolicyValidation()

    def create_auth_key(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("no auth key may be minted here")

    def close(self) -> None:
        self.closed = True


class Tailnet:
    """Tailscale SSH sessions: each prints its marker, and is recorded unless refused.

    A recorded session's marker is kept under its server's node ID, where a destination fake
    (a recorder host, a bucket) finds it.
    """

    def __init__(self, devices: list[Device], refuse: frozenset[str] = frozenset(),
                 record: Callable[[str, str], None] | None = None) -> None:
        self.by_address = {d.addresses[0]: d for d in devices}
        self.refuse = refuse
        self.recorded: dict[str, list[str]] = {}
        self.record = record
        self.sessions: list[tuple[str, str]] = []

    def __call__(self, address: str, user: str, command: str, timeout: float) -> SessionResult:
        server = self.by_address[address]
        self.sessions.append((server.hostname, user))
        if server.hostname in self.refuse:
            return SessionResult(1, "", "recording: no recorder accepted the session\n")
        match = MARKER_RE.search(command)
        assert match is not None and command == f"echo {match.group()}"
        self.recorded.setdefault(server.node_id, []).append(match.group())
        if self.record is not None:
            self.record(server.node_id, match.group())
        return SessionResult(0, match.group() + "\n", "")

    def found(self, script: str) -> RunResult:
        """What the recorder's find script prints: `<path>:<marker>` of each recording."""
        assert script.startswith("for d in ")
        lines = [f"{DESTINATION}/{node}/2026-12-01T00:00:00Z.cast:{marker}"
                 for node, markers in self.recorded.items() for marker in markers
                 if marker in script and f"{DESTINATION}/{node}" in script]
        return RunResult(0, "".join(f"{line}\n" for line in lines), "")


def inventory_at(tmp_path: Path, text: str = INVENTORY) -> LoadedInventory:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return load_inventory(path)


def context_for(inventory: LoadedInventory, hosts: dict[str, Host], api: Api,
                events: Recorded | None = None, s3: S3Client | None = None,
                targets: tuple[Target, ...] | None = None) -> RunContext:
    """A run over fakes: SSH to `hosts` only, this API, this S3 client."""

    def connect(target: Target) -> Host:
        if target.name not in hosts:
            raise AssertionError(f"no SSH connection to {target.name} was expected")
        return hosts[target.name]

    return RunContext(inventory, inventory.servers if targets is None else targets,
                      events or Recorded(), concurrency=4, connect=connect,
                      api_factory=lambda context: api,  # type: ignore[arg-type,return-value]
                      s3_factory=(None if s3 is None else lambda storage, keys: s3))


def test_every_server_recorded_is_exit_0_with_a_step_line_per_canary(tmp_path: Path) -> None:
    tailnet = Tailnet(DEVICES)
    recorder = Host("rec1", prefix={"for d in ": tailnet.found})
    events = Recorded()
    api = Api(DEVICES)
    with context_for(inventory_at(tmp_path), {"rec1": recorder}, api, events) as context:
        report = verify(context, None, timeout=30, session=tailnet)
    assert report.exit_code == ExitCode.OK
    assert [(r.host, r.state, r.user) for r in report.results] == [
        ("web1", "recorded", "root"), ("db1", "recorded", "root")]
    assert report.results[0].key == "nWEB1CNTRL/2026-12-01T00:00:00Z.cast"
    assert events.of("step") == ["web1: canary session as root@100.64.0.1",
                                 "db1: canary session as root@100.64.0.2"]
    # One search found both; the servers themselves were never reached over management SSH.
    assert len(recorder.ran) == 1 and recorder.closed and api.closed
    assert sorted(tailnet.sessions) == [("db1", "root"), ("web1", "root")]


def test_a_refused_session_is_drift_exit_3(tmp_path: Path) -> None:
    tailnet = Tailnet(DEVICES, refuse=frozenset({"db1"}))
    recorder = Host("rec1", prefix={"for d in ": tailnet.found})
    with context_for(inventory_at(tmp_path), {"rec1": recorder}, Api(DEVICES)) as context:
        report = verify(context, "deploy", timeout=30, session=tailnet)
    states = {r.host: (r.state, r.detail) for r in report.results}
    assert states["web1"][0] == "recorded"
    assert states["db1"] == ("refused", "the session as deploy exited 1: recording: no recorder "
                                        "accepted the session")
    assert report.exit_code == ExitCode.DRIFT


def test_an_unreachable_destination_or_a_missing_device_is_exit_1(tmp_path: Path) -> None:
    tailnet = Tailnet(DEVICES)
    recorder = Host("rec1", prefix={"for d in ": HostUnreachable("rec1", "connection refused")})
    devices = [d for d in DEVICES if d.hostname != "db1"]
    with context_for(inventory_at(tmp_path), {"rec1": recorder}, Api(devices)) as context:
        report = verify(context, None, timeout=30, session=tailnet)
    states = {r.host: (r.state, r.detail) for r in report.results}
    assert states["web1"] == ("error", f"cannot search {DESTINATION} on rec1: rec1: connection "
                                       "refused")
    assert states["db1"][0] == "error" and "no single device" in states["db1"][1]
    assert report.exit_code == ExitCode.FAILED
    assert [name for name, _ in tailnet.sessions] == ["web1"]  # db1 had no address to try


def test_an_inventory_without_rules_is_refused_before_anything_is_asked(tmp_path: Path) -> None:
    inventory = inventory_at(tmp_path, INVENTORY.split("ssh_rules:")[0])

    def no_api(context: RunContext) -> Any:
        raise AssertionError("the API must not be asked")

    context = RunContext(inventory, inventory.servers, Recorded(), api_factory=no_api)
    with pytest.raises(UsageError, match="has no ssh_rules"):
        verify(context, None, 30, session=Tailnet(DEVICES))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    """An in-process moto S3 with the recordings bucket."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def s3_inventory(tmp_path: Path) -> LoadedInventory:
    return inventory_at(tmp_path, INVENTORY.replace(
        f"destination: {DESTINATION}", f"destination: s3://{BUCKET}\n  region: us-east-1"))


def test_the_canary_is_found_in_the_bucket_through_the_recordings_store(
        tmp_path: Path, s3: S3Client) -> None:
    # Someone else's recording of web1 that prints a marker too: read, not taken for ours.
    s3.put_object(Bucket=BUCKET, Key="nWEB1CNTRL/earlier.cast",
                  Body=b'{"version": 2}\n[0.1, "o", "tsops-canary-0000000000000000"]\n')
    s3.put_object(Bucket=BUCKET, Key="nWEB1CNTRL/notes.txt", Body=b"not a recording")

    def record(node: str, marker: str) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"{node}/{time.time_ns()}.cast",
                      Body=f'{{"version": 2}}\n[0.1, "o", "{marker}\\r\\n"]\n'.encode())

    tailnet = Tailnet(DEVICES, record=record)
    with context_for(s3_inventory(tmp_path), {}, Api(DEVICES), s3=s3) as context:
        report = verify(context, None, timeout=30, session=tailnet)
    assert report.exit_code == ExitCode.OK
    for result in report.results:
        assert result.key is not None and result.key.startswith(f"{result.node_id}/")
        assert result.key.endswith(".cast") and result.key != "nWEB1CNTRL/earlier.cast"


def test_a_bucket_the_operator_cannot_read_is_an_error_naming_the_permissions(
        tmp_path: Path) -> None:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="y")
    with Stubber(client) as stub:
        stub.add_client_error("list_objects_v2", service_error_code="AccessDenied",
                              service_message="Access Denied", http_status_code=403)
        with context_for(s3_inventory(tmp_path), {}, Api(DEVICES), s3=client,
                         targets=s3_inventory(tmp_path).servers[:1]) as context:
            report = verify(context, None, timeout=30, session=Tailnet(DEVICES))
        stub.assert_no_pending_responses()
    (result,) = report.results
    assert result.state == "error"
    assert result.detail == (f"cannot search s3://{BUCKET}: access denied (403): reading "
                             "recordings needs s3:ListBucket and s3:GetObject for your AWS "
                             "credentials")
    assert report.exit_code == ExitCode.FAILED
