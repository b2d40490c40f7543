"""The desired policy from the inventory, and a pure plan that patches the text towards it.

tsops owns two things in the policy file: the `ssh` rules carrying its marker comment
(`// tsops: <rule name>` inside the rule's braces) and the `tagOwners` entries it added for the
tags those rules and the servers use. Everything else is the operator's and is never changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tsops.inventory.load import LoadedInventory
from tsops.policy import hujson
from tsops.policy.coverage import Coverage, Rule, Server, check, groups_in, rules_in
from tsops.policy.edit import (
    Item,
    Marked,
    detect_style,
    insert_after,
    insert_first,
    insert_last,
    remove_element,
    replace_value,
)
from tsops.policy.hujson import Array, Document, Element, Object, Splice

MARKER_RE = re.compile(r"^(?://|/\*)\s*tsops:\s*([a-z0-9][a-z0-9-]*)")
MARKER_NOTE = "managed by tsops from the inventory; edits here are overwritten"
Placement = Literal["first", "last"]


def marker(name: str) -> str:
    """The comment that marks a rule as tsops's."""
    return f"// tsops: {name} ({MARKER_NOTE})"


@dataclass(frozen=True)
class DesiredRule:
    """One ssh rule as tsops writes it; `recorder` is its one recorder tag, if any."""

    name: str
    body: dict[str, Any]
    recorder: str | None
    enforce: bool


def desired_rules(inventory: LoadedInventory) -> tuple[DesiredRule, ...]:
    """One policy ssh rule per inventory rule, keys in the reference's order."""
    model = inventory.model
    default_tag = model.recorders.tag if model.recorders is not None else None
    rules = []
    for rule in model.ssh_rules:
        recorder = rule.recorder or default_tag
        body: dict[str, Any] = {
            "action": rule.action, "src": list(rule.src), "dst": list(rule.dst),
            "users": list(rule.users),
        }
        if rule.check_period is not None:
            body["checkPeriod"] = rule.check_period
        if recorder is not None:
            body["recorder"] = [recorder]
            body["enforceRecorder"] = rule.enforce_recorder
        rules.append(DesiredRule(rule.name, body, recorder,
                                 rule.enforce_recorder and recorder is not None))
    return tuple(rules)


def desired_tags(inventory: LoadedInventory) -> tuple[str, ...]:
    """Every tag the servers, the recorders and the managed rules use, in first-seen order."""
    tags: list[str] = [tag for target in inventory.targets for tag in target.tags]
    for rule in desired_rules(inventory):
        for key in ("src", "dst", "recorder"):
            tags += [v for v in rule.body.get(key, []) if v.startswith("tag:")]
    return tuple(dict.fromkeys(tags))


def coverage_servers(inventory: LoadedInventory) -> tuple[Server, ...]:
    """The inventory's servers as coverage sees them (name and tags)."""
    return tuple(Server(t.name, t.tags) for t in inventory.targets if t.role == "server")


@dataclass(frozen=True)
class ManagedRule:
    """A rule found in the file with tsops's marker."""

    name: str
    index: int
    element: Element


@dataclass(frozen=True)
class PolicyPlan:
    """What patching the policy text would do; `after == before` means nothing to write."""

    before: str
    after: str
    splices: tuple[Splice, ...]
    added_tags: tuple[str, ...]
    added_rules: tuple[str, ...]
    changed_rules: tuple[str, ...]
    removed_rules: tuple[str, ...]
    warnings: tuple[str, ...]
    enforcing: tuple[tuple[str, str], ...]
    coverage: Coverage = field(default_factory=Coverage)

    @property
    def changed(self) -> bool:
        """Whether the text would change."""
        return self.after != self.before


def marker_of(node: hujson.Node) -> str | None:
    """The rule name in a tsops marker comment directly inside an object's braces, if any."""
    if not isinstance(node, Object):
        return None
    trivia = [m.before for m in node.members] + [m.after for m in node.members] + [node.tail]
    for stretch in trivia:
        for comment in hujson.comments(stretch):
            match = MARKER_RE.match(comment)
            if match:
                return match.group(1)
    return None


def managed_rules(ssh: Array) -> tuple[list[ManagedRule], list[str]]:
    """The rules carrying a marker (first of each name), and warnings about duplicates."""
    found: dict[str, ManagedRule] = {}
    warnings: list[str] = []
    for index, element in enumerate(ssh.elements):
        name = marker_of(element.value)
        if name is None:
            continue
        if name in found:
            warnings.append(f"ssh[{index}] carries the marker of tsops rule {name!r} again; "
                            f"only ssh[{found[name].index}] is managed, this copy is left alone")
            continue
        found[name] = ManagedRule(name, index, element)
    return list(found.values()), warnings


def plan_policy(
    text: str, rules: Sequence[DesiredRule], tags: Sequence[str], owners: Sequence[str] = (),
    servers: Sequence[Server] = (), placement: Placement = "last",
) -> PolicyPlan:
    """Patch `text` so that it holds `rules` and declares `tags`; raise HuJSONError if invalid.

    `placement` puts new managed rules after the operator's (`last`) or before them (`first`,
    moving any managed rule found after an operator's rule). The plan's coverage is that of
    the patched text for `servers`.
    """
    document = hujson.parse(text)
    top = document.value
    if not isinstance(top, Object):
        line, column = hujson.position(text, top.start)
        raise hujson.HuJSONError("the policy must be an object", line, column)
    style = detect_style(document)
    splices: list[Splice] = []
    top_items: list[Item] = []
    warnings: list[str] = []

    tag_owners = top.get("tagOwners")
    declared = set(hujson.to_python(tag_owners.value)) if tag_owners is not None and isinstance(
        tag_owners.value, Object) else set()
    added_tags = tuple(tag for tag in tags if tag not in declared)
    new_owners = [Item(list(owners), key=tag) for tag in added_tags]
    if tag_owners is None:
        if new_owners:
            top_items.append(Item({tag: list(owners) for tag in added_tags}, key="tagOwners"))
    elif isinstance(tag_owners.value, Object):
        splices += insert_last(text, tag_owners.value, new_owners, style)
    else:
        raise _shape_error(text, tag_owners.value, "tagOwners must be an object")

    ssh = top.get("ssh")
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    wanted = {rule.name: rule for rule in rules}
    if ssh is None:
        if rules:
            top_items.append(Item([Marked(r.body, marker(r.name)) for r in rules], key="ssh"))
            added = [r.name for r in rules]
    elif isinstance(ssh.value, Array):
        managed, duplicate_warnings = managed_rules(ssh.value)
        warnings += duplicate_warnings
        elements = ssh.value.elements
        managed_at = {m.index for m in managed}
        first_operator = next((i for i in range(len(elements)) if i not in managed_at),
                              len(elements))
        present = {m.name for m in managed}
        removed_at: list[int] = []
        moved: list[str] = []
        kept_ahead: list[int] = []
        for rule in managed:
            desired = wanted.get(rule.name)
            if desired is None:
                splices += remove_element(text, rule.element)
                removed.append(rule.name)
                removed_at.append(rule.index)
            elif placement == "first" and rule.index > first_operator:
                splices += remove_element(text, rule.element)
                moved.append(rule.name)
                removed_at.append(rule.index)
            else:
                kept_ahead.append(rule.index)
                if hujson.to_python(rule.element.value) != desired.body:
                    splices.append(replace_value(text, rule.element.value, desired.body, style,
                                                 marker(rule.name)))
                    changed.append(rule.name)
        new = [r for r in rules if r.name not in present or r.name in moved]
        items = [Item(r.body, marker=marker(r.name)) for r in new]
        if placement == "first" and first_operator < len(elements):
            ahead = [i for i in kept_ahead if i < first_operator]
            splices += (insert_after(text, ssh.value, max(ahead), items, style) if ahead
                        else insert_first(text, ssh.value, items, style))
        else:
            splices += insert_last(text, ssh.value, items, style, removed_at)
        added = [r.name for r in new if r.name not in moved]
        changed += moved
    else:
        raise _shape_error(text, ssh.value, "ssh must be an array")
    splices += insert_last(text, top, top_items, style)

    after = hujson.apply_splices(text, splices)
    candidate = hujson.parse(after)
    warnings += _port_22_warnings(hujson.to_python(candidate.value), rules)
    return PolicyPlan(
        before=text, after=after, splices=tuple(splices), added_tags=added_tags,
        added_rules=tuple(added), changed_rules=tuple(changed), removed_rules=tuple(removed),
        warnings=tuple(warnings),
        enforcing=tuple((r.name, r.recorder) for r in rules if r.enforce and r.recorder),
        coverage=policy_coverage(candidate, rules, servers, origin=document),
    )


def _ssh_elements(document: Document) -> list[Element]:
    top = document.value
    if not isinstance(top, Object):
        return []
    ssh = top.get("ssh")
    if ssh is None or not isinstance(ssh.value, Array):
        return []
    return ssh.value.elements


def _managed_names(document: Document) -> dict[int, str]:
    top = document.value
    ssh = top.get("ssh") if isinstance(top, Object) else None
    if ssh is None or not isinstance(ssh.value, Array):
        return {}
    return {m.index: m.name for m in managed_rules(ssh.value)[0]}


def policy_coverage(document: Document, rules: Sequence[DesiredRule],
                    servers: Sequence[Server], origin: Document | None = None) -> Coverage:
    """The coverage gaps of a policy for the servers, judged by the managed rules' intent.

    Only servers a recording managed rule reaches are checked (tsops records nothing else).
    With `origin` (the file before tsops's patch), an operator's rule is named by its index
    and line there: where the operator finds it.
    """
    recording = [r for r in rules if r.recorder]
    servers = [s for s in servers
               if any(d == "*" or d in s.tags for r in recording for d in r.body["dst"])]
    if not servers:
        return Coverage()
    names = _managed_names(document)
    where: dict[int, tuple[int, int]] | None = None
    if origin is not None:
        origin_names = _managed_names(origin)
        theirs = [(i, hujson.position(origin.text, e.value.start)[0])
                  for i, e in enumerate(_ssh_elements(origin)) if i not in origin_names]
        ours = [i for i in range(len(_ssh_elements(document))) if i not in names]
        where = dict(zip(ours, theirs, strict=False))
    intents = [Rule.read(index, 0, rule.body, rule.name) for index, rule in enumerate(rules)]
    return check(rules_in(document, names, where), intents, servers, groups_in(document))


def _shape_error(text: str, node: hujson.Node, message: str) -> hujson.HuJSONError:
    line, column = hujson.position(text, node.start)
    return hujson.HuJSONError(message, line, column)


def _port_22_warnings(policy: dict[str, Any], rules: Sequence[DesiredRule]) -> Iterator[str]:
    """Rules whose sources `acls`/`grants` do not visibly allow to reach port 22 of the dst."""
    for rule in rules:
        for src in rule.body["src"]:
            for dst in rule.body["dst"]:
                if not _allows_22(policy, src, dst):
                    yield (f"ssh rule {rule.name!r}: no acls or grants entry allows {src} to "
                           f"reach {dst} on port 22, so Tailscale SSH cannot be reached "
                           "(the check matches selectors literally, `*` included)")


def _allows_22(policy: dict[str, Any], src: str, dst: str) -> bool:
    for acl in policy.get("acls", []) or []:
        if not isinstance(acl, dict) or acl.get("action", "accept") != "accept":
            continue
        if not _matches(src, acl.get("src", [])):
            continue
        for target in acl.get("dst", []):
            host, _, ports = str(target).rpartition(":")
            if _matches(dst, [host]) and _port_22(ports.split(",")):
                return True
    for grant in policy.get("grants", []) or []:
        if not isinstance(grant, dict):
            continue
        if (_matches(src, grant.get("src", [])) and _matches(dst, grant.get("dst", []))
                and _port_22([str(p).removeprefix("tcp:") for p in grant.get("ip", [])])):
            return True
    return False


def _matches(selector: str, selectors: Any) -> bool:
    return isinstance(selectors, list) and ("*" in selectors or selector in selectors)


def _port_22(ports: list[str]) -> bool:
    for port in ports:
        if port == "*" or port == "22":
            return True
        low, dash, high = port.partition("-")
        if dash and low.isdigit() and high.isdigit() and int(low) <= 22 <= int(high):
            return True
    return False
