"""Test switches that make the simulated API answer as the real one does at times: validate
with warnings, rate limits (429 with Retry-After) and server errors (5xx)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.sim.control import ControlServer
from tests.sim.control.conftest import SERVERS_POLICY

WARNING = "group:eng@example.com: no such group synced from the identity provider yet"
INVALID = '{"ssh": [{"action": "accept", "src": ["group:nobody"], "dst": ["tag:x"]}]}'


def test_validate_answers_warnings_and_the_write_still_happens(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    servers_policy.set_policy_warnings([WARNING])
    answer = api.post("/tailnet/-/acl/validate", content=SERVERS_POLICY)
    assert answer.status_code == 200
    assert answer.json() == {"message": "warning(s) found", "data": [{"warnings": [WARNING]}]}
    # Warnings are not a rejection: the same text is written.
    etag = servers_policy.policy().etag
    written = api.post("/tailnet/-/acl", content=SERVERS_POLICY + "\n",
                       headers={"If-Match": f'"{etag}"'})
    assert written.status_code == 200, written.text
    assert servers_policy.policy().text == SERVERS_POLICY + "\n"


def test_an_invalid_policy_is_still_an_error_not_a_warning(
    control: ControlServer, api: httpx.Client
) -> None:
    control.set_policy_warnings([WARNING])
    answer = api.post("/tailnet/-/acl/validate", content=INVALID).json()
    assert answer["message"] != "warning(s) found"
    assert answer["message"]


def test_warnings_end_when_switched_off(control: ControlServer, api: httpx.Client) -> None:
    control.set_policy_warnings([WARNING])
    control.set_policy_warnings([])
    assert api.post("/tailnet/-/acl/validate", content=SERVERS_POLICY).json() == {}


def test_a_rate_limit_refuses_before_anything_happens(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    servers_policy.inject_failure("POST", "/api/v2/tailnet/[^/]+/keys", 429, retry_after="7")
    body = {"capabilities": {"devices": {"create": {"tags": ["tag:server"]}}}}
    refused = api.post("/tailnet/-/keys", json=body)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    assert refused.json() == {"message": "rate limit exceeded"}
    assert servers_policy.auth_keys() == []
    created = api.post("/tailnet/-/keys", json=body)
    assert created.status_code == 200
    assert len(servers_policy.auth_keys()) == 1
    assert [(r.method, r.status) for r in servers_policy.requests()] == [
        ("POST", 429), ("POST", 200)]


def test_a_server_error_after_handling_has_done_the_work(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    servers_policy.inject_failure("POST", "/api/v2/tailnet/-/keys", 503, after_handling=True)
    body = {"capabilities": {"devices": {"create": {"tags": ["tag:server"]}}}}
    failed = api.post("/tailnet/-/keys", json=body)
    assert failed.status_code == 503
    assert "Retry-After" not in failed.headers
    # The key exists although the answer was an error: a blind retry would make a second one.
    assert len(servers_policy.auth_keys()) == 1


def test_a_server_error_before_handling_changes_nothing_and_counts_down(
    control: ControlServer, api: httpx.Client
) -> None:
    control.inject_failure("GET", "/api/v2/tailnet/-/devices", 500, times=2)
    statuses = [api.get("/tailnet/-/devices").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_failures_come_after_authentication(control: ControlServer) -> None:
    control.inject_failure("GET", "/api/v2/tailnet/-/devices", 503)
    with httpx.Client(base_url=control.api_url, timeout=5) as anonymous:
        assert anonymous.get("/tailnet/-/devices").status_code == 401
    token = control.create_api_token()
    with httpx.Client(base_url=control.api_url, timeout=5,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.get("/tailnet/-/devices").status_code == 503
        assert http.get("/tailnet/-/devices").status_code == 200


@pytest.mark.parametrize(
    ("status", "after", "message"),
    [(404, False, "only 429 and 5xx"), (429, True, "nothing was carried out")],
)
def test_only_real_failure_kinds_can_be_injected(
    control: ControlServer, status: int, after: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        control.inject_failure("GET", "/api/v2/tailnet/-/devices", status, after_handling=after)


def test_unmatched_requests_are_not_affected(control: ControlServer, api: httpx.Client) -> None:
    control.inject_failure("POST", "/api/v2/tailnet/-/devices", 503)
    assert api.get("/tailnet/-/devices").status_code == 200
    assert json.loads(api.get("/tailnet/-/devices").text) == {"devices": []}
