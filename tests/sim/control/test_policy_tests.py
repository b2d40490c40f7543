"""The policy's own `tests`, in the subset the simulator evaluates (see README.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.sim.control import policy

POLICY: dict[str, Any] = {
    "groups": {"group:ops": ["alice@example.com"]},
    "hosts": {"db": "100.64.0.9", "lan": "100.64.1.0/24"},
    "tagOwners": {"tag:server": [], "tag:ci": [], "tag:web": []},
    "acls": [
        {"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22,80"]},
        {"action": "accept", "src": ["tag:ci"], "dst": ["tag:server:8000-8100"]},
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
        {"action": "accept", "src": ["*"], "dst": ["lan:443"], "proto": "udp"},
    ],
    "grants": [
        {"src": ["autogroup:tagged"], "dst": ["db"], "ip": ["tcp:5432"]},
        {"src": ["bob@example.com"], "dst": ["tag:web"], "ip": ["*"]},
    ],
}


def outcome(source: str, destination: str, proto: str | None = None) -> bool:
    """Return whether a one-line accept test passes against POLICY."""
    test: dict[str, Any] = {"src": source, "accept": [destination]}
    if proto:
        test["proto"] = proto
    return not policy.run_tests({**POLICY, "tests": [test]})


@pytest.mark.parametrize(
    ("source", "destination", "proto", "allowed"),
    [
        ("alice@example.com", "tag:server:22", None, True),  # group member, listed port
        ("alice@example.com", "tag:server:80", None, True),
        ("alice@example.com", "tag:server:443", None, False),  # port not listed
        ("bob@example.com", "tag:server:22", None, False),  # not in the group
        ("tag:ci", "tag:server:8050", None, True),  # port range
        ("tag:ci", "tag:server:8101", None, False),
        ("alice@example.com", "alice@example.com:3000", None, True),  # autogroup:self
        ("alice@example.com", "bob@example.com:3000", None, False),
        ("tag:ci", "db:5432", None, True),  # grant, autogroup:tagged, host alias
        ("tag:ci", "100.64.0.9:5432", None, True),  # the alias's address
        ("tag:ci", "db:5432", "udp", False),  # grant limited to tcp
        ("alice@example.com", "db:5432", None, False),  # users are not tagged
        ("bob@example.com", "tag:web:9999", None, True),  # grant ip "*"
        ("alice@example.com", "100.64.1.7:443", "udp", True),  # prefix alias, acl proto
        ("alice@example.com", "100.64.1.7:443", None, False),  # tests default to tcp
    ],
)
def test_accept_follows_acls_and_grants(
    source: str, destination: str, proto: str | None, allowed: bool
) -> None:
    """An accept test passes exactly when some ACL or grant allows source to reach destination."""
    assert outcome(source, destination, proto) is allowed


def test_deny_fails_when_access_is_allowed() -> None:
    """A deny entry that some rule allows is reported as a failure."""
    failures = policy.run_tests(
        {**POLICY, "tests": [{"src": "alice@example.com", "deny": ["tag:server:22", "db:5432"]}]}
    )
    assert failures == [
        {"user": "alice@example.com", "errors": ["alice@example.com can access tag:server:22"]}
    ]


def test_without_acls_or_grants_nothing_is_allowed() -> None:
    """A policy with no acls and no grants denies everything."""
    bare: dict[str, Any] = {"tagOwners": {"tag:server": []}}
    tests = [{"src": "alice@example.com", "accept": ["tag:server:22"]}]
    assert policy.run_tests({**bare, "tests": tests})


def test_unsupported_test_sources_are_reported_not_guessed() -> None:
    """A test src outside the supported subset (users, tags) is an error, not a silent pass."""
    _, invalid = policy.check('{"tests": [{"src": "group:ops", "accept": ["tag:x:22"]}]}')
    assert invalid is not None
    assert "simulator subset" in invalid.message


SSH_POLICY: dict[str, Any] = {
    "groups": {"group:ops": ["alice@example.com"]},
    "tagOwners": {"tag:server": [], "tag:db": []},
    "ssh": [
        {"action": "check", "src": ["group:ops"], "dst": ["tag:db"], "users": ["root"]},
        {
            "action": "accept",
            "src": ["autogroup:member"],
            "dst": ["tag:server", "tag:db"],
            "users": ["autogroup:nonroot"],
        },
        {
            "action": "accept",
            "src": ["autogroup:member"],
            "dst": ["autogroup:self"],
            "users": ["localpart:*@example.com"],
        },
    ],
}


@pytest.mark.parametrize(
    ("source", "host", "user", "expected"),
    [
        ("alice@example.com", "tag:db", "root", "check"),  # first matching rule decides
        ("bob@example.com", "tag:db", "root", None),  # not in group:ops; nonroot excludes root
        ("bob@example.com", "tag:server", "deploy", "accept"),  # autogroup:nonroot
        ("tag:server", "tag:db", "deploy", None),  # tags are not members
        ("bob@example.com", "bob@example.com", "bob", "accept"),  # localpart on own devices
        ("bob@example.com", "bob@example.com", "alice", None),
        ("bob@example.com", "alice@example.com", "alice", None),  # not bob's device
    ],
)
def test_ssh_tests_follow_the_first_matching_rule(
    source: str, host: str, user: str, expected: str | None
) -> None:
    """An sshTests entry expects accept, check or deny for each (dst, user) pair."""
    wanted = expected or "deny"
    test = {"src": source, "dst": [host], wanted: [user]}
    assert policy.run_ssh_tests({**SSH_POLICY, "sshTests": [test]}) == []
    for other in {"accept", "check", "deny"} - {wanted}:
        wrong = {"src": source, "dst": [host], other: [user]}
        [failure] = policy.run_ssh_tests({**SSH_POLICY, "sshTests": [wrong]})
        assert failure["errors"] == [
            f"{source} to {host} as {user}: expected {other}, got {wanted}"
        ]


def test_failing_ssh_tests_make_the_policy_invalid() -> None:
    """check() reports sshTests failures like tests failures."""
    ssh_test = {"src": "a@b.c", "dst": ["tag:s"], "accept": ["root"]}
    _, invalid = policy.check(json.dumps({"tagOwners": {"tag:s": []}, "sshTests": [ssh_test]}))
    assert invalid is not None
    assert invalid.data == [
        {"user": "a@b.c", "errors": ["a@b.c to tag:s as root: expected accept, got deny"]}
    ]
