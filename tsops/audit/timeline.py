"""One timeline: policy changes, enrolments, tag changes, removals (the audit log) and recorded
sessions (the recordings), in time order with actor and target; text, JSON and ECS lines."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsops.audit.events import AuditEvent, iso
from tsops.audit.policy import PolicyChange
from tsops.recordings.catalog import Recording

# The audit event kinds a timeline shows (auth keys and the rest stay in `audit log`).
TIMELINE_KINDS = frozenset({"policy", "enrolment", "tags", "removal"})
ECS_TYPES = {"CREATE": "creation", "DELETE": "deletion"}


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    time: datetime.datetime
    kind: str  # policy, enrolment, tags, removal, session
    actor: str
    actor_type: str
    target: str
    target_id: str
    summary: str
    change: PolicyChange | None = None
    event: AuditEvent | None = field(default=None, compare=False)
    recording: Recording | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (what `audit timeline -o json` prints per entry)."""
        data: dict[str, Any] = {
            "time": iso(self.time), "kind": self.kind, "actor": self.actor,
            "actor_type": self.actor_type, "target": self.target, "target_id": self.target_id,
            "summary": self.summary,
            "diff": self.change.diff if self.change is not None else None,
            "diff_source": self.change.source if self.change is not None else None,
            "recording": self.recording.id if self.recording is not None else None,
        }
        return data


def _short(name: str) -> str:
    return name.split(".", 1)[0]


def _tags(value: Any) -> str:
    if isinstance(value, list) and value:
        return " ".join(str(v) for v in value)
    if isinstance(value, dict) and isinstance(value.get("tags"), list):
        return _tags(value["tags"])
    return "(none)"


def event_entry(event: AuditEvent, change: PolicyChange | None) -> Entry:
    """The timeline entry of one audit event."""
    kind = event.kind
    target = event.target
    name = _short(target.name) if kind != "policy" else f"tailnet {target.name or target.id}"
    if kind == "policy":
        summary = "policy file changed" + (
            f" (tsops write {change.tsops_write})" if change and change.tsops_write else "")
    elif kind == "enrolment":
        summary = f"enrolled with tags {_tags(event.new)}"
    elif kind == "tags":
        summary = f"tags {_tags(event.old)} -> {_tags(event.new)}"
    elif kind == "removal":
        summary = "removed from the tailnet"
    else:
        summary = f"{event.action.lower()} {target.type.lower()}"
    return Entry(event.time, kind, event.actor.name, event.actor.type, name, target.id, summary,
                 change, event)


def session_entry(recording: Recording, names: Mapping[str, str]) -> Entry | None:
    """The timeline entry of one recorded session (None: its start is unknown)."""
    started = recording.started
    if started is None:
        return None
    header = recording.header
    who = header.src_node_user or header.src_node or "unknown"
    host = names.get(recording.node, recording.node)
    command = header.command or "(interactive shell)"
    user = header.local_user or header.ssh_user
    duration = f", {recording.duration:.1f} s" if recording.duration is not None else ""
    return Entry(started, "session", who, "USER" if header.src_node_user else "NODE", host,
                 recording.node, f"ssh {user}: {command}{duration}", recording=recording)


@dataclass(frozen=True)
class Scope:
    """Whose timeline: one server (by host name, device name or node ID), one user, or the
    whole tailnet (neither)."""

    server: str | None = None
    user: str | None = None

    def keeps(self, entry: Entry) -> bool:
        """Whether the entry belongs to this scope (policy changes concern every server)."""
        if self.server is not None and entry.kind != "policy" and self.server not in (
                entry.target, entry.target_id):
            return False
        if self.user is not None:
            users = {entry.actor}
            if entry.recording is not None:
                header = entry.recording.header
                users |= {header.ssh_user, header.local_user, header.src_node_user}
            return self.user in users
        return True

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready data."""
        return {"server": self.server, "user": self.user}


def merge(events: Sequence[AuditEvent], changes: Mapping[int, PolicyChange],
          recordings: Iterable[Recording], names: Mapping[str, str], scope: Scope,
          start: datetime.datetime, end: datetime.datetime) -> list[Entry]:
    """Every entry in [start, end] that the scope keeps, in time order."""
    entries = [event_entry(e, changes.get(i)) for i, e in enumerate(events)
               if e.kind in TIMELINE_KINDS]
    entries += [s for s in (session_entry(r, names) for r in recordings) if s is not None]
    kept = [e for e in entries if start <= e.time <= end and scope.keeps(e)]
    return sorted(kept, key=lambda e: (e.time, e.kind != "policy"))


def ecs(entry: Entry, names: dict[str, str]) -> dict[str, Any]:
    """The entry as an Elastic Common Schema event: sessions exactly as `recordings export
    --format ecs` writes them, audit events in the same style."""
    if entry.recording is not None:
        from tsops.recordings.export import session_event

        return session_event(entry.recording, "ecs", names, False)
    event = entry.event
    assert event is not None
    action = {"policy": "policy-file-changed", "enrolment": "device-enrolled",
              "tags": "device-tags-changed", "removal": "device-removed"}.get(entry.kind,
                                                                          entry.kind)
    data: dict[str, Any] = {
        "@timestamp": iso(entry.time),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["configuration"],
            "type": [ECS_TYPES.get(event.action.upper(), "change")], "action": action,
            "dataset": "tailscale.audit", "provider": "tailscale", "module": "tsops",
            "id": event.group_id, "created": iso(event.time),
        },
        "user": {"name": event.actor.name, "id": event.actor.id},
        "labels": {"actor_type": event.actor.type, "target_type": event.target.type,
                   "target_id": event.target.id, "origin": event.origin},
        "related": {"user": [event.actor.name]},
    }
    if entry.kind != "policy":
        data["host"] = {"id": event.target.id, "hostname": entry.target}
    else:
        data["labels"]["tailnet"] = event.target.name or event.target.id
    if entry.change is not None and entry.change.diff is not None:
        data["tsops"] = {"diff": entry.change.diff, "diff_source": entry.change.source}
    return data
