"""Configuration audit events as the API returns them, parsed, classified and filtered."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from tsops.errors import UsageError

# What an event is about, for the timeline: its target type and property, and its action.
KINDS = ("policy", "enrolment", "tags", "removal", "auth-key", "log-streaming", "other")


@dataclass(frozen=True)
class Actor:
    """Who made a change: a user (login name) or an OAuth client (its id), as the log says."""

    id: str
    type: str
    login: str
    display: str

    @property
    def name(self) -> str:
        """The name an operator recognises: the login name, else the id."""
        return self.login or self.display or self.id or "unknown"

    def as_dict(self) -> dict[str, str]:
        """The actor as JSON-ready data."""
        return {"id": self.id, "type": self.type, "login_name": self.login,
                "display_name": self.display}


@dataclass(frozen=True)
class Target:
    """What was changed: its id, name, type and the property changed ("" when none)."""

    id: str
    name: str
    type: str
    property: str

    def as_dict(self) -> dict[str, str]:
        """The target as JSON-ready data."""
        return {"id": self.id, "name": self.name, "type": self.type, "property": self.property}


@dataclass(frozen=True)
class AuditEvent:
    """One configuration audit event."""

    time: datetime.datetime
    group_id: str
    origin: str
    actor: Actor
    target: Target
    type: str
    action: str
    old: Any = None
    new: Any = None

    @property
    def kind(self) -> str:
        """policy, enrolment, tags, removal, auth-key, log-streaming or other."""
        target, action = self.target, self.action.upper()
        prop = target.property.upper()
        if target.type.upper() == "TAILNET" and prop in ("ACL", "POLICY", "POLICY_FILE"):
            return "policy"
        if prop == "LOG_STREAMING":
            return "log-streaming"
        if target.type.upper() in ("NODE", "DEVICE", "MACHINE"):
            if prop in ("TAGS", "ACL_TAGS"):
                return "tags"
            if action == "CREATE":
                return "enrolment"
            if action == "DELETE":
                return "removal"
        if target.type.upper() in ("AUTH_KEY", "API_KEY", "KEY"):
            return "auth-key"
        return "other"

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data (tsops's field names; `old`/`new` as the log has them)."""
        return {"time": iso(self.time), "kind": self.kind, "action": self.action,
                "type": self.type, "origin": self.origin, "event_group_id": self.group_id,
                "actor": self.actor.as_dict(), "target": self.target.as_dict(),
                "old": self.old, "new": self.new}


def iso(moment: datetime.datetime) -> str:
    """UTC with milliseconds and a Z."""
    text = moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    return "" if value is None else str(value)


def parse_time(text: str) -> datetime.datetime | None:
    """An RFC 3339 time (any fraction length), or None when unreadable."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = value.partition(".")
    if dot:  # Go writes up to 9 fraction digits; Python reads at most 6
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        value = f"{head}.{digits[:6]}{zone}"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def parse_event(data: dict[str, Any]) -> AuditEvent | None:
    """One event of the API's `logs`, or None when it has no readable `eventTime`."""
    moment = parse_time(_text(data, "eventTime"))
    if moment is None:
        return None
    actor = data.get("actor") if isinstance(data.get("actor"), dict) else {}
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    assert isinstance(actor, dict) and isinstance(target, dict)
    return AuditEvent(
        time=moment, group_id=_text(data, "eventGroupID"), origin=_text(data, "origin"),
        actor=Actor(_text(actor, "id"), _text(actor, "type"), _text(actor, "loginName"),
                    _text(actor, "displayName")),
        target=Target(_text(target, "id"), _text(target, "name"), _text(target, "type"),
                      _text(target, "property")),
        type=_text(data, "type"), action=_text(data, "action"),
        old=data.get("old"), new=data.get("new"))


def parse_events(logs: list[dict[str, Any]]) -> list[AuditEvent]:
    """Every readable event, oldest first (the API does not promise an order)."""
    found = [e for e in (parse_event(d) for d in logs) if e is not None]
    return sorted(found, key=lambda e: (e.time, e.group_id))


@dataclass(frozen=True)
class Window:
    """A time window [start, end]: the API needs both ends."""

    start: datetime.datetime
    end: datetime.datetime


def window(since: str | None, until: str | None, *, default_days: int = 7,
           now: datetime.datetime | None = None) -> Window:
    """The window of --since/--until (ISO times or ages like 24h; default the last
    `default_days` days up to now); an end before its start is refused (exit 2)."""
    from tsops.recordings.catalog import parse_when

    now = now or datetime.datetime.now(datetime.UTC)
    start = parse_when(since, "--since", now) if since else now - datetime.timedelta(
        days=default_days)
    end = parse_when(until, "--until", now) if until else now
    if end < start:
        raise UsageError(f"--until {until or 'now'} ({iso(end)}) is before --since "
                         f"{since} ({iso(start)}): the window must end after it starts")
    return Window(start, end)


@dataclass(frozen=True)
class EventFilter:
    """Which events to keep: each given condition must match (substring, case-insensitive)."""

    actors: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def keeps(self, event: AuditEvent) -> bool:
        """Whether the event passes every condition given."""
        actor = event.actor
        if self.actors and not _any_in(self.actors, (actor.login, actor.display, actor.id)):
            return False
        if self.actions and not any(a.lower() in (event.action.lower(), event.kind)
                                    for a in self.actions):
            return False
        target = event.target
        return not self.targets or _any_in(self.targets, (target.name, target.id, target.type))


def _any_in(wanted: tuple[str, ...], values: tuple[str, ...]) -> bool:
    return any(w.lower() in v.lower() for w in wanted for v in values if v)
