"""The API client against the control simulator on loopback: rate limits and server errors as
the simulator answers them (its test switches), with the waits recorded instead of slept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sim.control import ControlServer
from tsops.tailscale_api import ApiError, TailscaleApi

POLICY = """{
  "tagOwners": {"tag:server": []},
  "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"]}],
}
"""
KEYS = "/api/v2/tailnet/[^/]+/keys"


@pytest.fixture
def control() -> Iterator[ControlServer]:
    with ControlServer() as server:
        server.seed_policy(POLICY)
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def api(control: ControlServer, sleeps: list[float]) -> Iterator[TailscaleApi]:
    client = TailscaleApi(control.url, "-", token=control.create_api_token(),
                          sleep=sleeps.append)
    try:
        yield client
    finally:
        client.close()


def key_posts(control: ControlServer) -> list[int]:
    return [r.status for r in control.requests() if r.method == "POST" and "/keys" in r.path]


def test_a_rate_limited_key_is_created_once_after_the_wait(
    control: ControlServer, api: TailscaleApi, sleeps: list[float]
) -> None:
    control.inject_failure("POST", KEYS, 429, retry_after="2")
    key = api.create_auth_key(("tag:server",), "tsops host1")
    assert key_posts(control) == [429, 200]
    assert sleeps == [2.0]
    [stored] = control.auth_keys()
    assert (stored.id, stored.secret) == (key.id, key.key)


def test_a_key_whose_creation_failed_after_landing_is_revoked_before_the_retry(
    control: ControlServer, api: TailscaleApi, sleeps: list[float]
) -> None:
    control.inject_failure("POST", KEYS, 503, after_handling=True)
    key = api.create_auth_key(("tag:server",), "tsops host1")
    assert key_posts(control) == [503, 200]
    hidden, made = control.auth_keys()
    # The key the failed answer hid is revoked before the second try: one live key, ours.
    assert hidden.revoked is not None and made.revoked is None
    assert (made.id, made.secret) == (key.id, key.key)
    assert hidden.description == made.description and made.description.startswith("tsops host1 ")
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in control.requests()] == [
        ("POST", "keys"), ("GET", "keys"), ("DELETE", hidden.id), ("POST", "keys")]
    assert len(sleeps) == 1


def test_a_key_refused_before_landing_leaves_nothing_to_revoke(
    control: ControlServer, api: TailscaleApi, sleeps: list[float]
) -> None:
    control.create_auth_key(["tag:server"], description="someone else's key")
    control.inject_failure("POST", KEYS, 500, times=2)
    key = api.create_auth_key(("tag:server",), "tsops host1")
    assert key_posts(control) == [500, 500, 200]
    others, mine = control.auth_keys()
    assert others.revoked is None  # another description: never touched
    assert mine.id == key.id and mine.revoked is None
    assert len(sleeps) == 2


def test_device_list_outlasts_a_short_outage(
    control: ControlServer, api: TailscaleApi, sleeps: list[float]
) -> None:
    control.inject_failure("GET", "/api/v2/tailnet/[^/]+/devices", 502, times=2)
    assert api.list_devices() == []
    assert len(sleeps) == 2


def test_a_long_outage_gives_up_after_a_bounded_number_of_tries(
    control: ControlServer, api: TailscaleApi, sleeps: list[float]
) -> None:
    control.inject_failure("GET", "/api/v2/tailnet/[^/]+/devices", 503, times=10)
    with pytest.raises(ApiError, match="gave up after 4 tries"):
        api.list_devices()
    assert len([r for r in control.requests() if r.path.endswith("/devices")]) == 4
    assert len(sleeps) == 3


def test_a_hung_endpoint_fails_in_one_line_without_retrying(
    control: ControlServer, sleeps: list[float]
) -> None:
    delay = control.inject_delay("GET", "/api/v2/tailnet/[^/]+/devices", 3600, times=None)
    client = TailscaleApi(control.url, "-", token=control.create_api_token(), timeout=0.5,
                          sleep=sleeps.append)
    try:
        with pytest.raises(ApiError) as raised:
            client.list_devices()
    finally:
        client.close()
    assert raised.value.message == (
        f"Tailscale API: list devices: GET {control.api_url}/tailnet/-/devices: no progress on "
        "the answer within 0.5 s (change it with --api-timeout or timeouts.api in the inventory)")
    assert delay.served == 1 and sleeps == []


def test_a_key_created_behind_a_hung_answer_is_named_and_never_made_twice(
    control: ControlServer, sleeps: list[float]
) -> None:
    control.inject_delay("POST", KEYS, 3600, after_handling=True)
    client = TailscaleApi(control.url, "-", token=control.create_api_token(), timeout=0.5,
                          sleep=sleeps.append)
    try:
        with pytest.raises(ApiError) as raised:
            client.create_auth_key(("tag:server",), "tsops host1")
    finally:
        client.close()
    [hidden] = control.auth_keys()
    assert f"a key described {hidden.description!r} may have been created" in (
        raised.value.message)
    assert hidden.uses == 0 and key_posts(control) == [] and sleeps == []
