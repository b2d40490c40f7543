"""Which managed ssh rule lets tsops's tailnet identity into a server, decided offline."""

from __future__ import annotations

from typing import Any

import pytest

from tsops.inventory.load import Target, identity_problem
from tsops.inventory.model import SshRule


def rule(name: str, src: tuple[str, ...], users: tuple[str, ...],
         dst: tuple[str, ...] = ("tag:server",), action: Any = "accept") -> SshRule:
    return SshRule(name=name, src=src, dst=dst, users=users, action=action)


def server(user: str = "root", tags: tuple[str, ...] = ("tag:server",)) -> Target:
    return Target(name="web1", role="server", group=None, address="web1", tags=tags, user=user,
                  port=22, identity_file=None, sudo=user != "root", jump_host=None, line=1,
                  via="tailnet")


@pytest.mark.parametrize(("identity", "rules", "user"), [
    ("ops@example.com", (rule("a", ("ops@example.com",), ("root",)),), "root"),
    ("ops@example.com", (rule("a", ("autogroup:member",), ("root",)),), "root"),
    ("ops@example.com", (rule("a", ("autogroup:member",), ("autogroup:nonroot",)),), "deploy"),
    ("ops@example.com", (rule("a", ("autogroup:member",), ("localpart:*@example.com",)),),
     "ops"),
    ("tag:tsops", (rule("a", ("tag:tsops",), ("root",)),), "root"),
    ("tag:tsops", (rule("a", ("autogroup:tagged",), ("root",)),), "root"),
    # A rule for someone else first does not matter; the first rule that admits decides.
    ("tag:tsops", (rule("people", ("autogroup:member",), ("root",), action="check"),
                   rule("tsops", ("tag:tsops",), ("root",))), "root"),
])
def test_admitted(identity: str, rules: tuple[SshRule, ...], user: str) -> None:
    assert identity_problem(rules, identity, server(user)) is None


@pytest.mark.parametrize(("identity", "rules", "user", "said"), [
    ("ops@example.com", (), "root", "no ssh_rules entry admits ops@example.com"),
    # autogroup:nonroot does not cover root.
    ("ops@example.com", (rule("a", ("autogroup:member",), ("autogroup:nonroot",)),), "root",
     "as root with action: accept"),
    # A tagged machine is not a member, and a user is not autogroup:tagged.
    ("tag:tsops", (rule("a", ("autogroup:member",), ("root",)),), "root", "no ssh_rules"),
    ("ops@example.com", (rule("a", ("autogroup:tagged",), ("root",)),), "root", "no ssh_rules"),
    # A group is defined in the policy file, which `check` does not read: not proven.
    ("ops@example.com", (rule("a", ("group:sre",), ("root",)),), "root", "no ssh_rules"),
    # The rule is for other servers.
    ("ops@example.com", (rule("a", ("ops@example.com",), ("root",), dst=("tag:db",)),), "root",
     "to its tags (tag:server)"),
    # localpart: the login's local part is the user, in the same domain only.
    ("ops@example.com", (rule("a", ("autogroup:member",), ("localpart:*@other.com",)),), "ops",
     "no ssh_rules"),
    # The first rule admitting tsops is a check rule: no browser login is possible.
    ("ops@example.com", (rule("c", ("autogroup:member",), ("root",), action="check"),
                         rule("a", ("ops@example.com",), ("root",))), "root",
     "is 'c' with action check"),
])
def test_refused(identity: str, rules: tuple[SshRule, ...], user: str, said: str) -> None:
    problem = identity_problem(rules, identity, server(user))
    assert problem is not None and problem.startswith("web1: ") and said in problem
