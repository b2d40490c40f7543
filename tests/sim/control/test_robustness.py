"""Whatever a client sends, the checks answer with a verdict, never a crash."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sim.control import policy

VALID: dict[str, Any] = {
    "groups": {"group:g": ["a@b.c"]},
    "hosts": {"h": "100.64.0.1"},
    "tagOwners": {"tag:a": [], "tag:b": ["tag:a"]},
    "acls": [{"action": "accept", "src": ["group:g"], "dst": ["tag:a:22"], "proto": "tcp"}],
    "grants": [{"src": ["*"], "dst": ["h"], "ip": ["tcp:22"]}],
    "ssh": [
        {
            "action": "accept",
            "src": ["group:g"],
            "dst": ["tag:a"],
            "users": ["root"],
            "acceptEnv": ["LANG"],
            "recorder": ["tag:b"],
            "enforceRecorder": True,
        }
    ],
    "tests": [{"src": "a@b.c", "proto": "tcp", "accept": ["tag:a:22"], "deny": ["h:80"]}],
    "sshTests": [{"src": "a@b.c", "dst": ["tag:a"], "accept": ["root"], "deny": ["x"]}],
}
PATHS = [
    ("groups",), ("groups", "group:g"), ("hosts", "h"), ("tagOwners", "tag:b"),
    ("acls", 0), ("acls", 0, "src"), ("acls", 0, "dst"), ("acls", 0, "proto"),
    ("grants", 0), ("grants", 0, "ip"), ("grants", 0, "dst"), ("grants", 0, "app"),
    ("ssh", 0), ("ssh", 0, "users"), ("ssh", 0, "acceptEnv"), ("ssh", 0, "recorder"),
    ("ssh", 0, "dst"), ("tests", 0), ("tests", 0, "src"), ("tests", 0, "accept"),
    ("tests", 0, "proto"), ("sshTests", 0, "dst"), ("sshTests", 0, "check"), ("tests",),
]  # fmt: skip
WORDS = st.sampled_from(
    ["*", "tag:a", "tag:b", "group:g", "autogroup:member", "a@b.c", "h", "100.64.0.1",
     "tag:a:22", "*:*", "h:80", "root", "tcp", "22", "tcp:22", "x", "", ":", "tag:a:"]
)  # fmt: skip
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), WORDS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(WORDS, inner, max_size=3)),
    max_leaves=8,
)


def mutated(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """Return VALID with the item at path replaced by value."""
    candidate = copy.deepcopy(VALID)
    target: Any = candidate
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return candidate


def test_the_valid_policy_is_valid() -> None:
    """The starting point passes, so mutations reach the deepest checks and the tests."""
    assert policy.check(json.dumps(VALID)) == (VALID, None)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATHS), VALUES)
def test_check_never_raises(path: tuple[str | int, ...], value: Any) -> None:
    """Any value anywhere gets either a parsed policy or an Invalid with a message and data."""
    parsed, invalid = policy.check(json.dumps(mutated(path, value)))
    assert (parsed is None) != (invalid is None)
    if invalid is not None:
        assert invalid.message
        assert invalid.data
