"""The slow-answer switch: per endpoint, counted, before or after the work, ended by stop()."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.sim.control import ControlServer

DEVICES = "/api/v2/tailnet/[^/]+/devices"
KEYS = "/api/v2/tailnet/[^/]+/keys"
KEY_BODY = {"capabilities": {"devices": {"create": {"tags": ["tag:server"]}}}}


def test_a_held_answer_outlasts_a_short_client_timeout_and_is_counted(
    control: ControlServer, api: httpx.Client
) -> None:
    delay = control.inject_delay("GET", DEVICES, 60)
    with pytest.raises(httpx.ReadTimeout):
        api.get("/tailnet/-/devices", timeout=0.3)
    assert delay.served == 1
    # Only the next request was held: the one after is answered as usual.
    assert api.get("/tailnet/-/devices").status_code == 200
    assert delay.served == 1


def test_a_short_delay_still_answers(control: ControlServer, api: httpx.Client) -> None:
    delay = control.inject_delay("GET", DEVICES, 0.01, times=2)
    assert [api.get("/tailnet/-/devices").status_code for _ in range(3)] == [200, 200, 200]
    assert delay.served == 2 and delay.remaining == 0


def test_a_delay_after_handling_has_done_the_work(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    servers_policy.inject_delay("POST", KEYS, 60, after_handling=True)
    with pytest.raises(httpx.ReadTimeout):
        api.post("/tailnet/-/keys", json=KEY_BODY, timeout=0.3)
    # The key exists although the caller never saw its answer.
    assert len(servers_policy.auth_keys()) == 1


def test_other_endpoints_and_methods_are_not_held(
    control: ControlServer, api: httpx.Client
) -> None:
    delay = control.inject_delay("POST", DEVICES, 60, times=None)
    assert api.get("/tailnet/-/devices").status_code == 200
    assert api.get("/tailnet/-/keys").status_code == 200
    assert delay.served == 0


def test_stopping_the_server_ends_a_held_answer() -> None:
    control = ControlServer().start()
    token = control.create_api_token()
    delay = control.inject_delay("GET", DEVICES, 3600)
    answers: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=120) as http:
            answers.append(http.get(f"{control.api_url}/tailnet/-/devices",
                                    headers={"Authorization": f"Bearer {token}"}).status_code)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    for _ in range(6000):  # until the request is held (no assertion on how long that takes)
        if delay.served:
            break
        time.sleep(0.01)
    assert delay.served == 1
    control.stop()
    caller.join(60)
    assert not caller.is_alive() and answers == [200]


@pytest.mark.parametrize(("seconds", "times"), [(0, 1), (-1, 1), (1, 0)])
def test_nonsense_delays_are_refused(control: ControlServer, seconds: float, times: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        control.inject_delay("GET", DEVICES, seconds, times=times)
