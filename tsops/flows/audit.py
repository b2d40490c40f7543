"""`tsops audit log` and `tsops audit timeline`: read the configuration audit log over a window,
tell the policy diffs from tsops's history, and merge in the recorded sessions; only reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsops.audit.events import AuditEvent, EventFilter, Window, iso, parse_events
from tsops.audit.policy import PolicyChange, attribute
from tsops.audit.streaming import (
    LOG_TYPES,
    Records,
    StreamPlan,
    Wanted,
    body,
    compare,
    stream_status,
    wanted,
)
from tsops.audit.timeline import Entry, Scope, merge
from tsops.checks import StreamStatus
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
    """Every readable recording of the location given, else of the inventory's storage (S3, or
    a directory on the recorder hosts, read over SSH)."""
    from tsops.flows.recordings import RecordingsLocation, open_store
    from tsops.recordings.catalog import scan
    from tsops.recordings.store import StoreError

    storage = context.inventory.model.storage
    if location is None:
        if storage is None:
            problems.append("sessions: the inventory has no storage; give --recordings")
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
             recordings_from: str | None,
             sessions: Sequence[Recording] | None = None) -> TimelineReport:
    """Policy changes, enrolments, tag changes, removals and sessions of the window, merged.

    `sessions`: recordings already read (the review UI's catalog); else they are read from
    `recordings_from` or the inventory's storage.
    """
    events = read_events(context, window)
    changes = policy_changes(context, events)
    names = {d.node_id: d.hostname or d.name.split(".", 1)[0]
             for d in context.api.list_devices() if d.node_id}
    for event in events:  # removed devices are named by their events
        if event.kind in ("enrolment", "removal", "tags") and event.target.name:
            names.setdefault(event.target.id, event.target.name.split(".", 1)[0])
    problems: list[str] = []
    try:
        recordings = (list(sessions) if sessions is not None else
                      _recordings(context, recordings_from, problems))
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


# Log streaming (inventory `log_streaming`): planned and applied by bootstrap, checked by status.


def manages_log_streaming(context: RunContext) -> bool:
    """Whether this run manages log streaming (the inventory has it; no `--limit`)."""
    return context.inventory.model.log_streaming is not None and not context.limited


@dataclass(frozen=True)
class LogStreamingPlan:
    """Each managed log type's stream plan, or why none could be made."""

    streams: tuple[StreamPlan, ...] = ()
    error: str | None = None

    @property
    def pending(self) -> bool:
        """Whether a stream would be written."""
        return any(s.action != "none" for s in self.streams)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (`plan -o json`'s `log_streaming`)."""
        return {"error": self.error, "streams": [s.as_dict() for s in self.streams]}


@dataclass(frozen=True)
class StreamOutcome:
    """What bootstrap did to one stream: created, updated, unchanged or failed."""

    log_type: str
    outcome: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"log_type": self.log_type, "outcome": self.outcome, "error": self.error}


@dataclass(frozen=True)
class LogStreamingReport:
    """How bootstrap's log streaming step ended."""

    streams: tuple[StreamOutcome, ...] = ()
    error: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the plan or a write failed."""
        return self.error is not None or any(s.outcome == "failed" for s in self.streams)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (`bootstrap -o json`'s `log_streaming`)."""
        return {"error": self.error, "streams": [s.as_dict() for s in self.streams]}


def _wanted(context: RunContext) -> list[Wanted]:
    streaming = context.inventory.model.log_streaming
    assert streaming is not None
    return [wanted(log_type, stream) for log_type in LOG_TYPES
            if (stream := getattr(streaming, log_type)) is not None]


def _values(context: RunContext, want: Wanted) -> dict[str, str]:
    """The secrets of a stream, resolved from their references (environment, keyring)."""
    return {name: context.secret(ref, f"log streaming {want.log_type} {name}")
            for name, ref in want.references.items()}


def _streaming_error(error: ApiError) -> str:
    if error.status == 403:
        return ("log streaming: the credential lacks the log_streaming scope (the API answered "
                "403): give the API token or OAuth client that scope (docs/audit.md)")
    return f"log streaming: {error.message}"


def _plans(context: RunContext) -> list[tuple[StreamPlan, dict[str, str]]]:
    records = Records(_state_dir(context)).load()
    found = []
    for want in _wanted(context):
        values = _values(context, want)
        current = context.api.get_log_stream(want.log_type)
        found.append((compare(want, current, values, records.get(want.log_type)), values))
    return found


def _state_dir(context: RunContext) -> Path:
    from tsops.policy.store import default_state_dir

    return default_state_dir(context.inventory)


def plan_log_streaming(context: RunContext) -> LogStreamingPlan:
    """Read each managed stream and compare it with the inventory; nothing is written."""
    try:
        return LogStreamingPlan(tuple(plan for plan, _ in _plans(context)))
    except ApiError as error:
        return LogStreamingPlan(error=_streaming_error(error))


def apply_log_streaming(context: RunContext, planned: LogStreamingPlan) -> LogStreamingReport:
    """Write the streams that differ (PUT with their secrets), and record what was written."""
    if planned.error is not None:
        return LogStreamingReport(error=planned.error)
    records = Records(_state_dir(context))
    outcomes = []
    values_of = {want.log_type: _values(context, want) for want in _wanted(context)}
    for plan in planned.streams:
        if plan.action == "none":
            outcomes.append(StreamOutcome(plan.log_type, "unchanged"))
            continue
        values = values_of[plan.log_type]
        try:
            context.api.set_log_stream(plan.log_type, body(plan.want, values))
        except ApiError as error:
            outcomes.append(StreamOutcome(plan.log_type, "failed", _streaming_error(error)))
            continue
        records.save(plan.log_type, values)
        outcomes.append(StreamOutcome(plan.log_type,
                                      "created" if plan.action == "create" else "updated"))
    return LogStreamingReport(tuple(outcomes))


def log_streaming_status(context: RunContext) -> tuple[tuple[StreamStatus, ...], str | None]:
    """Each managed stream's match with the inventory and its publishing status, or an error."""
    try:
        found = []
        for plan, _ in _plans(context):
            status = (context.api.log_stream_status(plan.log_type)
                      if plan.current is not None else None)
            found.append(stream_status(plan, status))
        return tuple(found), None
    except ApiError as error:
        return (), _streaming_error(error)
