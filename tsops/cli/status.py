"""`tsops status`: gather every host once, in parallel, and report each check read-only."""

from __future__ import annotations

import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table
from rich.text import Text

from tsops import console
from tsops.cli.bootstrap import OutputFormat, Progress, build_engine, recorder_phase
from tsops.errors import TsopsError
from tsops.status import (
    RECORDER_CHECKS,
    SERVER_CHECKS,
    Check,
    HostStatus,
    PolicyStatus,
    State,
    Status,
    policy_error,
    policy_status,
    recorder_status,
    server_status,
    storage_check,
)

if TYPE_CHECKING:
    from tsops.engine import Engine, RemoteLike
    from tsops.recorder.phase import RecorderPhase, RecorderPlans

SYMBOLS: dict[State, tuple[str, str]] = {
    "ok": ("✓", "green"), "drift": ("✗", "yellow"), "error": ("✗", "red"), "unknown": ("-", ""),
}
WORDS: dict[State, str] = {"ok": "ok", "drift": "drift", "error": "error", "unknown": "-"}


def run_status(path: Path, limits: list[str], concurrency: int, no_input: bool,
               output: OutputFormat) -> None:
    """Report every check; exit 0 when everything matches, 3 on drift, 1 on an error."""
    engine = build_engine(path, limits, concurrency, no_input, output)
    phase = recorder_phase(engine, limits, no_input)
    try:
        with Progress(enabled=output == "table" and console.err.is_terminal) as report:
            engine.report = report
            status = gather_status(engine, phase, with_policy=bool(
                engine.inventory.model.ssh_rules) and not limits)
    finally:
        engine.close()
        if phase is not None:
            phase.close()
    if output == "json":
        console.line(json.dumps(status_json(status), indent=2))
    else:
        print_status(status, symbols=console.out.is_terminal)
    sys.exit(status.exit_code)


def gather_status(engine: Engine, phase: RecorderPhase | None, with_policy: bool) -> Status:
    """Servers, recorders and the policy read at the same time; only reads are made."""
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        servers = pool.submit(engine.gather_and_plan)
        recorders: Future[RecorderPlans] | None = None
        if phase is not None:
            phase.report = engine.report
            recorders = pool.submit(phase.plan)
        policy = pool.submit(_policy, engine) if with_policy else None
        plans = servers.result()
        hosts = [server_status(p, _trips(engine.remotes, p.target.name)) for p in plans]
        storage = None
        if phase is not None and recorders is not None:
            try:
                recorder_plans = recorders.result()
            except TsopsError as error:
                problems.append(f"recorders: {error.message}")
            else:
                storage = storage_check(recorder_plans.bucket)
                hosts += _recorders(engine, phase, recorder_plans, storage)
        policy_result = policy.result() if policy is not None else None
    return Status(tuple(hosts), storage, policy_result, tuple(problems))


def _recorders(engine: Engine, phase: RecorderPhase, plans: RecorderPlans,
               storage: Check | None) -> list[HostStatus]:
    devices = engine.api.list_devices()
    found = []
    for plan in plans.hosts:
        device = next((d for d in devices
                       if d.hostname == plan.target.name and phase.tag in d.tags), None)
        found.append(recorder_status(plan, device, phase.tag, storage,
                                     plans.storage.min_free_gb,
                                     _trips(phase.remotes, plan.target.name)))
    return found


def _policy(engine: Engine) -> PolicyStatus:
    from tsops.policy.apply import diff_policy

    rules = tuple(rule.name for rule in engine.inventory.model.ssh_rules)
    try:
        plan, diff = diff_policy(engine.inventory, engine.api)
    except TsopsError as error:
        return policy_error(error.message)
    return policy_status(plan, rules, diff)


def _trips(remotes: dict[str, RemoteLike], name: str) -> int:
    remote = remotes.get(name)
    return remote.round_trips if remote is not None else 0


def _check_json(check: Check) -> dict[str, str]:
    return {"name": check.name, "state": check.state, "expected": check.expected,
            "actual": check.actual}


def status_json(status: Status) -> dict[str, Any]:
    """The whole status as JSON-ready data: every check with its expected and actual values."""
    return {
        "state": status.state,
        "problems": list(status.problems),
        "hosts": [{"name": h.name, "role": h.role, "state": h.state, "reason": h.reason,
                   "round_trips": h.round_trips, "checks": [_check_json(c) for c in h.checks]}
                  for h in status.hosts],
        "storage": _check_json(status.storage) if status.storage is not None else None,
        "policy": None if status.policy is None else {
            **_check_json(status.policy.check), "diff": status.policy.diff},
    }


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
    for problem in status.problems:
        console.error(problem)
    if status.storage is not None:
        _print_line(status.storage)
    if status.policy is not None:
        _print_line(status.policy.check)
    counts = {s: sum(1 for h in status.hosts if h.state == s) for s in ("ok", "drift", "error")}
    extra = "" if status.policy is None else f"; policy {WORDS[status.policy.check.state]}"
    console.line(f"{len(status.hosts)} host(s): {counts['ok']} ok, {counts['drift']} drift, "
                 f"{counts['error']} error{extra}.")


def _print_line(check: Check) -> None:
    if check.state == "ok":
        console.line(f"{check.name}: ok ({check.expected})")
    elif check.state == "error":
        console.error(f"{check.name}: error: {check.actual}")
    else:
        console.line(f"{check.name}: {check.state}: expected {check.expected}; "
                     f"found {check.actual}")
