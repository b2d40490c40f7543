"""Fixtures for the control-plane simulator's own tests: a running server and API clients."""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.sim.control import ControlServer

SERVERS_POLICY = """\
// tsops test policy
{
  "tagOwners": {
    "tag:tsops": [],
    "tag:server": ["tag:tsops"],
    "tag:recorder": ["tag:tsops"],
    "tag:other": [],
  },
  "acls": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"]},
  ],
  "ssh": [
    {
      "action": "accept",
      "src": ["autogroup:member"],
      "dst": ["tag:server"],
      "users": ["autogroup:nonroot"],
      "recorder": ["tag:recorder"],
      "enforceRecorder": true,
    },
  ],
}
"""

Register = Callable[..., httpx.Response]

# Built once: httpx otherwise loads the CA bundle for every client, which dominates test time.
TLS = ssl.create_default_context()


@pytest.fixture
def control() -> Iterator[ControlServer]:
    """A running control server on loopback with the default policy."""
    with ControlServer() as server:
        yield server


@pytest.fixture
def servers_policy(control: ControlServer) -> ControlServer:
    """The control server after an admin saved a policy declaring tag:server and tag:recorder."""
    control.seed_policy(SERVERS_POLICY)
    return control


def client(control: ControlServer, token: str | None) -> httpx.Client:
    """Return an httpx client for the API, authenticated with token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=control.api_url, headers=headers, timeout=5, verify=TLS)


def oauth_token(control: ControlServer, scopes: list[str], tags: list[str]) -> str:
    """Return an access token of a new OAuth client with scopes and tags."""
    client_id, secret = control.create_oauth_client(scopes, tags)
    with client(control, None) as http:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        token: str = http.post("/oauth/token", data=form).json()["access_token"]
    return token


@pytest.fixture
def api(control: ControlServer) -> Iterator[httpx.Client]:
    """An API client holding an all-scopes token."""
    with client(control, control.create_api_token()) as http:
        yield http


@pytest.fixture
def sim(control: ControlServer) -> Iterator[httpx.Client]:
    """A client for the enrollment protocol (no API credentials)."""
    with httpx.Client(base_url=f"{control.url}/sim/v1", timeout=5, verify=TLS) as http:
        yield http


def register_body(auth_key: str, **fields: Any) -> dict[str, Any]:
    """Return a register request body with sensible defaults, overridden by fields."""
    body: dict[str, Any] = {
        "authKey": auth_key,
        "machineKey": f"mkey:{secrets.token_hex(32)}",
        "hostname": "web1",
        "advertiseTags": [],
        "os": "linux",
        "clientVersion": "1.76.6",
        "endpoint": "10.99.0.11",
        "ssh": True,
    }
    body.update(fields)
    return body


@pytest.fixture
def register(sim: httpx.Client) -> Register:
    """Post a register request built by register_body."""

    def post(auth_key: str, **fields: Any) -> httpx.Response:
        """Register with auth_key and the given field overrides."""
        return sim.post("/register", json=register_body(auth_key, **fields))

    return post


def policy_json(value: dict[str, Any]) -> str:
    """Return a policy object as JSON text."""
    return json.dumps(value)
