"""`tsops plan` and `tsops bootstrap`: show the changes, then (bootstrap) make them."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.live import Live
from rich.table import Table

from tsops.cli import console
from tsops.cli.recorder import print_recorder_plans, print_recorder_results
from tsops.context import RunContext
from tsops.errors import ExitCode
from tsops.flows import bootstrap as flow
from tsops.flows.bootstrap import BootstrapPlan, BootstrapReport
from tsops.inventory.load import LoadedInventory
from tsops.servers.phase import step_script
from tsops.servers.plan import HostPlan, Step

OutputFormat = Literal["table", "json"]
PENDING = "changes are pending and there is no terminal to confirm them: rerun with --yes to apply"


@dataclass(frozen=True)
class RunOptions:
    """The options of every command that works on the inventory's hosts."""

    path: Path
    limits: list[str]
    concurrency: int
    output: OutputFormat
    no_input: bool
    verbose: bool = False  # the scripts and files of each step (tsops plan -v)


def open_run(run: RunOptions, *, yes: bool = False) -> RunContext:
    """Load and validate everything local, then resolve the API credentials; nothing remote
    is touched before that."""
    progress = Progress(enabled=run.output == "table" and console.err.is_terminal)
    events = console.ConsoleEvents(no_input=run.no_input, yes=yes, progress=progress,
                                   stdout_reserved=run.output == "json")
    context = RunContext.open(run.path, run.limits, events=events, concurrency=run.concurrency)
    context.api  # noqa: B018 (credentials asked for now, before any live display)
    return context


def live(context: RunContext) -> Progress:
    """The run's live per-host display (a no-op off a terminal)."""
    events = context.events
    assert isinstance(events, console.ConsoleEvents) and isinstance(events.live, Progress)
    return events.live


def run_plan(run: RunOptions, *, detailed_exitcode: bool) -> int:
    """Print what bootstrap would change; exit 3 with --detailed-exitcode when anything would."""
    output = run.output
    with open_run(run) as context:
        with live(context):
            planned = flow.plan(context, with_policy=False)
        planned.policy = flow.preview_policy(context)
    if output == "table" and planned.recorders is not None:
        print_recorder_plans(planned.recorders, verbose=run.verbose)
    _print_plans(planned, output, context.inventory if run.verbose else None)
    return planned.exit_code(detailed_exitcode)


def run_bootstrap(run: RunOptions, *, yes: bool, allow_unverified: bool = False,
                  allow_gaps: bool = False) -> int:
    """Plan, confirm, apply (recorders first, health-gated, then servers), verify, summarise."""
    output = run.output
    with open_run(run, yes=yes) as context:
        with live(context):
            # The whole plan before asking, the policy file's diff included; the policy is
            # computed again after the recorders' health gate, which decides enforceRecorder.
            planned = flow.plan(context, with_policy=True)
        if output == "table":
            if planned.recorders is not None:
                print_recorder_plans(planned.recorders, verbose=run.verbose)
            _print_plans(planned, output, context.inventory if run.verbose else None)
            if planned.policy is not None and planned.policy.changed:
                console.line("policy file: written after the servers, with enforceRecorder only "
                             "for recorders that pass their health gate")
        if planned.nothing_plannable:
            # As `terraform apply` on plan errors: nothing to ask about, nothing applied.
            if output == "json":
                console.line(json.dumps(planned.as_dict(), indent=2))
            console.error("nothing could be planned (every host's reason is above): nothing "
                          "was changed")
            return ExitCode.FAILED
        if planned.pending:
            context.events.confirm("Apply these changes?", PENDING)
        with live(context):
            report = flow.apply(context, planned, allow_unverified=allow_unverified,
                                allow_gaps=allow_gaps)
        note_changes(report)
    _print_results(report, output)
    return report.exit_code


def _script_lines(plan: HostPlan, step: Step, inventory: LoadedInventory | None) -> list[str]:
    if inventory is None:
        return []
    script = step_script(plan, step, inventory)
    if script is None:
        return []
    head = "script (as root; the auth key on its standard input)" if step.kind == "enroll" \
        else "script (as root)"
    return [f"{head}:", *(f"  | {line}" for line in script.rstrip("\n").splitlines())]


def note_changes(report: BootstrapReport) -> None:
    """What bootstrap changed, for the run log (tsops.runlog)."""
    from tsops import runlog

    if report.recorders is not None:
        for done in report.recorders.storage.done:
            runlog.note(f"storage {report.recorders.storage.destination}: {done}")
        for recorder in report.recorders.hosts:
            for done in recorder.done:
                runlog.note(f"recorder {recorder.name}: {done}")
    for host in report.hosts:
        for done in host.done:
            runlog.note(f"{host.name}: {done}")
    if report.policy is not None and report.policy.changed:
        runlog.note(f"policy file written (ETag {report.policy.etag})")
    for stream in report.log_streaming.streams if report.log_streaming is not None else ():
        if stream.outcome in ("created", "updated"):
            runlog.note(f"log streaming {stream.log_type} {stream.outcome}")


def _print_plans(planned: BootstrapPlan, output: OutputFormat,
                 scripts_of: LoadedInventory | None = None) -> None:
    """The plan; with `scripts_of` (-v), each step's script as it will run, under it."""
    plans, policy = planned.hosts, planned.policy
    if output == "json":
        console.line(json.dumps(planned.as_dict(), indent=2))
        return
    for plan in plans:
        console.changes(plan.target.name, plan.problem,
                        [(s.summary, [f"API {call}" for call in s.api_calls]
                          + _script_lines(plan, s, scripts_of)) for s in plan.steps])
        for note in plan.notes:
            console.line(f"{plan.target.name}: {note}")
    if policy is not None:
        if policy.changed:
            console.line("policy file:")
            console.write(policy.diff)
        else:
            console.line("policy file: no change")
        for gap in policy.gaps:
            console.warning(gap.line())
    if planned.log_streaming is not None:
        _print_streaming_plan(planned)
    pending = sum(1 for p in plans if p.steps)
    console.line(f"Plan: {pending} of {len(plans)} host(s) to change, "
                 f"{sum(1 for p in plans if p.problem)} cannot be planned"
                 + ("" if policy is None else
                    f", policy file {'to change' if policy.changed else 'unchanged'}") + ".")


def _print_results(report: BootstrapReport, output: OutputFormat) -> None:
    results, recorders, policy = report.hosts, report.recorders, report.policy
    if output == "json":
        console.line(json.dumps(report.as_dict(), indent=2))
        return
    if recorders is not None:
        print_recorder_results(recorders)
    table = Table(show_edge=False, pad_edge=False)
    for column in ("host", "outcome", "changes", "reason"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, r.outcome, str(len(r.done)), r.reason or "-")
    console.out.print(table)
    for r in results:
        if r.failed:
            console.error(f"{r.name}: {r.outcome}: {r.reason}")
    counts = {o: sum(1 for r in results if r.outcome == o)
              for o in ("changed", "unchanged", "failed", "skipped")}
    console.line(", ".join(f"{n} {o}" for o, n in counts.items()))
    if policy is not None and policy.refused:
        console.error(f"policy file: not written: {policy.error}")
    elif policy is not None and policy.error is not None:
        console.error(f"policy file: failed: {policy.error}")
    elif policy is not None:
        console.line(f"policy file: {'changed' if policy.changed else 'unchanged'}")
    if report.log_streaming is not None:
        if report.log_streaming.error is not None:
            console.error(report.log_streaming.error)
        for stream in report.log_streaming.streams:
            if stream.error is not None:
                console.error(f"log streaming {stream.log_type}: failed: {stream.error}")
            else:
                console.line(f"log streaming {stream.log_type}: {stream.outcome}")


def _print_streaming_plan(planned: BootstrapPlan) -> None:
    """Each managed stream's change (secrets named, never shown) and its API call."""
    streaming = planned.log_streaming
    assert streaming is not None
    if streaming.error is not None:
        console.error(streaming.error)
    for stream in streaming.streams:
        console.line(stream.summary())
        if stream.action != "none":
            console.line(f"  API PUT /tailnet/-/logging/{stream.log_type}/stream")


class Progress:
    """A live per-host status display on a terminal; silent elsewhere (and in JSON mode).

    Entered around each phase that works on hosts; between them (a confirmation) it is gone.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.state: dict[str, str] = {}
        self.lock = threading.Lock()
        self.live: Live | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self.live = Live(Table(), console=console.err, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __call__(self, host: str, message: str) -> None:
        """Record a host's latest activity (called from the runner's threads)."""
        with self.lock:
            if self.live is None:
                return
            self.state[host] = message
            table = Table(show_edge=False, pad_edge=False, show_header=False)
            for name, activity in sorted(self.state.items()):
                table.add_row(name, activity)
            self.live.update(table)
