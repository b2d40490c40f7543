"""What the control simulator gives the lab's data plane: a tailnet prefix, WhoIs, netmaps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sim.control import ControlServer

POLICY = """{
  "tagOwners": {"tag:server": [], "tag:recorder": []},
  "groups": {"group:ops": ["ops@example.com"]},
  "ssh": [{"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["root"],
           "recorder": ["tag:recorder"], "enforceRecorder": true}],
}"""


@pytest.fixture
def control() -> Iterator[ControlServer]:
    """A control server handing out addresses in a lab's prefix."""
    with ControlServer(ipv4_prefix="100.64.7.0/24") as server:
        server.seed_policy(POLICY)
        yield server


def register(control: ControlServer, hostname: str, tags: list[str]) -> dict[str, Any]:
    """Enroll a node through the protocol and return its NODE plus its machine key."""
    key = control.create_auth_key(tags).secret
    body = {"authKey": key, "machineKey": f"mkey:{hostname}", "hostname": hostname,
            "endpoint": f"10.213.7.{len(control.devices()) + 11}"}
    answer = httpx.post(f"{control.url}/sim/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    node: dict[str, Any] = answer.json()["node"]
    return {**node, "machineKey": body["machineKey"]}


def sim(control: ControlServer, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST to the enrollment protocol."""
    return httpx.post(f"{control.url}/sim/v1/{path}", json=body)


def test_addresses_in_the_lab_prefix_first_kept_for_the_operator(
    control: ControlServer,
) -> None:
    server = register(control, "web1", ["tag:server"])
    recorder = register(control, "rec", ["tag:recorder"])
    operator = control.state.add_user_node("ops@example.com", "control", reserved=True)

    assert [server["addresses"][0], recorder["addresses"][0]] == ["100.64.7.2", "100.64.7.3"]
    assert operator["addresses"][0] == "100.64.7.1"
    assert server["simTailnetPrefix"] == "100.64.7.0/24"
    assert len({d.addresses[1] for d in control.devices()}) == 3
    assert operator["user"] == "ops@example.com" and operator["tags"] == []
    with pytest.raises(Exception, match="already"):
        control.state.add_user_node("ops@example.com", "again", reserved=True)


def test_default_control_keeps_its_addresses_and_announces_no_prefix() -> None:
    with ControlServer() as plain:
        plain.seed_policy(POLICY)
        node = register(plain, "web1", ["tag:server"])
        assert node["addresses"][0] == "100.64.0.1"
        assert "simTailnetPrefix" not in node


def test_whois_names_the_peer_and_its_owner(control: ControlServer) -> None:
    server = register(control, "web1", ["tag:server"])
    recorder = register(control, "rec", ["tag:recorder"])
    operator = control.state.add_user_node("ops@example.com", "control", reserved=True)
    ask = {"machineKey": server["machineKey"]}

    user = sim(control, "whois", {**ask, "address": "100.64.7.1"}).json()
    assert user["node"]["nodeId"] == operator["nodeId"]
    assert user["userProfile"] == {"id": control.state.user_id("ops@example.com"),
                                   "loginName": "ops@example.com"}
    tagged = sim(control, "whois", {**ask, "address": recorder["addresses"][0]}).json()
    assert tagged["node"]["tags"] == ["tag:recorder"]
    assert tagged["userProfile"]["loginName"] == "tagged-devices"

    assert sim(control, "whois", {**ask, "address": "100.64.7.200"}).status_code == 404
    stranger = sim(control, "whois", {"machineKey": "mkey:nobody", "address": "100.64.7.1"})
    assert stranger.status_code == 401
    assert sim(control, "logout", ask).status_code == 200
    assert sim(control, "whois", {**ask, "address": "100.64.7.1"}).status_code == 401


def test_netmap_has_the_node_its_peers_and_the_ssh_policy(control: ControlServer) -> None:
    server = register(control, "web1", ["tag:server"])
    recorder = register(control, "rec", ["tag:recorder"])

    netmap = sim(control, "netmap", {"machineKey": server["machineKey"]}).json()
    assert netmap["node"]["nodeId"] == server["nodeId"]
    [peer] = netmap["peers"]
    assert (peer["nodeId"], peer["tags"], peer["online"]) == (
        recorder["nodeId"], ["tag:recorder"], True)
    assert peer["endpoint"] == recorder["endpoint"]
    assert netmap["sshPolicy"]["groups"] == {"group:ops": ["ops@example.com"]}
    assert netmap["sshPolicy"]["ssh"][0]["recorder"] == ["tag:recorder"]

    control.advance_clock(20)
    [offline] = sim(control, "netmap", {"machineKey": server["machineKey"]}).json()["peers"]
    assert offline["online"] is False
    assert sim(control, "netmap", {"machineKey": "mkey:nobody"}).status_code == 401


def test_a_prefix_outside_the_tailnet_range_is_refused() -> None:
    with pytest.raises(ValueError, match="not inside"):
        ControlServer(ipv4_prefix="10.0.0.0/24")
