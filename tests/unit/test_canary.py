"""Canary sessions: planning, the wait for the recording, the folder search, the SSH seam."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.common import AUTH_FAILED, AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from tsops.canary import (
    MARKER_RE,
    BucketObjects,
    Canary,
    CanaryResult,
    canary_command,
    find_script,
    new_marker,
    parse_found,
    plan_canaries,
    run_canaries,
)
from tsops.errors import TsopsError
from tsops.flows.verify import exit_code, results_as_dict
from tsops.inventory.load import LoadedInventory, load_inventory
from tsops.recordings.store import S3Store
from tsops.tailnet_ssh import SessionResult, run_command
from tsops.tailscale_api import Device

INVENTORY = """\
version: 1
tailnet:
  credentials: {api_token: {env: TS_API_TOKEN}}
servers:
  hosts:
    web1: {tags: [tag:web]}
    db1: {tags: [tag:db]}
    lab1: {tags: [tag:lab]}
    nothere:
    other: {tags: [tag:other]}
    twin: {tags: [tag:web]}
  tags: [tag:server]
recorders:
  hosts: {rec1: }
storage:
  destination: /var/lib/tsrecorder/recordings
ssh_rules:
  - name: checked
    action: check
    src: [autogroup:member]
    dst: [tag:lab]
    users: [root]
  - name: nonroot-only
    src: [autogroup:member]
    dst: [tag:db]
    users: [autogroup:nonroot]
  - name: servers
    src: [autogroup:member]
    dst: [tag:web, tag:other]
    users: [autogroup:nonroot, root]
"""


def device(name: str, address: str = "100.64.0.5", node: str = "") -> Device:
    """An enrolled device of that hostname."""
    return Device(id=f"id-{name}", node_id=node or f"n{name.upper()}CNTRL",
                  name=f"{name}.tail1.ts.net", hostname=name, tags=("tag:server",),
                  addresses=(address, "fd7a:115c:a1e0::5"), authorized=True)


@pytest.fixture
def inventory(tmp_path: Path) -> LoadedInventory:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def test_markers_are_unguessable_and_the_command_only_prints_one() -> None:
    first, second = new_marker(), new_marker()
    assert first != second and MARKER_RE.fullmatch(first)
    assert canary_command(first) == f"echo {first}"


def test_each_server_gets_a_canary_or_the_reason_it_cannot(inventory: LoadedInventory) -> None:
    devices = [device("web1", "100.64.0.5"), device("db1"), device("lab1"), device("nothere"),
               device("twin"), device("twin")]
    canaries, unplanned = plan_canaries(inventory, inventory.servers, devices, None,
                                        marker=lambda: "tsops-canary-0123456789abcdef")
    # The first rule naming one of the host's tags decides, as the policy's first match does.
    assert canaries == [Canary("web1", "nWEB1CNTRL", "100.64.0.5", "root", "servers",
                               "tsops-canary-0123456789abcdef")]
    why = {r.host: (r.state, r.detail) for r in unplanned}
    assert why["db1"][0] == "error" and "names no concrete user" in why["db1"][1]
    assert why["lab1"][0] == "error" and "`check` rule" in why["lab1"][1]
    assert why["nothere"][0] == "not-recorded" and "no ssh_rules rule" in why["nothere"][1]
    assert why["other"][0] == "error" and "no single device" in why["other"][1]
    assert why["twin"][0] == "error" and "no single device" in why["twin"][1]


def test_the_user_given_wins_over_the_rules_users(
        inventory: LoadedInventory) -> None:
    web = [t for t in inventory.servers if t.name == "web1"]
    assert plan_canaries(inventory, web, [device("web1")], "deploy")[0][0].user == "deploy"
    bare = [t for t in inventory.servers if t.name == "db1"]
    assert plan_canaries(inventory, bare, [device("db1")], "app")[0][0].user == "app"


RECIPE = """\
version: 1
tailnet:
  credentials: {api_token: {env: TS_API_TOKEN}}
servers:
  hosts:
    web1:
    db1: {tags: [tag:db]}
recorders:
  hosts: {rec1: }
storage:
  destination: /var/lib/tsrecorder/recordings
canary:
  user: tsops-canary
ssh_rules:
  - name: sre
    action: check
    src: [group:sre]
    dst: [tag:server]
    users: [autogroup:nonroot, root]
  - name: db-admins
    src: [group:dba]
    dst: [tag:db]
    users: [postgres]
  - name: tsops-canary
    src: [tag:tsops-verifier]
    dst: [tag:server]
    users: [tsops-canary]
"""


def test_the_recipe_logs_in_as_the_canary_account_under_its_accept_rule(
        tmp_path: Path) -> None:
    # The example inventory's shape: the people's rule is `check`, which no unattended session
    # can pass; a later accept rule admits only the canary account, so verify can prove it.
    path = tmp_path / "inventory.yaml"
    path.write_text(RECIPE)
    recipe = load_inventory(path)
    canaries, unplanned = plan_canaries(
        recipe, recipe.servers, [device("web1", "100.64.0.5"), device("db1", "100.64.0.6")],
        None, marker=lambda: "tsops-canary-0123456789abcdef")
    assert unplanned == []
    assert [(c.host, c.user, c.rule) for c in canaries] == [
        ("web1", "tsops-canary", "tsops-canary"), ("db1", "tsops-canary", "tsops-canary")]


def test_an_accept_rule_after_a_check_rule_is_used_for_a_user_given(
        inventory: LoadedInventory) -> None:
    # The operator's --user is their call (a `localpart:` rule may admit it): tsops picks the
    # rule, it does not refuse the user.
    lab = [t for t in inventory.servers if t.name == "lab1"]
    _, unplanned = plan_canaries(inventory, lab, [device("lab1")], "root")
    assert "`check` rule" in unplanned[0].detail
    db = [t for t in inventory.servers if t.name == "db1"]
    assert plan_canaries(inventory, db, [device("db1")], "root")[0][0].rule == "nonroot-only"


def test_check_refuses_a_canary_account_no_accept_rule_admits(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(RECIPE.replace("users: [tsops-canary]", "users: [deploy]"))
    with pytest.raises(TsopsError) as raised:
        load_inventory(path)
    line = RECIPE.splitlines().index("  user: tsops-canary") + 1
    assert f"inventory.yaml:{line}:9: canary.user: no ssh_rules rule with action: accept lets " \
        "'tsops-canary' in on web1, db1" in str(raised.value)


@pytest.mark.parametrize("account", ["root", "Tsops", "a b", "-x", ""])
def test_check_refuses_a_canary_account_that_is_root_or_no_account_name(
        tmp_path: Path, account: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(RECIPE.replace("user: tsops-canary", f"user: {account!r}"))
    with pytest.raises(TsopsError) as raised:
        load_inventory(path)
    assert "canary.user" in str(raised.value)


class Clock:
    """A fake clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Found:
    """A destination where given markers show up after `after` searches."""

    def __init__(self, keys: dict[str, str], after: int = 1, fail: bool = False) -> None:
        self.keys, self.after, self.fail = keys, after, fail
        self.searches: list[dict[str, str]] = []

    def describe(self) -> str:
        return "s3://recordings"

    def find(self, wanted: dict[str, str], since: float) -> dict[str, str]:
        self.searches.append(dict(wanted))
        if self.fail:
            raise TsopsError("S3 said AccessDenied")
        if len(self.searches) < self.after:
            return {}
        return {m: k for m, k in self.keys.items() if m in wanted}


def canary(host: str, marker: str) -> Canary:
    return Canary(host, f"n{host}", "100.64.0.9", "root", "servers", marker)


def echo(address: str, user: str, command: str, timeout: float) -> SessionResult:
    return SessionResult(0, command.removeprefix("echo ") + "\n", "")


def test_recorded_when_the_marker_shows_up_under_the_node() -> None:
    clock = Clock()
    found = Found({"m1": "nweb1/a.cast", "m2": "ndb1/b.cast"}, after=3)
    results = run_canaries([canary("web1", "m1"), canary("db1", "m2")], echo, found,
                           clock=clock, sleep=clock.sleep)
    assert [(r.host, r.state, r.key, r.user) for r in results] == [
        ("web1", "recorded", "nweb1/a.cast", "root"), ("db1", "recorded", "ndb1/b.cast", "root")]
    assert found.searches[0] == {"m1": "nweb1", "m2": "ndb1"}
    assert len(found.searches) == 3 and exit_code(results) == 0
    assert results_as_dict(results)["state"] == "recorded"


def test_refused_sessions_and_missing_recordings_are_drift() -> None:
    def session(address: str, user: str, command: str, timeout: float) -> SessionResult:
        if "m1" in command:
            return SessionResult(None, failure="the session was refused or cut: denied")
        if "m2" in command:
            return SessionResult(1, "", "recording: no recorder accepted\n")
        if "m3" in command:
            return SessionResult(0, "something else\n", "")
        return echo(address, user, command, timeout)

    clock = Clock()
    found = Found({}, after=1)
    results = run_canaries([canary(h, m) for h, m in
                            (("a", "m1"), ("b", "m2"), ("c", "m3"), ("d", "m4"))],
                           session, found, timeout=10, clock=clock, sleep=clock.sleep)
    states = {r.host: (r.state, r.detail) for r in results}
    assert states["a"] == ("refused", "the session was refused or cut: denied")
    assert states["b"][0] == "refused" and "no recorder accepted" in states["b"][1]
    assert states["c"][0] == "refused" and "did not print the marker" in states["c"][1]
    assert states["d"][0] == "not-recorded" and "within 10 s" in states["d"][1]
    # Only the session that ran is searched for, and only until the timeout.
    assert all(s == {"m4": "nd"} for s in found.searches) and 10 <= len(found.searches) <= 12
    assert exit_code(results) == 3


def test_a_destination_that_cannot_be_read_is_an_error_not_drift() -> None:
    results = run_canaries([canary("web1", "m1")], echo, Found({}, fail=True))
    assert results[0].state == "error" and "AccessDenied" in results[0].detail
    assert exit_code(results) == 1
    assert exit_code([*results, CanaryResult("x", "not-recorded", "")]) == 1


def test_the_folder_search_finds_recent_markers_under_the_right_node(tmp_path: Path) -> None:
    root = tmp_path / "recordings dir"
    (root / "nWEB").mkdir(parents=True)
    (root / "nDB").mkdir()
    (root / "nWEB" / "2026-11-25T10:00:00Z.cast").write_text(
        '{"version": 2}\n[0.1, "o", "tsops-canary-aaaa\\r\\n"]\n')
    # The marker of web1 inside db1's folder is not web1's recording.
    (root / "nDB" / "x.cast").write_text('[0.1, "o", "tsops-canary-aaaa tsops-canary-bbbb"]\n')
    old = root / "nDB" / "old.cast"
    old.write_text('[0.1, "o", "tsops-canary-cccc"]\n')
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    wanted = {"tsops-canary-aaaa": "nWEB", "tsops-canary-bbbb": "nDB",
              "tsops-canary-cccc": "nDB", "tsops-canary-dddd": "nMISSING"}
    script = find_script(str(root), wanted, time.time() - 600)
    run = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert parse_found(run.stdout, str(root), wanted) == {
        "tsops-canary-aaaa": "nWEB/2026-11-25T10:00:00Z.cast",
        "tsops-canary-bbbb": "nDB/x.cast"}


def test_the_bucket_search_reads_each_recent_recording_of_the_node_once() -> None:
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="y")
    now = datetime.now(UTC)
    listing = {"Contents": [
        {"Key": "nWEB/old.cast", "Size": 9, "LastModified": now - timedelta(hours=1)},
        {"Key": "nWEB/gone.cast", "Size": 9, "LastModified": now},
        {"Key": "nWEB/new.cast", "Size": 9, "LastModified": now},
        {"Key": "nWEB/notes.txt", "Size": 9, "LastModified": now}]}
    body = b'[0.1, "o", "tsops-canary-aaaa"]\n'
    destination = BucketObjects(S3Store(client, "recordings"))
    with Stubber(client) as stub:
        stub.add_response("list_objects_v2", listing, {"Bucket": "recordings", "Prefix": "nWEB/"})
        stub.add_client_error("get_object", service_error_code="NoSuchKey",
                              http_status_code=404)
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(body), len(body))},
                          {"Bucket": "recordings", "Key": "nWEB/new.cast",
                           "Range": "bytes=0-65535"})
        since = (now - timedelta(minutes=5)).timestamp()
        assert destination.find({"tsops-canary-aaaa": "nWEB"}, since) == {
            "tsops-canary-aaaa": "nWEB/new.cast"}
        # Read once: the next poll lists again and reads nothing.
        stub.add_response("list_objects_v2", listing, {"Bucket": "recordings", "Prefix": "nWEB/"})
        assert destination.find({"tsops-canary-bbbb": "nWEB"}, since) == {}
        stub.add_client_error("list_objects_v2", service_error_code="SlowDown",
                              http_status_code=503)
        with pytest.raises(TsopsError, match=r"^S3 said SlowDown$"):
            destination.find({"tsops-canary-bbbb": "nWEB"}, since)
        stub.assert_no_pending_responses()
    assert destination.describe() == "s3://recordings"


class TailscaleSshStandIn(paramiko.ServerInterface):
    """Accepts `none` for root only, like a Tailscale SSH rule admitting root."""

    def __init__(self) -> None:
        self.command = threading.Event()
        self.commands: list[bytes] = []

    def get_allowed_auths(self, username: str) -> str:
        return "none" if username == "root" else "publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_SUCCESSFUL if username == "root" else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        self.commands.append(command)
        self.command.set()
        return True


@pytest.fixture
def ssh_server() -> Iterator[tuple[int, TailscaleSshStandIn]]:
    """A paramiko SSH server on loopback that echoes exec commands' argument."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    key = _host_key()
    server = TailscaleSshStandIn()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            transport = paramiko.Transport(sock)
            transport.add_server_key(key)
            transport.start_server(server=server)
            channel = transport.accept(5)
            if channel is None:
                transport.close()
                continue
            server.command.wait(5)
            server.command.clear()
            command = server.commands[-1].decode()
            if command.startswith("echo "):
                channel.sendall(command[5:].encode() + b"\n")
                channel.send_exit_status(0)
            else:
                channel.sendall_stderr(b"no such command\n")
                channel.send_exit_status(127)
            channel.close()
            # A server keeps the connection until the client has read everything and leaves.
            deadline = time.monotonic() + 5
            while transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
            transport.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, server
    stop.set()
    thread.join(5)
    listener.close()


def _host_key() -> paramiko.PKey:
    """A throwaway host key, made in memory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    return paramiko.Ed25519Key(file_obj=io.StringIO(text))


def test_the_session_seam_logs_in_without_keys_and_runs_the_command(
        ssh_server: tuple[int, TailscaleSshStandIn]) -> None:
    port, server = ssh_server
    result = run_command("127.0.0.1", "root", "echo tsops-canary-1234", timeout=10, port=port)
    assert result == SessionResult(0, "tsops-canary-1234\n", "") and result.ok
    assert server.commands == [b"echo tsops-canary-1234"]
    failed = run_command("127.0.0.1", "root", "false", timeout=10, port=port)
    assert (failed.exit_status, failed.stderr, failed.ok) == (127, "no such command\n", False)


def test_the_session_seam_says_why_no_command_ran(
        ssh_server: tuple[int, TailscaleSshStandIn]) -> None:
    port, _ = ssh_server
    denied = run_command("127.0.0.1", "alice", "echo x", timeout=10, port=port)
    assert denied.exit_status is None and denied.failure is not None
    assert "refused alice without keys (it offers: publickey)" in denied.failure
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    nobody = run_command("127.0.0.1", "root", "echo x", timeout=5, port=free_port)
    assert nobody.failure is not None and "Tailscale SSH is not answering" in nobody.failure


def test_verify_refuses_an_inventory_without_rules_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.split("ssh_rules:")[0])
    result = subprocess.run([sys.executable, "-m", "tsops", "verify", str(path)],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "TS_API_TOKEN": "unused-in-this-test"})
    assert result.returncode == 2, result.stderr
    assert "has no ssh_rules" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    zero = subprocess.run(
        [sys.executable, "-m", "tsops", "verify", str(path), "--canary-timeout", "0"],
        capture_output=True, text=True, check=False)
    assert zero.returncode == 2 and "--canary-timeout must be more than 0" in zero.stderr
