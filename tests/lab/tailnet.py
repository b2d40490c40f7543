"""A lab with a simulated tailnet around it: control plane and package repository on the bridge.

What tsops flows (bootstrap, policy, recorders) need in the lab, in one place, for the tests
and for `make demo`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.sim.control.server import ControlServer
from tests.sim.tailscale.build import LATEST, ensure_repo_tree
from tests.sim.tailscale.server import RepoServer

TOKEN_VARIABLE = "TSOPS_LAB_API_TOKEN"
LAB_TAGS = ("tag:server", "tag:db", "tag:web", "tag:bastion", "tag:recorder")
SEED_POLICY = """\
// The lab tailnet's policy file, as an operator might keep it.
{
  "tagOwners": {
%s
  },
  "acls": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"]},
  ],
}
"""

# The ssh rule of the lab's main-job inventories: every member to every server, recorded.
RECORDED_RULE = {"name": "servers-recorded", "src": ["autogroup:member"], "dst": ["tag:server"],
                 "users": ["autogroup:nonroot", "root"], "enforce_recorder": True}


@dataclass
class LabTailnet:
    """A running lab plus the simulated tailnet it enrolls into."""

    lab: Lab
    control: ControlServer
    repo: RepoServer
    token: str

    def inventory(
        self,
        path: Path,
        servers: dict[str, tuple[str, ...]],
        version: str | None = LATEST,
        install: dict[str, Any] | None = None,
    ) -> Path:
        """Write an inventory for these lab hosts (name -> extra tags) and return its path."""
        if install is None:
            install = {"method": "apt", "repository": self.repo.url}
            if version:
                install["version"] = version
        document = {
            "version": 1,
            "tailnet": {
                "name": self.control.tailnet,
                "api_url": self.control.url,
                "login_server": self.control.url,
                "credentials": {"api_token": {"env": TOKEN_VARIABLE}},
            },
            "connection": {"ssh_config": str(self.lab.ssh_config)},
            "tailscale": {"install": install},
            "servers": {
                "tags": ["tag:server"],
                "hosts": {name: ({"tags": list(tags)} if tags else None)
                          for name, tags in servers.items()},
            },
        }
        with path.open("w") as out:
            YAML().dump(document, out)
        return path


    def recorded_inventory(
        self,
        folder: Path,
        servers: dict[str, tuple[str, ...]],
        recorder: str = "host3",
        min_free_gb: int | None = None,
    ) -> Path:
        """The whole main job: these servers, one binary recorder writing to a local
        directory, the lab's ssh rule, and policy history kept under `folder`."""
        from tests.sim.recorder.bundle import build_executable

        path = self.inventory(folder / "inventory.yaml", servers)
        yaml = YAML()
        document = yaml.load(path.read_text())
        document["recorders"] = {"tag": "tag:recorder", "runtime": "binary",
                                 "binary": str(build_executable(folder / "tsrecorder")),
                                 "hosts": {recorder: None}}
        document["storage"] = {"destination": "/var/lib/tsrecorder/recordings"}
        if min_free_gb is not None:
            document["storage"]["min_free_gb"] = min_free_gb
        document["ssh_rules"] = [dict(RECORDED_RULE)]
        document["policy"] = {"source": "api", "state_dir": str(folder / "policy-state")}
        with path.open("w") as out:
            yaml.dump(document, out)
        return path


@contextmanager
def lab_tailnet(lab: Lab, control_port: int = 0, repo_port: int = 0) -> Iterator[LabTailnet]:
    """Serve the control simulator and the package repository on the lab's bridge."""
    tree = ensure_repo_tree()
    owners = ",\n".join(f'    "{tag}": ["autogroup:admin"]' for tag in LAB_TAGS)
    with ControlServer(lab.gateway, control_port) as control, \
            RepoServer(tree, lab.gateway, repo_port) as repo:
        control.state.seed_policy(SEED_POLICY % owners)
        yield LabTailnet(lab, control, repo, control.state.create_api_token())
