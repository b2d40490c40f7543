"""Policy coverage: which sessions to the servers land first on a rule that does not record them.

Tailscale SSH takes the first `ssh` rule whose src, dst and users all match the session
(reference section 4). This module applies that rule, with pure code, to every rule of a policy
(the operator's and tsops's) for every server of the inventory, and reports each *gap*: a rule
that some (source, local user) reaches first although it has no `recorder`, or has one without
`enforceRecorder` where the tsops rule meant for that session enforces it.

The sessions tried are representatives of every kind of source the policy can tell apart: each
login it names (in `groups`, `src`, `dst`), other members (also one per `localpart:*@domain`
domain), each tag in a `src`, other tagged nodes; as each local user it names, `root`, and
another non-root user. A source with several tags matches at least the rules one of its tags
matches, so one tag at a time finds every first match there is. A selector tsops cannot
evaluate (an unknown autogroup, a group not defined in the file, an address) *may* match: a
rule that may match and does not record is reported as a possible gap, and a recording rule
that may match is never trusted to catch a session before a later rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tsops.policy import hujson

NO, MAYBE, YES = 0, 1, 2
OTHER_TAG = "tag:\x00other"  # a tag no selector names
OTHER_USER = "\x00other"  # a non-root local user no rule names
GRANTING_ACTIONS = ("accept", "check")
Reason = Literal["no-recorder", "not-enforced"]


@dataclass(frozen=True)
class Rule:
    """One ssh rule as coverage reads it; `managed` is the tsops rule name, if it is one."""

    index: int
    line: int
    action: Any
    src: tuple[str, ...]
    dst: tuple[str, ...]
    users: tuple[str, ...]
    recorder: tuple[str, ...]
    enforce: bool
    managed: str | None = None
    malformed: bool = False

    @classmethod
    def read(cls, index: int, line: int, value: Any, managed: str | None = None) -> Rule:
        """A rule from its plain value; a malformed one (not an object, a list that is not a
        list of strings) matches conservatively and records nothing."""
        if not isinstance(value, dict):
            return cls(index, line, None, (), (), (), (), False, managed, True)
        lists: dict[str, tuple[str, ...]] = {}
        malformed = False
        for key in ("src", "dst", "users", "recorder"):
            raw = value.get(key, [])
            if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
                lists[key] = tuple(raw)
            else:
                lists[key] = ()
                malformed = True
        return cls(index, line, value.get("action"), lists["src"], lists["dst"], lists["users"],
                   lists["recorder"], value.get("enforceRecorder") is True, managed, malformed)

    def describe(self) -> str:
        """`ssh[0] (line 12): src [group:dev] dst [tag:server] users [root]`."""
        owner = f" (tsops rule {self.managed!r})" if self.managed else ""
        if self.malformed and not (self.src or self.dst or self.users):
            return f"ssh[{self.index}] (line {self.line}){owner}: not a well-formed rule"
        return (f"ssh[{self.index}] (line {self.line}){owner}: src [{', '.join(self.src)}] "
                f"dst [{', '.join(self.dst)}] users [{', '.join(self.users)}]")


@dataclass(frozen=True)
class Server:
    """An inventory server as the policy sees it: its name and its tags."""

    name: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """A representative source node: a login (None: one the policy does not name, at
    `domain` when given) or one tag."""

    label: str
    login: str | None = None
    domain: str | None = None
    tag: str | None = None

    @property
    def member(self) -> bool:
        """Whether it is a user-owned node (autogroup:member)."""
        return self.tag is None


@dataclass(frozen=True)
class Gap:
    """A rule that some sessions to `servers` reach first without the recording they need."""

    rule: Rule
    reason: Reason
    servers: tuple[str, ...]
    sources: tuple[str, ...]
    users: tuple[str, ...]
    certain: bool
    intended: str | None  # the tsops rule that would have recorded these sessions
    unknown: tuple[str, ...]  # selectors that could not be evaluated (a possible gap)

    def why(self) -> str:
        """Why these sessions are not recorded as they should be."""
        if self.reason == "no-recorder":
            return "no recorder"
        wanted = f"tsops rule {self.intended!r}" if self.intended else "the inventory"
        return (f"recorder {', '.join(self.rule.recorder)} without enforceRecorder, which "
                f"{wanted} enforces")

    def line(self) -> str:
        """The gap on one line, for the terminal."""
        users = ", ".join(_user_label(u) for u in self.users)
        kind = "coverage gap" if self.certain else "possible coverage gap"
        ahead = f"; ahead of tsops rule {self.intended!r}" if self.intended else ""
        unsure = (f" (cannot evaluate {', '.join(self.unknown)})"
                  if not self.certain and self.unknown else "")
        return (f"{kind}: {', '.join(self.servers)}: {self.rule.describe()} matches first for "
                f"{', '.join(self.sources)} as {users}: {self.why()}{ahead}{unsure}")

    def as_dict(self) -> dict[str, Any]:
        """The gap as JSON-ready data."""
        return {"servers": list(self.servers), "rule": self.rule.index, "line": self.rule.line,
                "rule_text": self.rule.describe(), "managed": self.rule.managed,
                "reason": self.reason, "certain": self.certain,
                "sources": list(self.sources),
                "users": [_user_label(u) for u in self.users], "intended": self.intended,
                "unknown_selectors": list(self.unknown), "message": self.line()}


@dataclass(frozen=True)
class Coverage:
    """Every gap found, and which servers were checked."""

    servers: tuple[str, ...] = ()
    gaps: tuple[Gap, ...] = ()

    @property
    def clean(self) -> bool:
        """Whether every session to every server lands on a rule that records it as asked."""
        return not self.gaps

    def lines(self) -> list[str]:
        """One line per gap."""
        return [gap.line() for gap in self.gaps]

    def as_dict(self) -> dict[str, Any]:
        """The coverage as JSON-ready data."""
        return {"servers": list(self.servers), "clean": self.clean,
                "gaps": [gap.as_dict() for gap in self.gaps]}


def _user_label(user: str) -> str:
    return "any other non-root user" if user == OTHER_USER else user


def _is_login(selector: str) -> bool:
    return "@" in selector and ":" not in selector and not selector.startswith("*")


def rules_in(document: hujson.Document, managed_names: Mapping[int, str],
             origin: Mapping[int, tuple[int, int]] | None = None) -> list[Rule]:
    """The `ssh` rules of a parsed policy, with their 1-based lines.

    `managed_names` maps indices to tsops rule names. `origin` maps an index to the (index,
    line) the same rule has in another text (the file as it is, for a rule tsops does not
    write): those are what the operator finds in their file.
    """
    top = document.value
    if not isinstance(top, hujson.Object):
        return []
    ssh = top.get("ssh")
    if ssh is None or not isinstance(ssh.value, hujson.Array):
        return []
    found = []
    for index, element in enumerate(ssh.value.elements):
        shown, line = index, hujson.position(document.text, element.value.start)[0]
        if origin is not None and index in origin:
            shown, line = origin[index]
        found.append(Rule.read(shown, line, hujson.to_python(element.value),
                               managed_names.get(index)))
    return found


def groups_in(document: hujson.Document) -> dict[str, tuple[str, ...]] | None:
    """The policy's `groups` (None when it is not an object of string lists)."""
    top = document.value
    if not isinstance(top, hujson.Object):
        return {}
    member = top.get("groups")
    if member is None:
        return {}
    value = hujson.to_python(member.value)
    if not isinstance(value, dict):
        return None
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in value.items():
        if isinstance(members, list):
            groups[name] = tuple(str(m) for m in members)
    return groups


class _Evaluator:
    """Three-valued matching of selectors (NO, MAYBE, YES) for one policy."""

    def __init__(self, groups: Mapping[str, tuple[str, ...]] | None) -> None:
        self.groups = None if groups is None else {
            name: (frozenset(members), any(not _is_login(m) for m in members))
            for name, members in groups.items()}

    def source(self, selector: str, source: Source) -> int:
        if selector == "*":
            return YES
        if selector.startswith("tag:"):
            return YES if source.tag == selector else NO
        if selector == "autogroup:member":
            return YES if source.member else NO
        if selector == "autogroup:tagged":
            return NO if source.member else YES
        if not source.member:
            # Roles, groups and logins are people: a tagged node is none of them.
            if selector.startswith(("group:", "autogroup:")) or _is_login(selector):
                return NO
            return MAYBE
        if selector.startswith("group:"):
            if self.groups is None or selector not in self.groups:
                return MAYBE  # synced from the identity provider, or a file tsops cannot read
            members, opaque = self.groups[selector]
            if source.login is not None and source.login in members:
                return YES
            return MAYBE if opaque else NO
        if _is_login(selector):
            return YES if source.login == selector else NO
        return MAYBE

    @staticmethod
    def destination(selector: str, server: Server) -> int:
        if selector == "*":
            return YES
        if selector.startswith("tag:"):
            return YES if selector in server.tags else NO
        if selector == "autogroup:tagged":
            return YES if server.tags else NO
        if server.tags and (selector in ("autogroup:self", "autogroup:member")
                            or _is_login(selector)):
            return NO  # a tagged node belongs to no user
        return MAYBE

    @staticmethod
    def user(selector: str, user: str, source: Source, named: frozenset[str]) -> int:
        if selector == "*":
            return YES
        if selector == "autogroup:nonroot":
            return YES if user != "root" else NO
        if selector.startswith("localpart:*@"):
            domain = selector.removeprefix("localpart:*@")
            if source.login is not None:
                return YES if source.login == f"{user}@{domain}" else NO
            if source.member and source.domain == domain and user != "root":
                # Another member of that domain: its local part is any name but the named ones.
                return NO if f"{user}@{domain}" in named else YES
            return NO
        if selector.startswith(("autogroup:", "localpart:")):
            return MAYBE
        return YES if selector == user else NO


@dataclass
class _Found:
    servers: dict[str, None]
    sources: dict[str, None]
    users: dict[str, None]
    unknown: dict[str, None]


Level = tuple[int, tuple[str, ...]]  # how surely it matches, and the selectors that may


def _level(results: Iterable[tuple[int, str]]) -> Level:
    """The best match of a selector list (any selector may match), and those that may."""
    found = list(results)
    best = max((level for level, _ in found), default=NO)
    return best, tuple(s for level, s in found if level == MAYBE) if best == MAYBE else ()


class _Compiled:
    """One rule's matches, computed once per source, server tags and user."""

    def __init__(self, rule: Rule, evaluator: _Evaluator, sources: Sequence[Source],
                 named: frozenset[str]) -> None:
        self.rule = rule
        self.evaluator = evaluator
        self.named = named
        self.sources = sources
        self.opaque = rule.malformed and not (rule.src and rule.dst and rule.users)
        self.src = [_level((evaluator.source(s, source), s) for s in rule.src)
                    for source in sources]
        self.by_source = any(u.startswith("localpart:") for u in rule.users)
        self.dst: dict[tuple[str, ...], Level] = {}
        self.users: dict[tuple[int, str], Level] = {}

    def reaches(self, tags: tuple[str, ...], source: int) -> bool:
        """Whether it may match some session from `source` to a server with `tags`."""
        if self.opaque:
            return True
        if tags not in self.dst:
            server = Server("", tags)
            self.dst[tags] = _level((self.evaluator.destination(s, server), s)
                                    for s in self.rule.dst)
        return self.src[source][0] != NO and self.dst[tags][0] != NO

    def match(self, tags: tuple[str, ...], source: int, user: str) -> Level:
        """How surely the rule grants the session (after `reaches` said it may)."""
        rule = self.rule
        if self.opaque:
            return MAYBE, (f"ssh[{rule.index}]",)
        key = (source if self.by_source else -1, user)
        if key not in self.users:
            self.users[key] = _level(
                (self.evaluator.user(s, user, self.sources[source], self.named), s)
                for s in rule.users)
        parts = (self.src[source], self.dst[tags], self.users[key])
        level = min(part[0] for part in parts)
        unknown = tuple(s for part in parts for s in part[1])
        if level != NO and rule.action not in GRANTING_ACTIONS:
            return MAYBE, (*unknown, f"action {rule.action!r}")
        return level, unknown


def check(rules: Sequence[Rule], intents: Sequence[Rule], servers: Iterable[Server],
          groups: Mapping[str, tuple[str, ...]] | None) -> Coverage:
    """The gaps of `rules` (the policy's ssh rules in order) for `servers`.

    `intents` are the inventory's rules in its order (what tsops manages): the first one that
    matches a session says whether its recording must be enforced. A session no tsops rule
    matches only needs a recorder.
    """
    servers = list(servers)
    evaluator = _Evaluator(groups)
    sources, users = _universe([*rules, *intents], groups)
    named = frozenset(s.login for s in sources if s.login is not None)
    compiled = [_Compiled(r, evaluator, sources, named) for r in rules]
    wanted = [_Compiled(r, evaluator, sources, named) for r in intents]
    found: dict[tuple[int, Reason, bool, str | None], _Found] = {}
    by_tags: dict[tuple[str, ...], list[str]] = {}
    for server in servers:
        by_tags.setdefault(tuple(sorted(server.tags)), []).append(server.name)
    # Sources every rule treats alike (members of the same groups, say) are walked once.
    localpart = any(c.by_source for c in (*compiled, *wanted))
    alike: dict[object, list[int]] = {}
    for index in range(len(sources)):
        key = (tuple(c.src[index] for c in (*compiled, *wanted)),
               index if localpart and sources[index].member else -1)
        alike.setdefault(key, []).append(index)
    for tags, names in by_tags.items():
        for members in alike.values():
            source_index = members[0]
            candidates = [(p, c) for p, c in enumerate(compiled)
                          if c.reaches(tags, source_index)]
            meant = [c for c in wanted if c.reaches(tags, source_index)]
            if not candidates:
                continue
            for user in users:
                for gap_key, unknown in _walk(candidates, meant, tags, source_index, user):
                    entry = found.setdefault(gap_key, _Found({}, {}, {}, {}))
                    entry.servers.update(dict.fromkeys(names))
                    entry.sources.update((sources[i].label, None) for i in members)
                    entry.users[user] = None
                    entry.unknown.update(dict.fromkeys(unknown))
    ordered = sorted(found.items(), key=lambda item: (item[0][0], not item[0][2], item[0][1]))
    rank = {source.label: index for index, source in enumerate(sources)}
    gaps = [Gap(rules[position], reason, tuple(e.servers),
                tuple(sorted(e.sources, key=rank.__getitem__)), tuple(e.users),
                certain, intended, tuple(e.unknown))
            for (position, reason, certain, intended), e in ordered]
    return Coverage(tuple(s.name for s in servers), tuple(gaps))


def _walk(candidates: Sequence[tuple[int, _Compiled]], meant: Sequence[_Compiled],
          tags: tuple[str, ...], source: int, user: str,
          ) -> list[tuple[tuple[int, Reason, bool, str | None], list[str]]]:
    """First-match over the rules that may reach this session: the gaps it may land on."""
    intended: str | None = None
    enforce, enforce_sure = False, True
    for intent in meant:
        level, _ = intent.match(tags, source, user)
        if level == NO:
            continue
        if intent.rule.enforce:
            enforce = True
            enforce_sure = enforce_sure and level == YES
            intended = intended or intent.rule.managed
        if level == YES:
            intended = intended or intent.rule.managed
            break
    gaps = []
    uncertain = False
    unknown: list[str] = []
    for position, candidate in candidates:
        level, maybe = candidate.match(tags, source, user)
        if level == NO:
            continue
        unknown.extend(maybe)
        rule = candidate.rule
        reason: Reason | None = None
        if not rule.recorder:
            reason = "no-recorder"
        elif enforce and not rule.enforce:
            reason = "not-enforced"
        if reason is not None:
            certain = level == YES and not uncertain and (reason == "no-recorder"
                                                         or enforce_sure)
            shown = intended if intended != rule.managed else None
            gaps.append(((position, reason, certain, shown), list(dict.fromkeys(unknown))))
        if level == YES:
            break
        uncertain = True
    return gaps


def _universe(rules: Sequence[Rule], groups: Mapping[str, tuple[str, ...]] | None,
              ) -> tuple[list[Source], list[str]]:
    """The representative sources and local users of a policy."""
    logins: dict[str, None] = {}
    tags: dict[str, None] = {}
    domains: dict[str, None] = {}
    users: dict[str, None] = {"root": None}
    for members in (groups or {}).values():
        logins.update((m, None) for m in members if _is_login(m))
    for rule in rules:
        for selector in (*rule.src, *rule.dst):
            if _is_login(selector):
                logins[selector] = None
            elif selector.startswith("tag:") and selector in rule.src:
                tags[selector] = None
        for selector in rule.users:
            if selector.startswith("localpart:*@"):
                domains[selector.removeprefix("localpart:*@")] = None
            elif not selector.startswith(("autogroup:", "localpart:")) and selector != "*":
                users[selector] = None
    for login in logins:
        local, _, domain = login.rpartition("@")
        if domain in domains and local:
            users[local] = None
    users[OTHER_USER] = None
    sources = [Source(login, login=login) for login in logins]
    sources.append(Source("other members" if logins else "any member"))
    sources += [Source(f"other members at {domain}", domain=domain) for domain in domains]
    sources += [Source(tag, tag=tag) for tag in tags]
    sources.append(Source("other tagged nodes" if tags else "any tagged node", tag=OTHER_TAG))
    return sources, list(users)
