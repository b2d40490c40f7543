"""`tsops plan` and `tsops bootstrap`: show the changes, then (bootstrap) make them."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.live import Live
from rich.table import Table

from tsops import console
from tsops.engine import Engine, HostResult
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.inventory.load import LoadedInventory, Target, load_inventory
from tsops.plan import HostPlan
from tsops.remote import Remote
from tsops.tailscale_api import OAuthClientCredentials, TailscaleApi

if TYPE_CHECKING:
    from tsops.recorder.phase import RecorderPhase, RecorderPhaseResult, RecorderPlans

OutputFormat = Literal["table", "json"]


def select(inventory: LoadedInventory, limits: list[str]) -> tuple[Target, ...]:
    """The servers named by `--limit` (host, group or tag), or every server."""
    servers = inventory.servers
    if not limits:
        return servers
    chosen = tuple(
        t for t in servers if any(x in (t.name, t.group) or x in t.tags for x in limits)
    )
    unmatched = [x for x in limits if not any(x in (t.name, t.group, *t.tags) for t in servers)]
    if unmatched:
        raise UsageError(f"--limit {', '.join(unmatched)}: no server of {inventory.path} has "
                         "that name, group or tag")
    return chosen


def connect_api(inventory: LoadedInventory, no_input: bool) -> TailscaleApi:
    """A Tailscale API client with the inventory's credentials, resolved now."""
    from tsops.secrets import resolve

    tailnet = inventory.model.tailnet
    credentials = tailnet.credentials
    if credentials.api_token is not None:
        token = resolve(credentials.api_token, no_input=no_input,
                        prompt_label="Tailscale API token")
        return TailscaleApi(tailnet.api_url, tailnet.name, token=token)
    assert credentials.oauth is not None
    secret = resolve(credentials.oauth.client_secret, no_input=no_input,
                     prompt_label="Tailscale OAuth client secret")
    return TailscaleApi(tailnet.api_url, tailnet.name, oauth=OAuthClientCredentials(
        credentials.oauth.client_id, secret))


def build_engine(
    path: Path, limits: list[str], concurrency: int, no_input: bool, output: OutputFormat
) -> Engine:
    """Load and validate everything local first; only then is anything remote touched."""
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    inventory = load_inventory(path)
    targets = select(inventory, limits)
    api = connect_api(inventory, no_input)
    configured = inventory.model.connection.ssh_config
    ssh_config = str(inventory.local_path(configured)) if configured else None
    return Engine(
        inventory=inventory, targets=targets, api=api, concurrency=concurrency,
        connect=lambda target: Remote(target, ssh_config=ssh_config),
    )


def _progress(output: OutputFormat) -> Progress:
    return Progress(enabled=output == "table" and console.err.is_terminal)


def recorder_phase(engine: Engine, limits: list[str], no_input: bool) -> RecorderPhase | None:
    """The recorder phase for the inventory (none without recorders, or with `--limit`)."""
    from tsops.cli.recorder import has_recorders
    from tsops.recorder.phase import RecorderPhase
    from tsops.secrets import resolve

    if limits or not has_recorders(engine.inventory):
        return None
    return RecorderPhase(
        inventory=engine.inventory, api=engine.api, connect=engine.connect,
        resolve_secret=lambda ref, label: resolve(ref, no_input=no_input, prompt_label=label),
    )


def run_plan(path: Path, limits: list[str], concurrency: int, no_input: bool,
             output: OutputFormat, detailed_exitcode: bool) -> None:
    """Print what bootstrap would change; exit 3 with --detailed-exitcode when anything would."""
    engine = build_engine(path, limits, concurrency, no_input, output)
    phase = recorder_phase(engine, limits, no_input)
    recorder_plans = None
    try:
        with _progress(output) as engine.report:
            if phase is not None:
                phase.report = engine.report
                recorder_plans = phase.plan()
            plans = engine.gather_and_plan()
    finally:
        engine.close()
        if phase is not None:
            phase.close()
    policy = _policy_plan(engine, limits)
    _print_recorder_plans(recorder_plans, output)
    _print_plans(plans, output, recorder_plans, policy)
    if any(p.problem for p in plans) or _recorder_problem(recorder_plans):
        sys.exit(ExitCode.FAILED)
    pending = any(p.steps for p in plans) or (
        recorder_plans is not None and not recorder_plans.converged) or (
        policy is not None and policy[0])
    if detailed_exitcode and pending:
        sys.exit(ExitCode.DRIFT)


def run_bootstrap(path: Path, limits: list[str], concurrency: int, no_input: bool,
                  output: OutputFormat, yes: bool, allow_unverified: bool = False) -> None:
    """Plan, confirm, apply (recorders first, health-gated, then servers), verify, summarise."""
    engine = build_engine(path, limits, concurrency, no_input, output)
    phase = recorder_phase(engine, limits, no_input)
    recorder_plans = None
    recorders: RecorderPhaseResult | None = None
    try:
        with _progress(output) as engine.report:
            if phase is not None:
                phase.report = engine.report
                recorder_plans = phase.plan()
            plans = engine.gather_and_plan()
        _print_recorder_plans(recorder_plans, output if output == "table" else "none")
        _print_plans(plans, output if output == "table" else "none")
        recorders_converged = recorder_plans is None or recorder_plans.converged
        if not (recorders_converged and all(p.converged for p in plans)) and not yes:
            _confirm(no_input)
        if phase is not None and recorder_plans is not None:
            with _progress(output) as engine.report:
                phase.report = engine.report
                recorders = phase.apply(recorder_plans)
        if all(p.converged for p in plans):
            results = [HostResult(p.target.name, "unchanged", round_trips=_trips(engine, p))
                       for p in plans]
        else:
            with _progress(output) as engine.report:
                results = engine.apply(plans)
        policy = _apply_policy(engine, limits, recorders, output, yes=yes, no_input=no_input,
                               allow_unverified=allow_unverified)
    finally:
        engine.close()
        if phase is not None:
            phase.close()
    _print_results(results, output, recorders, policy)
    if any(r.outcome in ("failed", "skipped") for r in results) or (
            recorders is not None and recorders.failed) or policy.get("error"):
        sys.exit(ExitCode.FAILED)


def _has_policy(engine: Engine, limits: list[str]) -> bool:
    """Whether this run patches the policy file (the inventory has rules; no `--limit`)."""
    return bool(engine.inventory.model.ssh_rules) and not limits


def _policy_plan(engine: Engine, limits: list[str]) -> tuple[bool, str] | None:
    """Whether the policy file would change, and the unified diff (None: not managed here)."""
    if not _has_policy(engine, limits):
        return None
    from tsops.policy.apply import diff_policy

    plan, diff = diff_policy(engine.inventory, engine.api)
    return plan.changed, diff


def _apply_policy(engine: Engine, limits: list[str], recorders: RecorderPhaseResult | None,
                  output: OutputFormat, *, yes: bool, no_input: bool,
                  allow_unverified: bool) -> dict[str, object]:
    """The last step: patch the policy, enforcing only recorders verified healthy in this run."""
    if not _has_policy(engine, limits):
        return {}
    from tsops.policy.apply import apply_policy

    try:
        with console.diverted(output == "json"):
            result = apply_policy(
                engine.inventory, engine.api,
                healthy_recorder_tags=set(healthy_recorder_tags(recorders)),
                allow_unverified=allow_unverified, yes=yes, no_input=no_input,
            )
    except TsopsError as error:
        return {"changed": False, "error": error.message}
    return {"changed": result.changed, "diff": result.diff, "etag": result.etag}


def healthy_recorder_tags(recorders: RecorderPhaseResult | None) -> frozenset[str]:
    """The recorder tags with at least one recorder that passed the health gate in this run."""
    return recorders.healthy_tags if recorders is not None else frozenset()


def _recorder_problem(plans: RecorderPlans | None) -> bool:
    if plans is None:
        return False
    return bool(plans.bucket and plans.bucket.problem) or any(p.problem for p in plans.hosts)


def _print_recorder_plans(plans: RecorderPlans | None,
                          output: OutputFormat | Literal["none"]) -> None:
    from tsops.cli.recorder import print_plans

    if plans is not None and output == "table":
        print_plans(plans, "table")


def _trips(engine: Engine, plan: HostPlan) -> int:
    remote = engine.remotes.get(plan.target.name)
    return remote.round_trips if remote is not None else 0


def _confirm(no_input: bool) -> None:
    if no_input or not console.is_interactive():
        raise UsageError("changes are pending and there is no terminal to confirm them: "
                         "rerun with --yes to apply")
    import typer

    if not typer.confirm("Apply these changes?", default=False):
        raise TsopsError("nothing was changed")


def _print_plans(plans: list[HostPlan], output: OutputFormat | Literal["none"],
                 recorders: RecorderPlans | None = None,
                 policy: tuple[bool, str] | None = None) -> None:
    if output == "json":
        from tsops.cli.recorder import plans_json

        extra: dict[str, object] = (
            {"recorders": plans_json(recorders)} if recorders is not None else {})
        if policy is not None:
            extra["policy"] = {"changed": policy[0], "diff": policy[1]}
        console.line(json.dumps({**extra, "hosts": [{
            "name": p.target.name,
            "problem": p.problem,
            "changes": [{"kind": s.kind, "summary": s.summary, "api_calls": list(s.api_calls)}
                        for s in p.steps],
        } for p in plans]}, indent=2))
        return
    if output == "none":
        return
    for plan in plans:
        console.changes(plan.target.name, plan.problem,
                        [(s.summary, [f"API {call}" for call in s.api_calls]) for s in plan.steps])
    if policy is not None:
        if policy[0]:
            console.line("policy file:")
            from tsops.policy.apply import print_diff

            print_diff(policy[1])
        else:
            console.line("policy file: no change")
    pending = sum(1 for p in plans if p.steps)
    console.line(f"Plan: {pending} of {len(plans)} host(s) to change, "
                 f"{sum(1 for p in plans if p.problem)} cannot be planned"
                 + ("" if policy is None else
                    f", policy file {'to change' if policy[0] else 'unchanged'}") + ".")


def _print_results(results: list[HostResult], output: OutputFormat,
                   recorders: RecorderPhaseResult | None = None,
                   policy: dict[str, object] | None = None) -> None:
    from tsops.cli.recorder import print_results, result_json

    if output == "json":
        extra: dict[str, object] = (
            {"recorders": result_json(recorders)} if recorders is not None else {})
        if policy:
            extra["policy"] = policy
        console.line(json.dumps({**extra, "hosts": [asdict(r) for r in results]}, indent=2))
        return
    if recorders is not None:
        print_results(recorders)
    table = Table(show_edge=False, pad_edge=False)
    for column in ("host", "outcome", "changes", "reason"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, r.outcome, str(len(r.done)), r.reason or "-")
    console.out.print(table)
    for r in results:
        if r.outcome in ("failed", "skipped"):
            console.error(f"{r.name}: {r.outcome}: {r.reason}")
    counts = {o: sum(1 for r in results if r.outcome == o)
              for o in ("changed", "unchanged", "failed", "skipped")}
    console.line(", ".join(f"{n} {o}" for o, n in counts.items()))
    if policy and policy.get("error"):
        console.error(f"policy file: failed: {policy['error']}")
    elif policy:
        console.line(f"policy file: {'changed' if policy['changed'] else 'unchanged'}")


class Progress:
    """A live per-host status display on a terminal; silent elsewhere (and in JSON mode)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.state: dict[str, str] = {}
        self.lock = threading.Lock()
        self.live = Live(Table(), console=console.err, transient=True) if enabled else None

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, host: str, message: str) -> None:
        """Record a host's latest activity (called from the engine's threads)."""
        if self.live is None:
            return
        with self.lock:
            self.state[host] = message
            table = Table(show_edge=False, pad_edge=False, show_header=False)
            for name, activity in sorted(self.state.items()):
                table.add_row(name, activity)
            self.live.update(table)
