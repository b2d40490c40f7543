"""Which SSH rule of a policy applies to a session, as a Tailscale SSH server decides it.

Reference section 4. First match wins. Supported selectors (anything else raises
UnsupportedSelector rather than silently not matching):
- src: `tag:x`, `autogroup:member` (any user-owned node), `autogroup:tagged`, `group:x`, a login.
- dst: `tag:x`, `autogroup:self` (a node of the same user as the source), a login.
- users: a local name, `root`, `autogroup:nonroot`, `localpart:*@<domain>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Relative, so that the same file also runs inside lab hosts (embedded in tailscaled).
from .cast import SourceNode

TAGGED_OWNER = "tagged-devices"  # the owner the control plane shows for tagged nodes


class UnsupportedSelector(ValueError):
    """A selector the session generator does not evaluate."""


@dataclass(frozen=True)
class Target:
    """The destination node: its tags, or the user who owns it."""

    tags: tuple[str, ...]
    owner: str | None  # login, None when tagged


@dataclass(frozen=True)
class SSHRule:
    """One entry of the policy's `ssh` list."""

    index: int
    action: str
    src: tuple[str, ...]
    dst: tuple[str, ...]
    users: tuple[str, ...]
    recorder: str | None
    enforce_recorder: bool

    @classmethod
    def parse(cls, index: int, rule: Mapping[str, Any]) -> SSHRule:
        """Read a rule as stored in the policy."""
        recorders = list(rule.get("recorder", []))
        if len(recorders) > 1:
            raise ValueError(f"ssh[{index}].recorder holds more than one tag: {recorders}")
        return cls(
            index=index,
            action=str(rule["action"]),
            src=tuple(rule.get("src", [])),
            dst=tuple(rule.get("dst", [])),
            users=tuple(rule.get("users", [])),
            recorder=recorders[0] if recorders else None,
            enforce_recorder=bool(rule.get("enforceRecorder", False)),
        )


def ssh_rules(policy: Mapping[str, Any]) -> list[SSHRule]:
    """Return the policy's SSH rules in order."""
    return [SSHRule.parse(index, rule) for index, rule in enumerate(policy.get("ssh", []))]


def source_matches(policy: Mapping[str, Any], selector: str, source: SourceNode) -> bool:
    """Return whether `selector` in a rule's src covers the source node."""
    if selector.startswith("tag:"):
        return selector in source.tags
    if selector == "autogroup:member":
        return source.login is not None
    if selector == "autogroup:tagged":
        return bool(source.tags)
    if selector.startswith("group:"):
        return source.login in policy.get("groups", {}).get(selector, [])
    if "@" in selector and ":" not in selector:
        return source.login == selector
    raise UnsupportedSelector(f"ssh src selector {selector!r}")


def destination_matches(selector: str, target: Target, source: SourceNode) -> bool:
    """Return whether `selector` in a rule's dst covers the destination node."""
    if selector.startswith("tag:"):
        return selector in target.tags
    if selector == "autogroup:self":
        return source.login is not None and target.owner == source.login
    if "@" in selector and ":" not in selector:
        return target.owner == selector
    raise UnsupportedSelector(f"ssh dst selector {selector!r}")


def user_matches(selector: str, ssh_user: str, source: SourceNode) -> bool:
    """Return whether `selector` in a rule's users allows logging in as `ssh_user`."""
    if selector == "autogroup:nonroot":
        return ssh_user != "root"
    if selector.startswith("localpart:*@"):
        domain = selector.removeprefix("localpart:*@")
        return source.login is not None and source.login == f"{ssh_user}@{domain}"
    if selector.startswith(("autogroup:", "localpart:")) or selector == "*":
        raise UnsupportedSelector(f"ssh users selector {selector!r}")
    return selector == ssh_user


def matching_rule(
    policy: Mapping[str, Any], source: SourceNode, target: Target, ssh_user: str
) -> SSHRule | None:
    """Return the first rule that lets `source` log in to `target` as `ssh_user`, if any."""
    return evaluate(policy, source, target, ssh_user)[0]


def evaluate(
    policy: Mapping[str, Any], source: SourceNode, target: Target, ssh_user: str
) -> tuple[SSHRule | None, bool]:
    """Return (the first matching rule or None, whether some rule failed only on the user).

    The second value picks the SSH server's refusal: "does not permit you to SSH as user X"
    when a rule covered source and destination but not the user, else "... to this node".
    """
    failed_on_user = False
    for rule in ssh_rules(policy):
        if any(source_matches(policy, s, source) for s in rule.src) and any(
            destination_matches(d, target, source) for d in rule.dst
        ):
            if any(user_matches(u, ssh_user, source) for u in rule.users):
                return rule, failed_on_user
            failed_on_user = True
    return None, failed_on_user


def target_of(tags: Sequence[str], owner: str) -> Target:
    """Return the Target for a node with `tags` owned by `owner` (as the control plane says)."""
    return Target(tuple(tags), None if tags or owner == TAGGED_OWNER else owner)
