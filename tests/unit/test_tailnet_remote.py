"""Managing servers over Tailscale SSH: the transport, the path choice and the address lookup.

The transport talks to a paramiko SSH server on loopback that behaves like Tailscale SSH where
tsops depends on it: the `none` method decides (a refusal comes with a banner), each exec
channel runs `sh -c`-style commands with stdin, stdout, stderr and the exit status passed
through, and there is no SFTP subsystem.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.common import AUTH_FAILED, AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from tsops.context import RunContext, tailnet_address
from tsops.errors import TsopsError
from tsops.events import Recorded
from tsops.inventory.load import Target, load_inventory
from tsops.remote import (
    KILLED_STATUS,
    STILL_RUNNING,
    HostUnreachable,
    RunResult,
    TailnetRemote,
    detach_script,
    run_leaving_tailnet,
    run_surviving_restart,
    upload_script,
    wait_script,
)
from tsops.tailscale_api import Device

ADMITTED = {"root", "deploy"}
BANNER = "tailscale: tailnet policy does not permit you to SSH as user 'alice'"


class TailscaleSshLike(paramiko.ServerInterface):
    """`none` for the admitted users, a refusal banner for others; exec only, no SFTP."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return AUTH_SUCCESSFUL if username in ADMITTED else AUTH_FAILED

    def get_banner(self) -> tuple[str | None, str | None]:
        # paramiko sends it before any user is known; the client reads it only on a refusal.
        return BANNER + "\r\n", "en-US"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED

    def check_channel_subsystem_request(self, channel: Any, name: str) -> bool:
        return False  # no SFTP, as on Tailscale SSH in the lab

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        self.commands.append(command.decode())
        threading.Thread(target=_run, args=(channel, command.decode()), daemon=True).start()
        return True


def _run(channel: paramiko.Channel, command: str) -> None:
    """Run the command here (`sudo -n` dropped), wiring the channel to its stdio."""
    argv = ["sh", "-c", command.removeprefix("sudo -n ")]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None

    def pump_in() -> None:
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # the command may exit before reading it all
            while data := channel.recv(32768):
                process.stdin.write(data)
            process.stdin.close()

    threading.Thread(target=pump_in, daemon=True).start()
    err = threading.Thread(target=lambda: channel.sendall_stderr(process.stderr.read()),  # type: ignore[union-attr]
                           daemon=True)
    err.start()
    while chunk := os.read(process.stdout.fileno(), 32768):
        channel.sendall(chunk)
    err.join()
    channel.send_exit_status(process.wait())
    channel.shutdown_write()
    channel.close()


@pytest.fixture
def server() -> Iterator[tuple[int, TailscaleSshLike]]:
    """The stand-in on a loopback port; every connection is served until it closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    key = paramiko.Ed25519Key(file_obj=io.StringIO(_host_key()))
    interface = TailscaleSshLike()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(key)
            transport.start_server(server=interface)
            transports.append(transport)

    threading.Thread(target=serve, daemon=True).start()
    yield port, interface
    listener.close()
    for transport in transports:
        transport.close()


def _host_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


def target(name: str = "host1", user: str = "root", sudo: bool = False, via: Any = "tailnet",
           identity: str | None = "ops@example.com") -> Target:
    return Target(name=name, role="server", group=None, address=name, tags=("tag:server",),
                  user=user, port=22, identity_file=None, sudo=sudo, jump_host=None, line=1,
                  via=via, tailnet_identity=identity)


def remote(port: int, **kwargs: Any) -> TailnetRemote:
    return TailnetRemote(target(**kwargs), "127.0.0.1", timeout=10, port=port)


def test_a_command_is_one_session_with_stdin_stdout_stderr_and_status(
        server: tuple[int, TailscaleSshLike]) -> None:
    port, interface = server
    host = remote(port)
    try:
        result = host.run('read secret; echo "got $secret"; echo oops >&2; exit 3',
                          stdin="hunter2\n")
        assert result == RunResult(3, "got hunter2\n", "oops\n")
        assert host.round_trips == 1
        assert host.run("echo again") == RunResult(0, "again\n", "")
        assert host.round_trips == 2
    finally:
        host.close()
    # The secret went on stdin, never into the command line.
    assert interface.commands[0].startswith("sh -c ") and "hunter2" not in interface.commands[0]


def test_a_non_root_user_runs_privileged_steps_through_sudo(
        server: tuple[int, TailscaleSshLike]) -> None:
    port, interface = server
    host = remote(port, user="deploy", sudo=True)
    try:
        host.run("true")
        host.run("true", privileged=False)
    finally:
        host.close()
    assert interface.commands[0].startswith("sudo -n sh -c ")
    assert interface.commands[1].startswith("sh -c ")


def test_an_upload_goes_over_stdin_binary_safe_and_root_only(
        server: tuple[int, TailscaleSshLike], tmp_path: Path) -> None:
    port, interface = server
    local = tmp_path / "tailscale.tgz"
    content = bytes(range(256)) * 1024 + b"\r\n\x00end"  # every byte value, 256 KiB and more
    local.write_bytes(content)
    uploaded = tmp_path / "uploaded file.tgz"  # a space: the path is quoted
    host = remote(port)
    old = os.umask(0o022)
    try:
        host.put(local, str(uploaded))
    finally:
        os.umask(old)
        host.close()
    assert uploaded.read_bytes() == content
    assert stat.S_IMODE(uploaded.stat().st_mode) == 0o600
    assert host.round_trips == 1
    assert interface.commands == [f"sh -c {shlex.quote(upload_script(str(uploaded)))}"]


def test_a_failed_upload_names_the_host_and_the_file(
        server: tuple[int, TailscaleSshLike], tmp_path: Path) -> None:
    port, _ = server
    local = tmp_path / "tailscale.tgz"
    local.write_bytes(b"x")
    host = remote(port)
    try:
        with pytest.raises(TsopsError, match=r"^host1: copying tailscale.tgz to /nonexistent/"
                                             r"dir/f failed \(exit \d+\): .*nonexistent"):
            host.put(local, "/nonexistent/dir/f")
    finally:
        host.close()


def test_a_refused_login_is_one_line_naming_host_user_and_identity(
        server: tuple[int, TailscaleSshLike]) -> None:
    port, _ = server
    host = remote(port, user="alice")
    with pytest.raises(HostUnreachable) as caught:
        host.run("true")
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("host1: Tailscale SSH at 127.0.0.1 refused alice: " + BANNER)
    assert "tsops's identity ops@example.com as alice" in message
    assert host.round_trips == 0


def test_nothing_answering_is_one_line_too() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    with pytest.raises(HostUnreachable, match=r"^host1: Tailscale SSH as root: cannot connect "
                                              r"to 127\.0\.0\.1:\d+ .*not on the tailnet$"):
        remote(free).run("true")


def device(hostname: str, addresses: tuple[str, ...] = ("100.64.0.7", "fd7a:115c:a1e0::7"),
           online: bool = True, name: str = "") -> Device:
    return Device(id=f"d-{hostname}", node_id=f"n{hostname}CNTRL",
                  name=name or f"{hostname}.example.ts.net", hostname=hostname,
                  tags=("tag:server",), addresses=addresses, authorized=True,
                  connected_to_control=online)


def test_the_tailnet_address_is_the_online_devices_ipv4() -> None:
    assert tailnet_address(target(), [device("host1"), device("host2")]) == ("100.64.0.7", "")
    assert tailnet_address(target(), [device("other", name="host1.example.ts.net")])[0] == (
        "100.64.0.7")
    missing, why = tailnet_address(target(), [device("host2")])
    assert missing is None and "no single device" in why
    twice, why = tailnet_address(target(), [device("host1"), device("host1")])
    assert twice is None and "no single device" in why
    offline, why = tailnet_address(target(), [device("host1", online=False)])
    assert offline is None and why == "device d-host1 is offline"
    v6, why = tailnet_address(target(), [device("host1", addresses=("fd7a:115c:a1e0::7",))])
    assert v6 is None and "no tailnet IPv4" in why


INVENTORY = """\
version: 1
tailnet:
  credentials:
    api_token: {env: TS_API_KEY}
connection:
  tailnet_identity: ops@example.com
servers:
  hosts:
    plain: {}
    always: {via: tailnet}
    once: {via: tailnet-once-enrolled}
ssh_rules:
  - name: tsops
    src: [ops@example.com]
    dst: [tag:server]
    users: [root]
    enforce_recorder: false
"""


class FakeApi:
    """The device list, counted."""

    def __init__(self, devices: list[Device]) -> None:
        self.devices = devices
        self.calls = 0

    def list_devices(self) -> list[Device]:
        self.calls += 1
        return self.devices

    def close(self) -> None:
        pass


def context(tmp_path: Path, devices: list[Device]) -> tuple[RunContext, FakeApi, list[str]]:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    inventory = load_inventory(path)
    api = FakeApi(devices)
    opened: list[str] = []

    class Opened:
        def __init__(self, name: str, how: str) -> None:
            self.name, self.round_trips = name, 0
            opened.append(f"{name} {how}")

        def close(self) -> None:
            opened.append(f"{self.name} closed")

    return RunContext(
        inventory, inventory.servers, Recorded(),
        connect=lambda t: Opened(t.name, "openssh"),  # type: ignore[arg-type,return-value]
        connect_tailnet=lambda t, a: Opened(t.name, f"tailnet {a}"),  # type: ignore[arg-type,return-value]
        api_factory=lambda _: api,  # type: ignore[arg-type,return-value]
    ), api, opened


def test_via_chooses_the_path_and_reads_the_device_list_once(tmp_path: Path) -> None:
    run, api, opened = context(tmp_path, [device("always", ("100.64.0.8",)),
                                          device("once", ("100.64.0.9",))])
    servers = {t.name: t for t in run.targets}
    assert {t.name: t.via for t in run.targets} == {
        "plain": "openssh", "always": "tailnet", "once": "tailnet-once-enrolled"}
    for name in ("plain", "always", "once"):
        assert run.remote(servers[name]) is run.remote(servers[name])
    assert opened == ["plain openssh", "always tailnet 100.64.0.8", "once tailnet 100.64.0.9"]
    assert api.calls == 1


def test_once_enrolled_starts_over_openssh_and_tailnet_refuses_a_missing_device(
        tmp_path: Path) -> None:
    run, _, opened = context(tmp_path, [device("once", ("100.64.0.9",), online=False)])
    servers = {t.name: t for t in run.targets}
    run.remote(servers["once"])
    assert opened == ["once openssh"]
    with pytest.raises(HostUnreachable, match=(
            r"^always: via tailnet, but no single device of that hostname in the tailnet's "
            r"device list: enroll it first \(via tailnet-once-enrolled makes the first contact "
            r"over OpenSSH\)$")):
        run.remote(servers["always"])
    assert opened == ["once openssh"]


def test_an_inventory_with_only_openssh_never_asks_for_devices(tmp_path: Path) -> None:
    run, api, opened = context(tmp_path, [])
    plain = replace(next(t for t in run.targets if t.name == "plain"))
    run.remote(plain)
    assert api.calls == 0 and opened == ["plain openssh"]


class Scripted(TailnetRemote):
    """A TailnetRemote whose commands answer from a list (an exception is raised)."""

    def __init__(self, answers: list[RunResult | HostUnreachable],
                 reachable: list[bool] | None = None) -> None:
        super().__init__(target(), "127.0.0.1")
        self.answers = answers
        self.reachable = reachable or []
        self.scripts: list[str] = []

    def _connect(self) -> Any:
        if not self.reachable.pop(0):
            raise HostUnreachable("host1", "Tailscale SSH as root: cannot connect to "
                                  "100.64.0.7:22 (No route to host)")

    def _exec(self, command: str, stdin: Any, timeout: float = 0) -> RunResult:
        self.scripts.append(shlex.split(command)[2])  # sh -c SCRIPT
        answer = self.answers.pop(0)
        if isinstance(answer, HostUnreachable):
            raise answer
        return answer


def test_a_step_that_restarts_tailscaled_runs_detached_and_is_waited_for_across_cuts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tsops.remote.RECONNECT_WAIT_S", 0)
    host = Scripted([
        RunResult(0, "", ""),  # started as a transient unit
        RunResult(0, STILL_RUNNING + "\n", ""),  # not done yet
        RunResult(KILLED_STATUS, "", ""),  # tailscaled restarting ended the session
        HostUnreachable("host1", "Tailscale SSH as root: cannot connect"),  # still restarting
        RunResult(0, "Setting up tailscale (1.78.3) ...\n", ""),  # its output and status
    ])
    result = run_surviving_restart(host, "apt-get install -y tailscale=1.78.3\n")
    assert result == RunResult(0, "Setting up tailscale (1.78.3) ...\n", "")
    assert host.answers == []
    unit = host.scripts[0].split("--unit=")[1].split()[0]
    assert unit.startswith("tsops-step-")
    assert host.scripts[0] == detach_script(unit, "apt-get install -y tailscale=1.78.3\n")
    assert "apt-get install -y tailscale=1.78.3\n" in host.scripts[0]
    assert host.scripts[1:] == [wait_script(unit)] * 4


def test_a_detached_step_that_fails_reports_its_status_and_output(
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = Scripted([RunResult(0, "", ""), RunResult(100, "E: Unable to locate package\n", "")])
    assert run_surviving_restart(host, "apt-get install x\n") == RunResult(
        100, "E: Unable to locate package\n", "")
    refused = Scripted([RunResult(1, "", "Failed to start transient service unit")])
    assert run_surviving_restart(refused, "true\n").exited == 1
    assert len(refused.scripts) == 1


def test_over_openssh_a_restarting_step_simply_runs() -> None:
    class Plain:
        name, round_trips = "host1", 0

        def __init__(self) -> None:
            self.scripts: list[str] = []

        def run(self, script: str, *, stdin: str | None = None,
                privileged: bool = True) -> RunResult:
            self.scripts.append(script)
            return RunResult(0, "ok\n", "")

        def put(self, local: Path, remote: str) -> None:
            raise AssertionError

        def close(self) -> None:
            pass

    plain = Plain()
    assert run_surviving_restart(plain, "apt-get install x\n") == RunResult(0, "ok\n", "")
    assert plain.scripts == ["apt-get install x\n"]


def test_a_fresh_device_list_moves_a_newly_enrolled_server_to_the_tailnet(tmp_path: Path) -> None:
    run, api, opened = context(tmp_path, [])
    once = next(t for t in run.targets if t.name == "once")
    run.remote(once)
    api.devices = [device("once", ("100.64.0.9",))]  # enrolled during the run
    run.open_remote(once)
    run.open_remote(once, fresh_devices=True)
    assert opened == ["once openssh", "once openssh", "once tailnet 100.64.0.9"]
    assert api.calls == 2


def test_a_logout_runs_delayed_and_ends_when_the_node_leaves_the_tailnet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tsops.remote.RECONNECT_WAIT_S", 0)
    host = Scripted([
        RunResult(0, "", ""),  # the delayed unit is started
        RunResult(0, STILL_RUNNING + "\n", ""),
        HostUnreachable("host1", "the Tailscale SSH session ended without an exit status"),
    ], reachable=[False])
    result, seen = run_leaving_tailnet(host, "tailscale logout")
    assert result.ok and seen is not None
    unit = host.scripts[0].split("--unit=")[1].split()[0]
    assert f"--unit={unit} --on-active=5s sh -c" in host.scripts[0]
    assert seen.startswith(f"started as {unit}; then Tailscale SSH ended (the Tailscale SSH "
                           "session ended without an exit status) and stopped answering")
    assert seen.endswith(f"the node left the tailnet; its output is in /run/tsops/{unit}/ on "
                         "the host")


def test_a_logout_that_fails_while_ssh_still_answers_is_reported_as_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tsops.remote.RECONNECT_WAIT_S", 0)
    host = Scripted([
        RunResult(0, "", ""),
        RunResult(KILLED_STATUS, "", ""),  # a cut session, but the node still answers
        RunResult(1, "", "logout failed: control unreachable\n"),
    ], reachable=[True])
    assert run_leaving_tailnet(host, "tailscale logout") == (
        RunResult(1, "", "logout failed: control unreachable\n"), None)
    assert host.answers == [] and host.reachable == []


def test_a_silent_session_is_given_up_after_its_bound(
        server: tuple[int, TailscaleSshLike]) -> None:
    port, _ = server
    host = remote(port)
    try:
        with pytest.raises(HostUnreachable, match=r"^host1: a command ran longer than 1 s and "
                                                  r"was stopped$"):
            host._exec("sh -c 'sleep 60'", [], timeout=1)
        assert host.run("echo back") == RunResult(0, "back\n", "")  # connects again
    finally:
        host.close()


def test_reconnect_reads_the_devices_again_and_moves_a_server_to_the_tailnet(
        tmp_path: Path) -> None:
    run, api, opened = context(tmp_path, [])
    once = next(t for t in run.targets if t.name == "once")
    run.remote(once)
    api.devices = [device("once", ("100.64.0.9",))]  # enrolled, and OpenSSH closed, meanwhile
    again = run.reconnect(once)
    assert run.remote(once) is again
    assert opened == ["once openssh", "once tailnet 100.64.0.9", "once closed"]
