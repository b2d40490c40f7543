"""Fixtures for the recorder simulator's tests: the built executable, a control plane, recorders."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.lab import Lab
from tests.lab.s3 import S3Server
from tests.sim.control import ControlServer
from tests.sim.control.state import Device, RegisterRequest
from tests.sim.recorder.bundle import build_executable
from tests.sim.recorder.cast import SourceNode

RECORDERS_POLICY = """\
// Recorder simulator tests
{
  "groups": {"group:ops": ["alice@example.com"]},
  "tagOwners": {
    "tag:server": [],
    "tag:recorder": [],
    "tag:spare-recorder": [],
    "tag:ci": [],
  },
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [
    // Deploys from CI are not recorded.
    {"action": "accept", "src": ["tag:ci"], "dst": ["tag:server"], "users": ["deploy"]},
    {
      "action": "accept",
      "src": ["group:ops", "tag:ci"],
      "dst": ["tag:server"],
      "users": ["autogroup:nonroot", "root"],
      "recorder": ["tag:recorder"],
      "enforceRecorder": true,
    },
    {
      "action": "check",
      "src": ["autogroup:member"],
      "dst": ["tag:server"],
      "users": ["autogroup:nonroot"],
      "recorder": ["tag:spare-recorder"],
      "enforceRecorder": false,
    },
  ],
}
"""

ALICE = SourceNode("alice-laptop.tail1234.ts.net", "nALICE1234CNTRL",
                   login="alice@example.com", user_id=1001)
BOB = SourceNode("bob-laptop.tail1234.ts.net", "nBOB5678CNTRL", login="bob@example.com",
                 user_id=1002)
CI = SourceNode("ci-runner.tail1234.ts.net", "nCI9abcCNTRL", tags=("tag:ci",))

START_TIMEOUT_S = 10.0
# Each recorder on loopback gets its own 127.x address, so several can listen on :80 at once.
_addresses = itertools.count(11)


def loopback_address() -> str:
    """Return a loopback address no other recorder of this process uses."""
    return f"127.77.{os.getpid() % 250}.{next(_addresses) % 250}"


@pytest.fixture(scope="session")
def executable() -> Iterator[Path]:
    """The tsrecorder zipapp, in a directory every user can read (tests run it as nobody)."""
    directory = Path(tempfile.mkdtemp(prefix="tsrecorder-"))
    try:
        directory.chmod(0o755)
        yield build_executable(directory / "tsrecorder")
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def control() -> Iterator[ControlServer]:
    """A control plane on loopback with the recorder tests' policy."""
    with ControlServer() as server:
        server.state.seed_policy(RECORDERS_POLICY)
        yield server


def register_server(control: ControlServer, hostname: str = "web1") -> Device:
    """Register a tagged SSH server (the destination of sessions) without running a client."""
    key = control.create_auth_key(["tag:server"])
    control.state.register(RegisterRequest(
        auth_key=key.secret, machine_key="mkey:" + "ab" * 32, hostname=hostname,
        advertise_tags=["tag:server"], os="linux", client_version="1.76.6",
        endpoint="127.0.0.1", ssh=True,
    ))
    return next(d for d in control.state.devices() if d.hostname == hostname)


@pytest.fixture
def server_device(control: ControlServer) -> Device:
    """The SSH server web1 in the loopback tailnet."""
    return register_server(control)


@dataclass
class RecorderProcess:
    """One tsrecorder started by a test."""

    process: subprocess.Popen[str]
    address: str
    statedir: Path
    log: Path

    def output(self) -> str:
        """Return what the recorder logged so far."""
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 5 s; return the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """Die at once, as a crashed recorder would."""
        self.process.kill()
        self.process.wait()


StartRecorder = Callable[..., RecorderProcess]


def trusting(s3_server: S3Server) -> dict[str, str]:
    """The environment of a loopback recorder that trusts `s3_server`'s lab CA.

    `SSL_CERT_FILE` is what Go (and OpenSSL) read instead of the system's CA file; the control
    machine's own trust store is never touched. Recorders on lab hosts use the host's store.
    """
    return {"SSL_CERT_FILE": str(s3_server.ca_bundle)}


def run_recorder(
    executable: Path, args: list[str], env: dict[str, str], *, user: str | None = None,
    timeout: float = START_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run a recorder expected to exit on its own (a start-up failure)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    return subprocess.run([str(executable), *args], env=base | env, user=user,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def start_recorder(
    executable: Path, control: ControlServer, tmp_path: Path
) -> Iterator[StartRecorder]:
    """Start recorders on loopback that join `control`; each is stopped after the test."""
    started: list[RecorderProcess] = []
    names = itertools.count(1)

    def start(
        dst: str, *, tag: str = "tag:recorder", extra: list[str] | None = None,
        env: dict[str, str] | None = None, statedir: Path | None = None,
        address: str | None = None,
    ) -> RecorderProcess:
        number = next(names)
        if statedir is None:
            statedir = tmp_path / f"state{number}"
            statedir.mkdir()
        auth_key = control.create_auth_key([tag]).secret
        address = address or loopback_address()
        log = tmp_path / f"recorder{number}.log"
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TS_AUTHKEY": auth_key,
            "TSRECORDER_LOGIN_SERVER": control.url, "TSRECORDER_SIM_LISTEN_ADDRESS": address,
        } | (env or {})
        with log.open("w") as log_file:
            process = subprocess.Popen(
                [str(executable), "--dst", dst, "--statedir", str(statedir),
                 "--hostname", f"recorder{number}", *(extra or [])],
                env=full_env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                text=True, start_new_session=True,
            )
        recorder = RecorderProcess(process, address, statedir, log)
        started.append(recorder)
        wait_until_serving(recorder, control)
        return recorder

    try:
        yield start
    finally:
        for recorder in started:
            recorder.stop()


def wait_until_serving(recorder: RecorderProcess, control: ControlServer) -> None:
    """Block until the recorder is online in the tailnet and accepts connections on :80."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if recorder.process.poll() is not None:
            pytest.fail(f"tsrecorder exited with {recorder.process.returncode}:\n"
                        f"{recorder.output()}")
        now = control.state.now()
        if any(d.endpoint == recorder.address and d.online(now) for d in control.state.devices()):
            with contextlib.suppress(OSError), socket.create_connection((recorder.address, 80), 1):
                return
        time.sleep(0.05)
    pytest.fail(f"tsrecorder did not serve within {START_TIMEOUT_S}s:\n{recorder.output()}")


@pytest.fixture
def lab_s3(lab: Lab) -> Iterator[S3Server]:
    """A moto S3 server on the lab bridge over HTTPS, its lab CA trusted by every lab host."""
    server = S3Server(host=lab.gateway)
    try:
        server.start()
        server.trust_on(lab.hosts)
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab_control(lab: Lab) -> Iterator[ControlServer]:
    """The control plane on the lab bridge, with the recorder tests' policy."""
    with ControlServer(host=lab.gateway) as server:
        server.state.seed_policy(RECORDERS_POLICY)
        yield server
