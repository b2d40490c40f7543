"""`tsops audit log` and `tsops audit timeline`: parse, hand off to tsops.flows.audit, render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from tsops.audit.events import EventFilter, iso, window
from tsops.audit.timeline import Scope, ecs
from tsops.cli import console
from tsops.cli.bootstrap import RunOptions, open_run
from tsops.errors import UsageError
from tsops.recordings.inert import visible

TimelineFormat = Literal["table", "json", "ecs"]


def _options(inventory: Path, output: str, no_input: bool) -> RunOptions:
    return RunOptions(path=inventory, limits=[], concurrency=1,
                      output="json" if output != "table" else "table", no_input=no_input)


def _diff_lines(diff: str) -> None:
    for text in diff.rstrip("\n").splitlines():
        console.line("    " + visible(text))


def run_log(inventory: Path, since: str | None, until: str | None, actors: list[str],
            actions: list[str], targets: list[str], output: Literal["table", "json"],
            no_input: bool) -> int:
    """Print the configuration audit events of the window that pass the filters."""
    from tsops.flows.audit import audit_log

    chosen = window(since, until)  # a bad window is refused before anything is read
    keep = EventFilter(tuple(actors), tuple(actions), tuple(targets))
    with open_run(_options(inventory, output, no_input)) as context:
        report = audit_log(context, chosen, keep)
    if output == "json":
        console.line(json.dumps(report.as_dict(), indent=2))
        return 0
    for index, event in enumerate(report.events):
        target = event.target
        what = target.name or target.id
        if target.property:
            what += f" {target.property}"
        console.line(visible(f"{iso(event.time)}  {event.action:<7} {event.kind:<13} "
                             f"{event.actor.name:<24} {target.type} {what}"))
        if (event.old is not None or event.new is not None) and event.kind != "policy":
            console.line(visible(f"    {json.dumps(event.old)} -> {json.dumps(event.new)}"))
        change = report.changes.get(index)
        if change is not None:
            if change.diff:
                console.line(f"    diff ({change.source}):")
                _diff_lines(change.diff)
            elif change.diff is None:
                console.line(f"    no diff: {change.source}")
    console.line(f"{len(report.events)} event(s) from {iso(chosen.start)} to {iso(chosen.end)}.")
    return 0


def run_timeline(inventory: Path, since: str | None, until: str | None, server: str | None,
                 user: str | None, recordings: str | None, output: TimelineFormat,
                 no_input: bool) -> int:
    """Print the merged timeline: text, one JSON document, or ECS JSON lines."""
    from tsops.flows.audit import timeline

    if server is not None and user is not None:
        raise UsageError("give --server or --user, not both (neither: the whole tailnet)")
    chosen = window(since, until)
    with open_run(_options(inventory, output, no_input)) as context:
        report = timeline(context, chosen, Scope(server, user), recordings)
    for problem in report.problems:
        console.warning(problem)
    if output == "json":
        console.line(json.dumps(report.as_dict(), indent=2))
        return 0
    if output == "ecs":
        for entry in report.entries:
            sys.stdout.write(json.dumps(ecs(entry, report.names), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return 0
    for entry in report.entries:
        console.line(visible(f"{iso(entry.time)}  {entry.kind:<9} {entry.actor:<24} "
                             f"{entry.target:<16} {entry.summary}"))
        change = entry.change
        if change is not None and change.diff:
            console.line(f"    diff ({change.source}):")
            _diff_lines(change.diff)
        elif change is not None and change.diff is None:
            console.line(f"    no diff: {change.source}")
    whose = (f"server {report.scope.server}" if report.scope.server else
             f"user {report.scope.user}" if report.scope.user else "the whole tailnet")
    console.line(f"{len(report.entries)} entr{'y' if len(report.entries) == 1 else 'ies'} for "
                 f"{whose} from {iso(chosen.start)} to {iso(chosen.end)}.")
    return 0
