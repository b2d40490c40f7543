"""`tsops add-server` and `tsops remove-server`: run the flows of tsops.flows.servers, showing
the inventory diff and the plan, asking, then rendering what happened."""

from __future__ import annotations

from pathlib import Path

from tsops.cli import console
from tsops.cli.bootstrap import PENDING
from tsops.cli.inventory_file import print_diff
from tsops.cli.jsonout import emit, reserved_stdout
from tsops.errors import ExitCode
from tsops.flows import servers as flow
from tsops.flows.servers import AddPlan, AddReport, RemovePlan, RemoveReport
from tsops.inventory.edit import NewHost


def run_add_server(path: Path, host: NewHost, *, dry_run: bool, yes: bool, no_input: bool,
                   allow_unverified: bool, allow_gaps: bool = False, canary: bool = True,
                   canary_user: str | None = None, canary_timeout: float = 30.0,
                   output: str = "table") -> int:
    """Add `host` to the inventory, enroll it alone, extend the policy when it must."""
    json_mode = output == "json"
    events = console.ConsoleEvents(no_input=no_input, yes=yes, stdout_reserved=json_mode)
    report: AddReport | None = None
    with reserved_stdout(json_mode), flow.adding(path, host) as change:
        print_diff(path, change.before, change.after, "edited")
        with flow.open_run(change, events) as context:
            planned = flow.plan_add(context, change)
            _print_add_plan(planned)
            planned.policy = flow.preview_policy(context)
            if planned.policy is not None:
                _print_policy_plan(planned.policy.diff)
                for gap in planned.policy.gaps:
                    console.warning(gap.line())
            if dry_run:
                console.line("dry run: nothing was changed")
            else:
                context.events.confirm(f"Add {host.name} to {path} and enroll it?", PENDING)
                report = flow.apply_add(context, planned, allow_unverified=allow_unverified,
                                        allow_gaps=allow_gaps, canary=canary,
                                        canary_user=canary_user,
                                        canary_timeout=canary_timeout)
        code = ExitCode.OK if report is None else _report_add(report)
    if json_mode:
        emit({"inventory": str(path), "name": host.name, "dry_run": dry_run,
              "plan": planned.as_dict(), "result": None if report is None else report.as_dict()})
    return code


def run_remove_server(path: Path, name: str, *, logout: bool, uninstall: bool, dry_run: bool,
                      yes: bool, no_input: bool, output: str = "table") -> int:
    """Take `name` out of the inventory and the tailnet, optionally logging it out."""
    json_mode = output == "json"
    events = console.ConsoleEvents(no_input=no_input, yes=yes, stdout_reserved=json_mode)
    report: RemoveReport | None = None
    with reserved_stdout(json_mode), flow.removing(path, name) as change:
        print_diff(path, change.before, change.after, "edited")
        with flow.open_run(change, events) as context:
            planned = flow.plan_remove(context, change, logout=logout, uninstall=uninstall)
            _print_remove_plan(planned)
            if dry_run:
                console.line("dry run: nothing was changed")
            else:
                context.events.confirm(f"Remove {name} from {path} and from the tailnet?",
                                       PENDING)
                report = flow.apply_remove(context, planned)
        code = ExitCode.OK if report is None else _report_remove(report)
    if json_mode:
        emit({"inventory": str(path), "name": name, "dry_run": dry_run,
              "plan": planned.as_dict(), "result": None if report is None else report.as_dict()})
    return code


def _print_add_plan(planned: AddPlan) -> None:
    plan = planned.host
    console.changes(plan.target.name, plan.problem,
                    [(s.summary, [f"API {c}" for c in s.api_calls]) for s in plan.steps])
    for warning in planned.warnings:
        console.warning(warning)


def _print_policy_plan(diff: str) -> None:
    if diff:
        console.line("policy file:")
        console.write(diff)
    else:
        console.line("policy file: no change")


def _report_add(report: AddReport) -> int:
    path, name, result, proof = report.path, report.name, report.enrollment, report.proof
    if report.policy_error is not None:
        verdict = "not written" if report.policy_refused else "failed"
        console.error(f"policy file: {verdict}: {report.policy_error}")
    if result.failed:
        console.error(f"{name}: enrollment {result.outcome}: {result.reason}. The host stays in "
                      f"{path}: fix the cause, then `tsops bootstrap {path}` converges it")
    else:
        console.line(f"{name}: {result.outcome}, enrolled with its tags and Tailscale SSH on")
    if proof is not None:  # only a server enrolled under a written policy is proved
        if proof.state == "recorded":
            console.line(f"{name}: recorded: a canary session as {proof.user} "
                         f"landed at {proof.key} after {proof.seconds or 0:.1f} s")
        else:
            console.error(f"{name}: {proof.state}: {proof.detail}. It is enrolled and in "
                          f"{path}; fix the cause, then `tsops verify {path} --limit {name}`")
    return report.exit_code


def _print_remove_plan(planned: RemovePlan) -> None:
    target, device = planned.change.target, planned.device
    steps: list[tuple[str, list[str]]] = []
    if planned.uninstall or planned.logout:
        what = "log out and uninstall tailscale" if planned.uninstall else "tailscale logout"
        steps.append((f"{what} on the host" + (f" (unreachable now: {planned.unreachable})"
                                               if planned.unreachable else ""), []))
    if device is not None:
        steps.append((f"delete device {device.name or device.hostname} ({device.node_id})",
                      [f"API DELETE /device/{device.id}"]))
    elif planned.problem is not None:
        steps.append((f"cannot delete the device: {planned.problem}", []))
    else:
        steps.append(("no device of this name in the tailnet: nothing to delete", []))
    steps.append((f"remove {target.name} from the inventory", []))
    console.changes(target.name, None, steps)


def _report_remove(report: RemoveReport) -> int:
    name = report.name
    for step in report.steps:
        if step.failure is None:
            console.line(f"{name}: {step.step}: done")
        else:
            console.error(f"{name}: {step.step}: failed: {step.failure}")
    if report.partial:
        console.error(f"{name}: removed only in part (see above); what failed can be done by "
                      "hand")
    return report.exit_code
