"""checkPeriod as the real control plane takes it: `always` or 1m..168h, only on check rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from tests.sim.control import ControlServer
from tests.sim.control import policy as simulator

BASE: dict[str, Any] = {
    "groups": {"group:ops": ["alice@example.com"]},
    "tagOwners": {"tag:server": []},
    "acls": [{"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22"]}],
    "ssh": [{"action": "check", "src": ["group:ops"], "dst": ["tag:server"],
             "users": ["root"]}],
}


def with_rule(**fields: Any) -> str:
    """BASE with the ssh rule's fields changed, as JSON."""
    policy = copy.deepcopy(BASE)
    policy["ssh"][0].update(fields)
    return json.dumps(policy)


@pytest.mark.parametrize("period", ["1m", "12h", "1h30m", "90m", "168h", "0.5h", "always",
                                    "3600s", "10080m"])
def test_check_periods_in_range_are_valid(period: str) -> None:
    _, invalid = simulator.check(with_rule(checkPeriod=period))
    assert invalid is None, invalid and invalid.message


@pytest.mark.parametrize(("period", "expected"), [
    ("12 hours", ": invalid duration '12 hours'"),
    ("12", ": invalid duration '12'"),
    ("", ": invalid duration ''"),
    ("1d", ": invalid duration '1d'"),
    ("Always", ": invalid duration 'Always'"),
    ("200h", " '200h' must be between 1m and 168h"),
    ("168h1s", " '168h1s' must be between 1m and 168h"),
    ("59s", " '59s' must be between 1m and 168h"),
    ("0", " '0' must be between 1m and 168h"),
    ("-1h", " '-1h' must be between 1m and 168h"),
])
def test_bad_check_periods_are_invalid(period: str, expected: str) -> None:
    _, invalid = simulator.check(with_rule(checkPeriod=period))
    assert invalid is not None
    assert invalid.message == f"ssh[0].checkPeriod{expected}"


def test_a_check_period_on_an_accept_rule_is_invalid() -> None:
    _, invalid = simulator.check(with_rule(action="accept", checkPeriod="12h"))
    assert invalid is not None
    assert invalid.message == "ssh[0].checkPeriod is only valid with action 'check'"


def test_a_check_period_that_is_not_a_string_is_invalid() -> None:
    _, invalid = simulator.check(with_rule(checkPeriod=12))
    assert invalid is not None
    assert invalid.message == "ssh[0].checkPeriod must be a string"


def test_validate_and_write_refuse_a_bad_check_period(
    control: ControlServer, api: httpx.Client
) -> None:
    """Through the API: validate answers the error, a write is 400 and saves nothing."""
    before = control.policy()
    text = with_rule(checkPeriod="200h")
    answer = api.post("/tailnet/-/acl/validate", content=text)
    assert answer.status_code == 200
    assert "must be between 1m and 168h" in answer.json()["message"]
    written = api.post("/tailnet/-/acl", content=text)
    assert written.status_code == 400
    assert "must be between 1m and 168h" in written.json()["message"]
    assert control.policy() == before
    good = api.post("/tailnet/-/acl", content=with_rule(checkPeriod="1h30m"))
    assert good.status_code == 200, good.text
