"""Policy file checks: structure, declared tags, SSH rule rules, and the policy's own `tests`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from tests.sim.control import hujson

# Close to the policy a new tailnet starts with (allow all, SSH to own devices in check mode).
DEFAULT_POLICY = """\
// Example/default ACLs for unrestricted connections.
{
\t// Declare static groups of users. Use autogroups for all users or users with a specific role.
\t// "groups": {
\t//   "group:example": ["alice@example.com", "bob@example.com"],
\t// },

\t// Define the tags which can be applied to devices and by which users.
\t// "tagOwners": {
\t//   "tag:example": ["autogroup:admin"],
\t// },

\t// Define access control lists for users, groups, autogroups, tags,
\t// Tailscale IP addresses, and subnet ranges.
\t"acls": [
\t\t// Allow all connections.
\t\t// Comment this section out if you want to define specific restrictions.
\t\t{"action": "accept", "src": ["*"], "dst": ["*:*"]},
\t],

\t// Define users and devices that can use Tailscale SSH.
\t"ssh": [
\t\t// Allow all users to SSH into their own devices in check mode.
\t\t// Comment this section out if you want to define specific restrictions.
\t\t{
\t\t\t"action": "check",
\t\t\t"src":    ["autogroup:member"],
\t\t\t"dst":    ["autogroup:self"],
\t\t\t"users":  ["autogroup:nonroot", "root"],
\t\t},
\t],
}
"""

SECTIONS = frozenset(
    {
        "acls", "grants", "groups", "hosts", "tagOwners", "autoApprovers", "ssh", "tests",
        "sshTests", "nodeAttrs", "postures", "ipsets", "derpMap", "disableIPv4",
        "randomizeClientPort", "OneCGNATRoute",
    }
)  # fmt: skip
AUTOGROUPS = frozenset(
    {
        "autogroup:member", "autogroup:tagged", "autogroup:self", "autogroup:admin",
        "autogroup:owner", "autogroup:it-admin", "autogroup:network-admin",
        "autogroup:billing-admin", "autogroup:auditor", "autogroup:internet",
        "autogroup:shared", "autogroup:nonroot", "autogroup:danger-all",
    }
)  # fmt: skip
ACL_FIELDS = frozenset({"action", "src", "dst", "proto", "srcPosture"})
GRANT_FIELDS = frozenset({"src", "dst", "ip", "app", "srcPosture", "via"})
SSH_FIELDS = frozenset(
    {"action", "src", "dst", "users", "checkPeriod", "acceptEnv", "recorder", "enforceRecorder"}
)
TEST_FIELDS = frozenset({"src", "proto", "accept", "deny"})
SSH_TEST_FIELDS = frozenset({"src", "dst", "accept", "check", "deny"})
CHECK_PERIOD_MIN, CHECK_PERIOD_MAX = 60.0, 168 * 3600.0
_GO_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                      "m": 60.0, "h": 3600.0}
PROTOCOLS = {"tcp": "6", "udp": "17", "icmp": "1", "sctp": "132", "igmp": "2", "gre": "47"}
TAG_NAME = re.compile(r"tag:[A-Za-z][A-Za-z0-9-]*")
PORT_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


@dataclass(frozen=True)
class Invalid:
    """Why a policy is refused, in the API's error shape (`message` plus `data`)."""

    message: str
    data: list[dict[str, Any]]

    def body(self) -> dict[str, Any]:
        """Return the JSON error body the API sends."""
        return {"message": self.message, "data": self.data}


def check(text: str) -> tuple[dict[str, Any] | None, Invalid | None]:
    """Parse and check a candidate policy; return it parsed, or why it is invalid."""
    try:
        parsed = hujson.loads(text)
    except hujson.HuJSONError as error:
        return None, Invalid(str(error), [{"errors": [str(error)]}])
    if not isinstance(parsed, dict):
        message = "policy file must be a JSON object"
        return None, Invalid(message, [{"errors": [message]}])
    errors = _Checker(parsed).run()
    if errors:
        message = errors[0] if len(errors) == 1 else f"{len(errors)} errors: {errors[0]}; ..."
        return None, Invalid(message, [{"errors": errors}])
    failures = run_tests(parsed) + run_ssh_tests(parsed)
    if failures:
        return None, Invalid("test(s) failed", failures)
    return parsed, None


def tag_owners(policy: dict[str, Any]) -> dict[str, list[str]]:
    """Return the policy's tagOwners (empty when absent)."""
    owners = policy.get("tagOwners", {})
    return owners if isinstance(owners, dict) else {}


def undeclared_tags(policy: dict[str, Any], tags: list[str]) -> list[str]:
    """Return the tags that are malformed or not declared in tagOwners."""
    declared = tag_owners(policy)
    return [tag for tag in tags if not TAG_NAME.fullmatch(tag) or tag not in declared]


def owned_by_tags(policy: dict[str, Any], tag: str, owner_tags: list[str]) -> bool:
    """Return whether tag is one of owner_tags or owned by one of them in tagOwners."""
    return tag in owner_tags or any(o in owner_tags for o in tag_owners(policy).get(tag, []))


class _Checker:
    """Collects every structural problem of one parsed policy."""

    def __init__(self, policy: dict[str, Any]) -> None:
        """Remember the policy being checked."""
        self.policy = policy
        self.errors: list[str] = []
        self.groups: dict[str, Any] = {}
        self.hosts: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}

    def run(self) -> list[str]:
        """Check every section and return the problems found."""
        for key in self.policy:
            if key not in SECTIONS:
                self.errors.append(f"unknown top-level field {key!r}")
        self.groups = self._mapping("groups")
        self.hosts = self._mapping("hosts")
        self.tags = self._mapping("tagOwners")
        self._check_declarations()
        for index, rule in enumerate(self._rules("acls", ACL_FIELDS)):
            self._check_acl(f"acls[{index}]", rule)
        for index, rule in enumerate(self._rules("grants", GRANT_FIELDS)):
            self._check_grant(f"grants[{index}]", rule)
        for index, rule in enumerate(self._rules("ssh", SSH_FIELDS)):
            self._check_ssh(f"ssh[{index}]", rule)
        for index, test in enumerate(self._rules("tests", TEST_FIELDS)):
            self._check_test(f"tests[{index}]", test)
        for index, test in enumerate(self._rules("sshTests", SSH_TEST_FIELDS)):
            self._check_ssh_test(f"sshTests[{index}]", test)
        return self.errors

    def _mapping(self, section: str) -> dict[str, Any]:
        """Return a section that must be an object, noting when it is not."""
        value = self.policy.get(section, {})
        if isinstance(value, dict):
            return value
        self.errors.append(f"{section} must be an object")
        return {}

    def _rules(self, section: str, fields: frozenset[str]) -> list[dict[str, Any]]:
        """Return a section's rule objects, noting wrong types and unknown fields."""
        value = self.policy.get(section, [])
        if not isinstance(value, list):
            self.errors.append(f"{section} must be an array")
            return []
        rules: list[dict[str, Any]] = []
        for index, rule in enumerate(value):
            if not isinstance(rule, dict):
                self.errors.append(f"{section}[{index}] must be an object")
                continue
            for key in rule:
                if key not in fields:
                    self.errors.append(f"{section}[{index}]: unknown field {key!r}")
            rules.append(rule)
        return rules

    def _strings(self, where: str, value: Any, *, required: bool = True) -> list[str]:
        """Return value as a list of strings, noting when it is not one (or empty if required)."""
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.errors.append(f"{where} must be an array of strings")
            return []
        if required and not value:
            self.errors.append(f"{where} must not be empty")
        return value

    def _check_declarations(self) -> None:
        """Check groups, hosts and tagOwners, including owners that are tags or groups."""
        for name, members in self.groups.items():
            if not name.startswith("group:"):
                self.errors.append(f"groups: {name!r} must start with 'group:'")
            self._strings(f"groups[{name!r}]", members, required=False)
        for name, address in self.hosts.items():
            if not isinstance(address, str) or not _is_address(address):
                self.errors.append(f"hosts[{name!r}]: {address!r} is not an IP address or prefix")
        for tag, owners in self.tags.items():
            if not TAG_NAME.fullmatch(tag):
                self.errors.append(f"tagOwners: {tag!r} is not a valid tag name")
            for owner in self._strings(f"tagOwners[{tag!r}]", owners, required=False):
                self._check_selector(f"tagOwners[{tag!r}]", owner)

    def _check_selector(self, where: str, selector: str) -> None:
        """Check one user, group, tag, autogroup, host or address reference."""
        if selector.startswith("tag:"):
            if selector not in self.tags:
                self.errors.append(f"{where}: tag {selector!r} is not defined in tagOwners")
        elif selector.startswith("group:"):
            if selector not in self.groups:
                self.errors.append(f"{where}: group {selector!r} is not defined in groups")
        elif selector.startswith("autogroup:"):
            if selector not in AUTOGROUPS:
                self.errors.append(f"{where}: unknown autogroup {selector!r}")
        elif not (
            selector == "*" or "@" in selector or selector in self.hosts or _is_address(selector)
        ):
            self.errors.append(
                f"{where}: {selector!r} is not a user, group, tag, autogroup, host or IP"
            )

    def _check_acl(self, where: str, rule: dict[str, Any]) -> None:
        """Check one acls entry: accept only, sources, and `host:ports` destinations."""
        if rule.get("action") != "accept":
            self.errors.append(f"{where}: action must be 'accept'")
        for source in self._strings(f"{where}.src", rule.get("src")):
            self._check_selector(f"{where}.src", source)
        for destination in self._strings(f"{where}.dst", rule.get("dst")):
            host, _, ports = destination.rpartition(":")
            if not host or not _valid_ports(ports):
                self.errors.append(f"{where}.dst: {destination!r} must be 'host:ports'")
                continue
            self._check_selector(f"{where}.dst", host)
        if "proto" in rule and _protocol(rule["proto"]) is None:
            self.errors.append(f"{where}.proto: unknown protocol {rule['proto']!r}")

    def _check_grant(self, where: str, rule: dict[str, Any]) -> None:
        """Check one grants entry: sources, destinations, and `ip` or `app`."""
        for source in self._strings(f"{where}.src", rule.get("src")):
            self._check_selector(f"{where}.src", source)
        for destination in self._strings(f"{where}.dst", rule.get("dst")):
            self._check_selector(f"{where}.dst", destination)
        if "ip" not in rule and "app" not in rule:
            self.errors.append(f"{where}: needs 'ip' or 'app'")
        for entry in self._strings(f"{where}.ip", rule.get("ip", []), required=False):
            if _grant_ports(entry) is None:
                self.errors.append(f"{where}.ip: {entry!r} is not a valid port specification")
        if "app" in rule and not isinstance(rule["app"], dict):
            self.errors.append(f"{where}.app must be an object")

    def _check_ssh(self, where: str, rule: dict[str, Any]) -> None:
        """Check one ssh rule: action, no `*` destination, one recorder tag, field types."""
        if rule.get("action") not in ("accept", "check"):
            self.errors.append(f"{where}: action must be 'accept' or 'check'")
        for source in self._strings(f"{where}.src", rule.get("src")):
            self._check_selector(f"{where}.src", source)
        for destination in self._strings(f"{where}.dst", rule.get("dst")):
            if destination == "*":
                self.errors.append(f"{where}.dst: '*' is not allowed in ssh rules")
            else:
                self._check_selector(f"{where}.dst", destination)
        self._strings(f"{where}.users", rule.get("users"))
        self._strings(f"{where}.acceptEnv", rule.get("acceptEnv", []), required=False)
        if "recorder" in rule:
            recorders = self._strings(f"{where}.recorder", rule["recorder"])
            if len(recorders) != 1 or not recorders[0].startswith("tag:"):
                self.errors.append(f"{where}.recorder must hold exactly one tag")
            for recorder in recorders:
                self._check_selector(f"{where}.recorder", recorder)
        if "enforceRecorder" in rule and not isinstance(rule["enforceRecorder"], bool):
            self.errors.append(f"{where}.enforceRecorder must be true or false")
        if "checkPeriod" in rule:
            self._check_period(where, rule)

    def _check_period(self, where: str, rule: dict[str, Any]) -> None:
        """checkPeriod: a string, only on check rules, `always` or a duration of 1m to 168h."""
        period = rule["checkPeriod"]
        if not isinstance(period, str):
            self.errors.append(f"{where}.checkPeriod must be a string")
        elif rule.get("action") != "check":
            self.errors.append(f"{where}.checkPeriod is only valid with action 'check'")
        elif period != "always":
            seconds = _go_duration(period)
            if seconds is None:
                self.errors.append(f"{where}.checkPeriod: invalid duration {period!r}")
            elif not CHECK_PERIOD_MIN <= seconds <= CHECK_PERIOD_MAX:
                self.errors.append(f"{where}.checkPeriod {period!r} must be between 1m and 168h")

    def _check_test(self, where: str, test: dict[str, Any]) -> None:
        """Check one tests entry in the subset the simulator evaluates."""
        source = test.get("src")
        if not isinstance(source, str) or not (source.startswith("tag:") or "@" in source):
            self.errors.append(f"{where}.src must be a user or a tag (simulator subset)")
        for key in ("accept", "deny"):
            for destination in self._strings(f"{where}.{key}", test.get(key, []), required=False):
                host, _, port = destination.rpartition(":")
                if not host or not port.isdigit():
                    self.errors.append(f"{where}.{key}: {destination!r} must be 'host:port'")
        if "proto" in test and _protocol(test["proto"]) is None:
            self.errors.append(f"{where}.proto: unknown protocol {test['proto']!r}")

    def _check_ssh_test(self, where: str, test: dict[str, Any]) -> None:
        """Check one sshTests entry in the subset the simulator evaluates."""
        source = test.get("src")
        if not isinstance(source, str) or not (source.startswith("tag:") or "@" in source):
            self.errors.append(f"{where}.src must be a user or a tag (simulator subset)")
        self._strings(f"{where}.dst", test.get("dst"))
        for key in ("accept", "check", "deny"):
            self._strings(f"{where}.{key}", test.get(key, []), required=False)


def _is_address(text: str) -> bool:
    """Return whether text is an IP address or prefix."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _protocol(value: Any) -> str | None:
    """Return a protocol name or number as its number string, or None when unknown."""
    if not isinstance(value, str):
        return None
    if value.isdigit() and 0 <= int(value) <= 255:
        return str(int(value))
    return PROTOCOLS.get(value.lower())


def _port_ranges(spec: str) -> list[tuple[int, int]] | None:
    """Parse `*`, `22`, `80,443` or `1000-2000` into inclusive ranges, or None when invalid."""
    if spec == "*":
        return [(0, 65535)]
    ranges: list[tuple[int, int]] = []
    for item in spec.split(","):
        match = PORT_RANGE.fullmatch(item)
        if not match:
            return None
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 0 <= low <= high <= 65535:
            return None
        ranges.append((low, high))
    return ranges


def _valid_ports(spec: str) -> bool:
    """Return whether spec is a valid ACL port list."""
    return _port_ranges(spec) is not None


def _grant_ports(entry: str) -> tuple[str | None, list[tuple[int, int]]] | None:
    """Parse a grant `ip` entry (`*`, `22`, `tcp:22`, `udp:*`) into (protocol, ranges)."""
    if ":" not in entry:
        ranges = _port_ranges(entry)
        return None if ranges is None else (None, ranges)
    name, _, spec = entry.partition(":")
    protocol = _protocol(name)
    ranges = _port_ranges(spec)
    return None if protocol is None or ranges is None else (protocol, ranges)


def run_tests(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the policy's `tests`; return one `{"user", "errors"}` per failing test."""
    failures: list[dict[str, Any]] = []
    for test in policy.get("tests", []):
        source = test["src"]
        protocol = _protocol(test.get("proto", "tcp"))
        errors = [
            f"{source} cannot access {destination}"
            for destination in test.get("accept", [])
            if not _allowed(policy, source, destination, protocol)
        ]
        errors += [
            f"{source} can access {destination}"
            for destination in test.get("deny", [])
            if _allowed(policy, source, destination, protocol)
        ]
        if errors:
            failures.append({"user": source, "errors": errors})
    return failures


def _go_duration(text: str) -> float | None:
    """Seconds in a Go duration string (time.ParseDuration: "12h", "1h30m", "-5m"), or None."""
    body = text[1:] if text[:1] in ("+", "-") else text
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if not body:
        return None
    seconds, position = 0.0, 0
    while position < len(body):
        match = _GO_DURATION_PART.match(body, position)
        if match is None:
            return None
        seconds += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * seconds


def run_ssh_tests(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the policy's `sshTests`; return one `{"user", "errors"}` per failing test."""
    failures: list[dict[str, Any]] = []
    for test in policy.get("sshTests", []):
        source = test["src"]
        errors = [
            f"{source} to {host} as {user}: expected {wanted}, got {got or 'deny'}"
            for host in test["dst"]
            for wanted in ("accept", "check", "deny")
            for user in test.get(wanted, [])
            if (got := _ssh_action(policy, source, host, user))
            != (None if wanted == "deny" else wanted)
        ]
        if errors:
            failures.append({"user": source, "errors": errors})
    return failures


def _ssh_action(policy: dict[str, Any], source: str, host: str, user: str) -> str | None:
    """Return the action of the first SSH rule matching source, host and local user, if any."""
    for rule in policy.get("ssh", []):
        if (
            any(_source_matches(policy, s, source) for s in rule["src"])
            and any(_destination_matches(policy, d, host, source) for d in rule["dst"])
            and any(_ssh_user_matches(u, user, source) for u in rule["users"])
        ):
            action: str = rule["action"]
            return action
    return None


def _ssh_user_matches(selector: str, user: str, source: str) -> bool:
    """Return whether an SSH rule's `users` entry lets source log in as the local user."""
    if selector == "autogroup:nonroot":
        return user != "root"
    if selector.startswith("localpart:*@"):
        return source == f"{user}@{selector.removeprefix('localpart:*@')}"
    return selector == user


def _allowed(policy: dict[str, Any], source: str, destination: str, protocol: str | None) -> bool:
    """Return whether acls or grants let source reach `host:port` over protocol."""
    host, _, port_text = destination.rpartition(":")
    port = int(port_text)
    for rule in policy.get("acls", []):
        if "proto" in rule and _protocol(rule["proto"]) != protocol:
            continue
        if not any(_source_matches(policy, s, source) for s in rule["src"]):
            continue
        for rule_destination in rule["dst"]:
            rule_host, _, spec = rule_destination.rpartition(":")
            ranges = _port_ranges(spec) or []
            if _in_ranges(port, ranges) and _destination_matches(policy, rule_host, host, source):
                return True
    for grant in policy.get("grants", []):
        if not any(_source_matches(policy, s, source) for s in grant["src"]):
            continue
        if not any(_destination_matches(policy, d, host, source) for d in grant["dst"]):
            continue
        for entry in grant.get("ip", []):
            parsed = _grant_ports(entry)
            if parsed and parsed[0] in (None, protocol) and _in_ranges(port, parsed[1]):
                return True
    return False


def _in_ranges(port: int, ranges: list[tuple[int, int]]) -> bool:
    """Return whether port lies in one of the inclusive ranges."""
    return any(low <= port <= high for low, high in ranges)


def _source_matches(policy: dict[str, Any], selector: str, identity: str) -> bool:
    """Return whether a rule source selector covers a user or tag identity."""
    is_tag = identity.startswith("tag:")
    if selector in ("*", identity):
        return True
    if selector == "autogroup:tagged":
        return is_tag
    if selector == "autogroup:member":
        return not is_tag
    if selector.startswith("group:"):
        return identity in policy.get("groups", {}).get(selector, [])
    return False


def _destination_matches(policy: dict[str, Any], selector: str, host: str, source: str) -> bool:
    """Return whether a rule destination selector covers a test's destination host."""
    if selector == "autogroup:self":
        return host == source and not source.startswith("tag:")
    if _source_matches(policy, selector, host):
        return True
    hosts = policy.get("hosts", {})
    wanted = hosts.get(host, host)
    have = hosts.get(selector, selector)
    if not (_is_address(wanted) and _is_address(have)):
        return False
    wanted_net = ipaddress.ip_network(wanted, strict=False)
    have_net = ipaddress.ip_network(have, strict=False)
    return wanted_net.version == have_net.version and wanted_net.subnet_of(have_net)  # type: ignore[arg-type]
