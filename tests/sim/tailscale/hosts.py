"""Installing and inspecting the simulated tailscale on a lab host, the way a person would."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.lab.lab import LabHost
from tests.sim.tailscale.build import KEYRING_PATH
from tests.sim.tailscale.server import RepoServer

LIST_PATH = "/etc/apt/sources.list.d/tailscale.list"


def add_apt_repo(host: LabHost, repo: RepoServer, keyring_url: str | None = None) -> None:
    """Install the signing keyring and tailscale.list, as Tailscale's instructions say."""
    host.nsenter(
        f"curl -fsSL {keyring_url or repo.keyring_url} -o {KEYRING_PATH} && "
        f"echo '{repo.source_line(KEYRING_PATH)}' > {LIST_PATH}"
    )


def node_status(host: LabHost) -> dict[str, Any]:
    """Return `tailscale status --json` on the host."""
    answer: dict[str, Any] = json.loads(host.nsenter("tailscale status --json").stdout)
    return answer


def wait_for_state(host: LabHost, state: str, timeout: float = 20) -> dict[str, Any]:
    """Wait until BackendState is `state` and return the status."""
    deadline = time.monotonic() + timeout
    while True:
        result = host.nsenter("tailscale status --json", check=False)
        if result.returncode == 0:
            answer: dict[str, Any] = json.loads(result.stdout)
            if answer["BackendState"] == state:
                return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{host.name}: never reached {state}: {result.stdout}")
        time.sleep(0.2)
