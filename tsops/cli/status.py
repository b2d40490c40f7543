"""`tsops status`: gather every host once, in parallel, and report each check read-only."""

from __future__ import annotations

import json

from rich import box
from rich.table import Table
from rich.text import Text

from tsops.checks import RECORDER_CHECKS, SERVER_CHECKS, Check, State, Status, worst
from tsops.cli import console
from tsops.cli.bootstrap import RunOptions, live, open_run
from tsops.flows.status import gather_status
from tsops.recordings.inert import visible
from tsops.servers.exposure import Exposure

SYMBOLS: dict[State, tuple[str, str]] = {
    "ok": ("✓", "green"), "drift": ("✗", "yellow"), "error": ("✗", "red"), "unknown": ("-", ""),
}
WORDS: dict[State, str] = {"ok": "ok", "drift": "drift", "error": "error", "unknown": "-"}


def run_status(run: RunOptions) -> int:
    """Report every check; exit 0 when everything matches, 3 on drift, 1 on an error."""
    with open_run(run) as context, live(context):
        status = gather_status(context)
    if run.output == "json":
        console.line(json.dumps(status.as_dict(), indent=2))
    else:
        print_status(status, symbols=console.out.is_terminal)
    return status.exit_code


def _cell(check: Check | None, symbols: bool) -> Text:
    if check is None:
        return Text("")
    if not symbols:
        return Text(WORDS[check.state])
    symbol, style = SYMBOLS[check.state]
    return Text(symbol, style=style)


def print_status(status: Status, symbols: bool) -> None:
    """A table of hosts by checks, what differs and why, the storage and policy lines, a summary."""
    columns = list(dict.fromkeys(SERVER_CHECKS + RECORDER_CHECKS))
    rows = [[Text(h.name), Text(h.role), *(_cell(h.check(c), symbols) for c in columns)]
            for h in status.hosts]
    table = Table(show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD if symbols else None)
    for index, column in enumerate(("host", "role", *columns)):
        # Never squeeze a cell to "recor…": a table a script reads must keep whole words.
        widest = max([len(column), *(len(row[index]) for row in rows)])
        table.add_column(column, min_width=widest, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if rows:
        console.out.print(table)
    for host in status.hosts:
        if host.reason is not None:
            console.error(f"{host.name}: error: {host.reason}")
        for check in host.checks:
            if check.state in ("drift", "error") and check.actual != host.reason:
                console.line(f"{host.name}: {check.name}: expected {check.expected}; "
                             f"found {check.actual}")
    for host in status.hosts:
        if host.exposure is not None:
            _print_exposure(host.name, host.exposure)
    for problem in status.problems:
        console.error(problem)
    for _, message in status.unavailable:
        console.error(f"{message} (what needs it is marked unknown: -)")
    if status.storage is not None:
        _print_line(status.storage)
    if status.recordings is not None:
        _print_line(status.recordings)
        for found in status.tampered:
            console.line(f"tampered: {visible(found.line())}")
    for warning in status.warnings:
        console.warning(warning)
    if status.policy is not None:
        _print_line(status.policy.check)
    if status.coverage is not None:
        for check in status.coverage.checks:
            _print_line(check)
        for gap in status.coverage.gaps:
            console.line(gap.line())
    for stream in status.log_streaming or ():
        for check in stream.checks:
            _print_line(check)
    counts = {s: sum(1 for h in status.hosts if h.state == s) for s in ("ok", "drift", "error")}
    extra = "" if status.policy is None else f"; policy {WORDS[status.policy.check.state]}"
    if status.coverage is not None:
        extra += f"; coverage {WORDS[worst(c.state for c in status.coverage.checks)]}"
    if status.unavailable:
        extra += f"; unavailable: {', '.join(service for service, _ in status.unavailable)}"
    console.line(f"{len(status.hosts)} host(s): {counts['ok']} ok, {counts['drift']} drift, "
                 f"{counts['error']} error{extra}.")


def _print_exposure(name: str, exposure: Exposure) -> None:
    """Every OpenSSH listener as an unrecorded path; for restrict/off, whether it matches."""
    for path in exposure.unrecorded:
        console.line(f"{name}: {path}")
    if exposure.mode != "keep" and exposure.matches:
        console.line(f"{name}: openssh {exposure.mode}: matches")
    elif exposure.change is not None:
        console.line(f"{name}: openssh {exposure.mode}: planned: {exposure.change}")


def _print_line(check: Check) -> None:
    if check.state == "ok":
        console.line(f"{check.name}: ok ({check.expected})")
    elif check.state == "error":
        console.error(f"{check.name}: error: {check.actual}")
    else:
        console.line(f"{check.name}: {check.state}: expected {check.expected}; "
                     f"found {check.actual}")
