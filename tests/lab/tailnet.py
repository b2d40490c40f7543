"""A lab with a simulated tailnet around it: control plane and package repository on the bridge.

What tsops flows (bootstrap, policy, recorders) need in the lab, in one place, for the tests
and for `make demo`. The control simulator hands out tailnet addresses in the lab's own prefix
(`lab.tailnet_network`), so that enrolled hosts answer Tailscale SSH on their tailnet address
from the control machine, which is itself a node of the tailnet (`LabTailnet.operator`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.sim.control.server import ControlServer
from tests.sim.control.state import RequestRecord
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

# The control machine's own node: owned by a tailnet member (matches autogroup:member).
OPERATOR_LOGIN = "ops@example.com"
OPERATOR_HOSTNAME = "tsops-control"
OPERATOR_POLL_S = 5.0  # it heartbeats like any node, so it stays online
SSH_TIMEOUT_S = 30.0

# The ssh rule of the lab's main-job inventories: every member to every server, recorded.
RECORDED_RULE = {"name": "servers-recorded", "src": ["autogroup:member"], "dst": ["tag:server"],
                 "users": ["autogroup:nonroot", "root"], "enforce_recorder": True}


@dataclass(frozen=True)
class Operator:
    """The control machine as a node of the lab's tailnet: a user-owned (untagged) device."""

    address: str  # its tailnet IPv4 address, on the lab bridge
    node_id: str  # stable node ID (the srcNodeID of its recorded sessions)
    login: str  # its owner (srcNodeUser)
    user_id: int  # srcNodeUserID
    name: str  # MagicDNS name (srcNode)
    machine_key: str


class TailnetSSHDenied(Exception):
    """Tailscale SSH refused the login (auth failed); `banner` is what the server said."""

    def __init__(self, message: str, banner: str) -> None:
        super().__init__(f"{message}: {banner.strip()}" if banner else message)
        self.banner = banner


def tailnet_ssh_to(
    address: str, user: str, command: str, timeout: float = SSH_TIMEOUT_S,
    source: str | None = None, pty: tuple[int, int] | None = None,
) -> tuple[int, str, str]:
    """Run `command` over Tailscale SSH at `address`:22, as tsops does: paramiko, the `none`
    auth method, any host key; return (exit status, stdout, stderr). `source`: connect from
    this local address (default: the route's, the operator's tailnet address); `pty`: ask for
    a terminal of (width, height) first (TERM=xterm), which tsops does not.

    Raises OSError when nothing answers (refused, unreachable), TailnetSSHDenied when the
    login is refused, TimeoutError when the session does not end in time.
    """
    import paramiko

    sock = socket.create_connection((address, 22), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        try:
            transport.auth_none(user)
        except (paramiko.SSHException, EOFError) as error:
            handler = transport.auth_handler
            banner = handler.banner if handler is not None else None
            text = banner.decode(errors="replace") if isinstance(banner, bytes) else banner or ""
            raise TailnetSSHDenied(f"Tailscale SSH to {address} as {user}: {error}",
                                   text) from None
        channel = transport.open_session(timeout=timeout)
        if pty is not None:
            channel.get_pty(term="xterm", width=pty[0], height=pty[1])
        channel.exec_command(command)
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.exit_status_ready() and (channel.eof_received or channel.closed):
                break
            elif time.monotonic() > deadline:
                raise TimeoutError(f"`{command}` on {address} did not end in {timeout}s")
            else:
                time.sleep(0.01)
        status = channel.recv_exit_status()
        return status, out.decode(errors="replace"), err.decode(errors="replace")
    finally:
        transport.close()
        sock.close()


@dataclass
class LabTailnet:
    """A running lab plus the simulated tailnet it enrolls into."""

    lab: Lab
    control: ControlServer
    repo: RepoServer
    token: str
    _operator: Operator | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def operator(self) -> Operator:
        """The control machine's node (address, node ID, login...), joining the tailnet now if
        it has not yet.

        It joins when first asked for, or when its first Tailscale SSH connection reaches a
        node (whose WhoIs asks about its address), whichever comes first: tsops run as a
        subprocess is recognised without the test doing anything, and tests that count devices
        before any tailnet traffic see only the hosts.
        """
        with self.control.state.locked():  # one lock: WhoIs may make it join meanwhile
            if self._operator is None:
                self._operator = self._join_operator()
            return self._operator

    def _whois_miss(self, address: str) -> bool:
        """The control simulator's WhoIs hook: the operator's address makes it join."""
        if address != self.lab.operator_address or self._operator is not None:
            return False
        self.operator  # noqa: B018 (joins)
        return True

    def _join_operator(self) -> Operator:
        state = self.control.state
        node = state.add_user_node(OPERATOR_LOGIN, OPERATOR_HOSTNAME, reserved=True,
                                   endpoint=self.lab.gateway)
        ipv4 = node["addresses"][0]
        if ipv4 != self.lab.operator_address:
            raise RuntimeError(f"the operator got {ipv4}, not {self.lab.operator_address}")
        machine_key = str(node["machineKey"])

        def heartbeat() -> None:
            while not self._stop.wait(OPERATOR_POLL_S):
                with contextlib.suppress(Exception):
                    state.poll(machine_key)

        threading.Thread(target=heartbeat, name="operator-heartbeat", daemon=True).start()
        return Operator(ipv4, node["nodeId"], OPERATOR_LOGIN, state.user_id(OPERATOR_LOGIN),
                        node["name"], machine_key)

    def api_requests(self, since: int = 0) -> list[RequestRecord]:
        """The API requests made with the operator's token after the first `since` requests.

        The lab's tailscaled daemons poll the control plane on their own, at any moment: a test
        counting what tsops asked for must count only what carried tsops's credential.
        """
        return [r for r in self.control.state.requests()[since:] if r.token == self.token]

    def stop(self) -> None:
        """Stop the operator's heartbeat."""
        self._stop.set()

    def tailnet_address(self, host: str) -> str:
        """The tailnet IPv4 address of the device named `host`, read as tsops reads it: the
        API's device list (`GET /api/v2/tailnet/-/devices`, field `addresses`)."""
        request = urllib.request.Request(
            f"{self.control.api_url}/tailnet/-/devices",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            devices = json.load(answer)["devices"]
        for device in devices:
            if device["hostname"] == host:
                for address in device["addresses"]:
                    if "." in address and address.startswith("100."):
                        return str(address)
        raise LookupError(f"no device {host!r} with an IPv4 address in the tailnet")

    def tailnet_ssh(
        self, host: str, user: str, command: str, timeout: float = SSH_TIMEOUT_S
    ) -> tuple[int, str, str]:
        """Run `command` as `user` on `host` over Tailscale SSH from the control machine, as
        tsops does (the operator joins the tailnet first); see tailnet_ssh_to."""
        self.operator  # noqa: B018 (joins the tailnet)
        return tailnet_ssh_to(self.tailnet_address(host), user, command, timeout)

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
                "allow_plain_http": True,
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
    with ControlServer(lab.gateway, control_port, ipv4_prefix=str(lab.tailnet_network)) \
            as control, RepoServer(tree, lab.gateway, repo_port) as repo:
        control.state.seed_policy(SEED_POLICY % owners)
        tailnet = LabTailnet(lab, control, repo, control.state.create_api_token())
        control.state.whois_miss = tailnet._whois_miss
        try:
            yield tailnet
        finally:
            tailnet.stop()
