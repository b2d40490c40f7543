"""`tsops audit log` and `tsops audit timeline`: read the configuration audit log over a window,
tell the policy diffs from tsops's history, and merge in the recorded sessions; only reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsops.audit.events import AuditEvent, EventFilter, Window, iso, parse_events
from tsops.audit.policy import PolicyChange, attribute
from tsops.audit.timeline import Entry, Scope, merge
from tsops.context import RunContext
from tsops.errors import TsopsError, UsageError
from tsops.recordings.catalog import Recording
from tsops.tailscale_api import ApiError

SCOPE_HINT = ("the credential lacks the logs:configuration:read scope (the API answered 403): "
              "give the API token or OAuth client that scope (docs/audit.md)")


@dataclass(frozen=True)
class AuditLogReport:
    """The events of a window that passed the filter, with the policy diffs tsops knows."""

    window: Window
    events: list[AuditEvent]
    changes: dict[int, PolicyChange]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (what `audit log -o json` prints)."""
        return {"window": {"start": iso(self.window.start), "end": iso(self.window.end)},
                "events": [{**e.as_dict(), "policy_change": (
                    self.changes[i].as_dict() if i in self.changes else None)}
                    for i, e in enumerate(self.events)]}


@dataclass(frozen=True)
class TimelineReport:
    """The merged timeline of a window and scope, the node names used, and what could not be
    read (sessions missing from it are said so, never silently left out)."""

    window: Window
    scope: Scope
    entries: list[Entry]
    names: dict[str, str]
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (what `audit timeline -o json` prints)."""
        return {"window": {"start": iso(self.window.start), "end": iso(self.window.end)},
                "scope": self.scope.as_dict(), "entries": [e.as_dict() for e in self.entries],
                "problems": list(self.problems)}


def read_events(context: RunContext, window: Window) -> list[AuditEvent]:
    """The window's configuration audit events, oldest first; a missing scope is one line."""
    try:
        return parse_events(context.api.configuration_log(window.start, window.end))
    except ApiError as error:
        if error.status == 403:
            raise UsageError(f"audit log: {SCOPE_HINT}") from error
        raise


def policy_changes(context: RunContext, events: list[AuditEvent]) -> dict[int, PolicyChange]:
    """The diff of each policy event that tsops's history (and the policy now) tells."""
    if not any(e.kind == "policy" for e in events):
        return {}
    from tsops.policy.store import History, default_state_dir

    records = History(default_state_dir(context.inventory)).records()
    current: str | None = None
    if context.inventory.model.policy.source == "api":
        try:
            current = context.api.get_policy().text
        except ApiError as error:
            context.events.warning(f"policy diffs without the policy file now: {error.message}")
    return attribute(events, records, current)


def audit_log(context: RunContext, window: Window, keep: EventFilter) -> AuditLogReport:
    """The filtered events of the window and their policy diffs."""
    events = read_events(context, window)
    changes = policy_changes(context, events)
    kept = [(i, e) for i, e in enumerate(events) if keep.keeps(e)]
    return AuditLogReport(window, [e for _, e in kept],
                          {n: changes[i] for n, (i, _) in enumerate(kept) if i in changes})


def _recordings(context: RunContext, location: str | None,
                problems: list[str]) -> list[Recording]:
    """Every readable recording of the location given, else of the inventory's storage when
    it can be read from here (S3, or a directory on this machine)."""
    from tsops.flows.recordings import RecordingsLocation, open_store
    from tsops.recordings.catalog import scan
    from tsops.recordings.store import StoreError

    storage = context.inventory.model.storage
    if location is None:
        if storage is None:
            problems.append("sessions: the inventory has no storage; give --recordings")
            return []
        if not storage.is_s3 and not Path(storage.destination).is_dir():
            problems.append(f"sessions: {storage.destination} is on the recorder, not on this "
                            "machine; give --recordings (a copy, or s3://...)")
            return []
        where = RecordingsLocation(inventory=context.inventory.path)
    else:
        endpoint = storage.endpoint if storage is not None and storage.is_s3 else None
        region = storage.region if storage is not None and storage.is_s3 else None
        where = RecordingsLocation(location, None, endpoint, region)
    try:
        catalog = scan(open_store(where))
    except StoreError as error:
        problems.append(f"sessions: {error.message}")
        return []
    problems += [f"sessions: {p.key}: {p.kind}: {p.detail}" for p in catalog.problems]
    return list(catalog.recordings)


def timeline(context: RunContext, window: Window, scope: Scope,
             recordings_from: str | None) -> TimelineReport:
    """Policy changes, enrolments, tag changes, removals and sessions of the window, merged."""
    events = read_events(context, window)
    changes = policy_changes(context, events)
    names = {d.node_id: d.hostname or d.name.split(".", 1)[0]
             for d in context.api.list_devices() if d.node_id}
    for event in events:  # removed devices are named by their events
        if event.kind in ("enrolment", "removal", "tags") and event.target.name:
            names.setdefault(event.target.id, event.target.name.split(".", 1)[0])
    problems: list[str] = []
    try:
        recordings = _recordings(context, recordings_from, problems)
    except TsopsError as error:
        if isinstance(error, UsageError):
            raise
        problems.append(f"sessions: {error.message}")
        recordings = []
    if scope.server is not None:
        server = scope.server
        if server not in names and server not in names.values():
            raise UsageError(f"--server {server}: no device of the tailnet or of the audit log "
                             "has that name or node ID")
        scope = Scope(names.get(server, server), scope.user)
    entries = merge(events, changes, recordings, names, scope, window.start, window.end)
    return TimelineReport(window, scope, entries, names, problems)
