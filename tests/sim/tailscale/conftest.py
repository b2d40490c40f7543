"""Fixtures for these tests: the public ones from fixtures.py, control servers, a local node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.lab import Lab, LabHost
from tests.sim.control import ControlServer
from tests.sim.tailscale.fixtures import tailscale_repo, tailscale_repo_tree
from tests.sim.tailscale.localnode import LocalNode

__all__ = ["tailscale_repo", "tailscale_repo_tree"]


@pytest.fixture
def lab_host(lab: Lab) -> LabHost:
    """The lab's first host."""
    return lab.hosts[0]


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


@pytest.fixture
def other_local_control() -> Iterator[ControlServer]:
    """A second control server on loopback: another login server to move a node to."""
    server = control_server("127.0.0.1")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_node(tmp_path: Path) -> Iterator[LocalNode]:
    """A running tailscaled on this machine (no lab needed)."""
    node = LocalNode(state=tmp_path / "state" / "tailscaled.state", socket=tmp_path / "ts.sock")
    node.start()
    try:
        yield node
    finally:
        node.stop()
