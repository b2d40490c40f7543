"""Concurrent callers: one winner per ETag, distinct identities for simultaneous registrations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.sim.control import ControlServer
from tests.sim.control.conftest import SERVERS_POLICY, TLS, client, register_body


def test_concurrent_writes_with_one_etag_have_one_winner(control: ControlServer) -> None:
    """Of many writers holding the same ETag, exactly one succeeds; the rest get 412."""
    token = control.create_api_token()
    etag = f'"{control.policy().etag}"'

    def write(number: int) -> int:
        """Write a distinct valid policy with the shared ETag; return the status."""
        text = SERVERS_POLICY.replace("// tsops test policy", f"// writer {number}")
        with client(control, token) as http:
            response = http.post("/tailnet/-/acl", content=text, headers={"If-Match": etag})
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(write, range(8)))
    assert sorted(statuses) == [200] + [412] * 7
    assert len(control.policy_versions()) == 2


def test_simultaneous_registrations_get_distinct_identities(control: ControlServer) -> None:
    """Nodes registering at once get distinct IDs, names and addresses."""
    key = control.create_auth_key(reusable=True).secret

    def register(_: int) -> dict[str, Any]:
        """Register one more node called `node`; return its NODE."""
        body = register_body(key, hostname="node")
        response = httpx.post(f"{control.url}/sim/v1/register", json=body, timeout=5, verify=TLS)
        node: dict[str, Any] = response.json()["node"]
        return node

    with ThreadPoolExecutor(8) as pool:
        nodes = list(pool.map(register, range(8)))
    for field in ("id", "nodeId", "name"):
        assert len({str(node[field]) for node in nodes}) == 8
    assert len({tuple(node["addresses"]) for node in nodes}) == 8
