"""POST /acl/validate: always 200 for a well-formed request, `message` and `data` when invalid."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from tests.sim.control import ControlServer

BASE: dict[str, Any] = {
    "groups": {"group:ops": ["alice@example.com"]},
    "hosts": {"db": "100.64.0.9"},
    "tagOwners": {"tag:server": [], "tag:recorder": ["tag:server"]},
    "acls": [{"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22"]}],
    "ssh": [
        {
            "action": "accept",
            "src": ["group:ops"],
            "dst": ["tag:server"],
            "users": ["root"],
            "recorder": ["tag:recorder"],
            "enforceRecorder": True,
        }
    ],
}


def validate(api: httpx.Client, text: str) -> dict[str, Any]:
    """Post text to validate, assert 200, and return the JSON answer."""
    response = api.post("/tailnet/-/acl/validate", content=text)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def changed(path: str, value: Any) -> str:
    """Return BASE with the dotted path (list indexes as digits) set to value, as JSON."""
    policy = copy.deepcopy(BASE)
    target: Any = policy
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return json.dumps(policy)


def test_the_base_policy_is_valid(control: ControlServer, api: httpx.Client) -> None:
    """The starting point of the other cases validates cleanly."""
    assert validate(api, json.dumps(BASE)) == {}


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("ssh.0.src", ["tag:ghost"], "tag:ghost"),
        ("ssh.0.dst", ["tag:ghost"], "tag:ghost"),
        ("ssh.0.recorder", ["tag:ghost"], "tag:ghost"),
        ("acls.0.src", ["tag:ghost"], "tag:ghost"),
        ("acls.0.dst", ["tag:ghost:22"], "tag:ghost"),
        ("tagOwners.tag:recorder", ["tag:ghost"], "tag:ghost"),
        ("grants", [{"src": ["tag:ghost"], "dst": ["tag:server"], "ip": ["22"]}], "tag:ghost"),
        ("grants", [{"src": ["*"], "dst": ["tag:ghost"], "ip": ["22"]}], "tag:ghost"),
        ("acls.0.src", ["group:ghosts"], "group:ghosts"),
    ],
)
def test_undeclared_tags_and_groups_are_invalid(
    control: ControlServer, api: httpx.Client, path: str, value: Any, expected: str
) -> None:
    """Every tag used (SSH, ACLs, grants, owners) must be in tagOwners; groups must exist."""
    answer = validate(api, changed(path, value))
    assert expected in answer["message"]
    assert answer["data"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("ssh.0.recorder", ["tag:recorder", "tag:server"], "exactly one tag"),
        ("ssh.0.recorder", [], "exactly one tag"),
        ("ssh.0.dst", ["*"], "'*' is not allowed"),
        ("ssh.0.action", "allow", "action"),
        ("ssh.0.enforceRecorder", "yes", "enforceRecorder"),
        ("ssh.0.users", [], "users"),
        ("acls.0.action", "deny", "action"),
        ("acls.0.dst", ["tag:server"], "host:ports"),
        ("acls.0.dst", ["tag:server:99999"], "host:ports"),
        ("acls.0.src", ["someone"], "not a user"),
        ("grants", [{"src": ["*"], "dst": ["tag:server"]}], "'ip' or 'app'"),
        ("grants", [{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:x"]}], "port"),
        ("tagOwners.Server", [], "not a valid tag name"),
        ("hosts.db", "not-an-ip", "not an IP"),
        ("tagowners", {}, "unknown top-level field"),
        ("ssh.0.recorders", ["tag:recorder"], "unknown field"),
    ],
)
def test_malformed_rules_are_invalid(
    control: ControlServer, api: httpx.Client, path: str, value: Any, expected: str
) -> None:
    """SSH rules, ACLs, grants and declarations are checked as the reference describes."""
    answer = validate(api, changed(path, value))
    assert expected in answer["message"] or any(
        expected in error for entry in answer["data"] for error in entry["errors"]
    )


@pytest.mark.parametrize(
    "text",
    ["{'acls': []}", "{acls: []}", '{"acls": [,]}', "", "[]", '{"acls": [] /* open'],
)
def test_text_that_is_not_a_hujson_object_is_invalid(
    control: ControlServer, api: httpx.Client, text: str
) -> None:
    """Anything beyond HuJSON, or not an object, is reported (still 200)."""
    answer = validate(api, text)
    assert answer["message"]
    assert answer["data"]


def test_comments_and_trailing_commas_validate(control: ControlServer, api: httpx.Client) -> None:
    """HuJSON itself is fine."""
    text = '// c\n{"tagOwners": {"tag:a": [],}, /* b */ "acls": [],}\n'
    assert validate(api, text) == {}


def test_failing_tests_are_reported_per_user(control: ControlServer, api: httpx.Client) -> None:
    """Policy tests that fail make the candidate invalid, with data naming user and failures."""
    tests = [
        {"src": "alice@example.com", "accept": ["tag:server:22"], "deny": ["tag:server:80"]},
        {"src": "bob@example.com", "accept": ["tag:server:22"]},
    ]
    answer = validate(api, changed("tests", tests))
    assert answer["message"]
    assert answer["data"] == [
        {"user": "bob@example.com", "errors": ["bob@example.com cannot access tag:server:22"]}
    ]


def test_a_policy_nested_past_any_parser_s_depth_is_bad_input_not_a_crash() -> None:
    from tests.sim.control import hujson

    with pytest.raises(hujson.HuJSONError, match="exceeded max depth"):
        hujson.loads("[" * 5000 + "]" * 5000)
