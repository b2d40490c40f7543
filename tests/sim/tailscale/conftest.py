"""Fixtures for the simulated tailscale package: the built repo, its server, a local node."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.lab import Lab, LabHost
from tests.sim.control import ControlServer
from tests.sim.tailscale.build import PACKAGE_DIR, RepoTree, ensure_repo_tree
from tests.sim.tailscale.server import RepoServer


@pytest.fixture(scope="session")
def tailscale_repo_tree() -> RepoTree:
    """The built (cached) package tree: debs, signed apt indexes and tarballs."""
    return ensure_repo_tree()


@pytest.fixture
def lab_host(lab: Lab) -> LabHost:
    """The lab's first host."""
    return lab.hosts[0]


@pytest.fixture
def tailscale_repo(lab: Lab, tailscale_repo_tree: RepoTree) -> Iterator[RepoServer]:
    """The package tree served on the lab gateway, like pkgs.tailscale.com for lab hosts."""
    with RepoServer(tailscale_repo_tree, lab.gateway) as server:
        yield server


# Declares the tags these tests advertise, so that keys may carry them.
POLICY = """{
  "tagOwners": {"tag:server": [], "tag:other": []},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}
"""


def control_server(host: str) -> ControlServer:
    """Return a started control server on `host` with POLICY saved."""
    server = ControlServer(host).start()
    try:
        server.seed_policy(POLICY)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def lab_control(lab: Lab) -> Iterator[ControlServer]:
    """A control server on the lab gateway, where lab hosts reach it."""
    server = control_server(lab.gateway)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_control() -> Iterator[ControlServer]:
    """A control server on loopback, for a tailscaled run on this machine."""
    server = control_server("127.0.0.1")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class LocalNode:
    """tailscaled running on this machine with private paths, and a way to run the CLI."""

    state: Path
    socket: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start tailscaled and wait for its socket."""
        self.process = subprocess.Popen(
            [sys.executable, str(PACKAGE_DIR / "tailscaled.py"), f"--state={self.state}",
             f"--socket={self.socket}", "--port=0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tailscaled did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop tailscaled (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `tailscale --socket=... ARGS` and return its result."""
        return subprocess.run(
            [sys.executable, str(PACKAGE_DIR / "tailscale.py"), f"--socket={self.socket}", *args],
            capture_output=True, text=True, check=False, timeout=60, stdin=subprocess.DEVNULL,
            env=env if env is not None else {"PATH": os.environ.get("PATH", "")},
        )


@pytest.fixture
def local_node(tmp_path: Path) -> Iterator[LocalNode]:
    """A running tailscaled on this machine (no lab needed)."""
    node = LocalNode(state=tmp_path / "state" / "tailscaled.state", socket=tmp_path / "ts.sock")
    node.start()
    try:
        yield node
    finally:
        node.stop()
