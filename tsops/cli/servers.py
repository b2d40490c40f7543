"""`tsops add-server` and `tsops remove-server`: one server in or out of recording.

Both follow gather, plan, show, apply: the inventory edit is made on a temporary copy and
validated by the loader before anything else happens, the host and the API are read, the plan is
printed, and only then (not with `--dry-run`) is anything changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tsops.cli import console
from tsops.cli.inventory_file import candidate, print_diff
from tsops.context import RunContext
from tsops.engine import ServerPhase
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.inventory.edit import NewHost, add_host, remove_host
from tsops.inventory.load import LoadedInventory, Target, load_inventory

if TYPE_CHECKING:
    from tsops.canary import CanaryResult
    from tsops.plan import HostPlan
    from tsops.remote import RemoteLike
    from tsops.runner import HostResult
    from tsops.tailscale_api import Device, TailscaleApi

STATUS = "tailscale status --json 2>/dev/null || true"
LOGOUT = "tailscale logout"
UNINSTALL = (
    "set -e\n"
    "tailscale logout 2>/dev/null || true\n"
    "systemctl disable --now tailscaled 2>/dev/null || true\n"
    "if command -v dpkg >/dev/null && dpkg -s tailscale >/dev/null 2>&1; then\n"
    "  DEBIAN_FRONTEND=noninteractive apt-get remove -y -q tailscale\n"
    "elif command -v rpm >/dev/null && rpm -q tailscale >/dev/null 2>&1; then\n"
    "  if command -v dnf >/dev/null; then dnf remove -y -q tailscale; "
    "else yum remove -y -q tailscale; fi\n"
    "else\n"
    "  rm -f /usr/bin/tailscale /usr/sbin/tailscaled /etc/systemd/system/tailscaled.service\n"
    "  systemctl daemon-reload\n"
    "fi\n"
)


@dataclass(frozen=True)
class Outcome:
    """One applied step: what it was, and why it failed (None: it worked)."""

    step: str
    failure: str | None = None


def run_add_server(path: Path, host: NewHost, *, dry_run: bool, yes: bool, no_input: bool,
                   allow_unverified: bool, canary: bool = True, canary_user: str | None = None,
                   canary_timeout: float = 30.0) -> int:
    """Add `host` to the inventory, enroll it alone, extend the policy when it must."""
    from tsops.policy.apply import diff_policy

    load_inventory(path)  # the current file must be valid before it is edited
    before = path.read_text(encoding="utf-8")
    edit = add_host(before, host)
    with candidate(path, edit.text, "nothing was changed") as (written, inventory):
        target = next(t for t in inventory.servers if t.name == host.name)
        print_diff(path, before, edit.text, "edited")
        context = _context(inventory, target, no_input)
        engine = ServerPhase(context)
        try:
            plan = engine.gather_and_plan()[0]
            console.changes(target.name, plan.problem,
                            [(s.summary, [f"API {c}" for c in s.api_calls]) for s in plan.steps])
            policy_changes = False
            if inventory.model.ssh_rules:
                _warn_uncovered(inventory, target)
                policy_plan, diff = diff_policy(inventory, context.api)
                policy_changes = policy_plan.changed
                _print_policy_plan(diff)
            else:
                console.warning("the inventory has no ssh_rules: the policy is not managed here, "
                                "and nothing proves this host's sessions are recorded")
            if dry_run:
                console.line("dry run: nothing was changed")
                return ExitCode.OK
            _confirm(f"Add {host.name} to {path} and enroll it?", yes, no_input)
            written.replace(path)
            console.line(f"{path}: {host.name} added")
            # The policy goes first: an auth key may only carry tags declared in tagOwners.
            policy_error = (_extend_policy(inventory, context.api, allow_unverified, no_input)
                            if policy_changes else None)
            result = _enroll(engine, plan)
            proof = (_prove(inventory, context.api, target, canary, canary_user, canary_timeout)
                     if policy_error is None and not result.failed else None)
        finally:
            context.close()
    return _report_add(path, host.name, result, policy_error, proof)


def run_remove_server(path: Path, name: str, *, logout: bool, uninstall: bool, dry_run: bool,
                      yes: bool, no_input: bool) -> int:
    """Take `name` out of the inventory and the tailnet, optionally logging it out."""
    inventory = load_inventory(path)
    target = next((t for t in inventory.servers if t.name == name), None)
    if target is None:
        role = "a recorder, not a server" if any(
            t.name == name for t in inventory.recorders) else "not a server of this inventory"
        raise UsageError(f"{name}: {role} ({path}); nothing was changed")
    before = path.read_text(encoding="utf-8")
    edit = remove_host(before, name)
    with candidate(path, edit.text, "nothing was changed") as (written, _):
        print_diff(path, before, edit.text, "edited")
        context = _context(inventory, target, no_input)
        api, remote = context.api, context.remote(target)
        try:
            node_id, unreachable = _node_id(remote)
            device, problem = _find_device(api.list_devices(), target, node_id)
            _print_remove_plan(target, device, problem, unreachable, logout, uninstall)
            if dry_run:
                console.line("dry run: nothing was changed")
                return ExitCode.OK
            _confirm(f"Remove {name} from {path} and from the tailnet?", yes, no_input)
            outcomes: list[Outcome] = []
            if uninstall or logout:
                outcomes.append(_on_host(remote, unreachable, uninstall))
            if device is not None:
                outcomes.append(_delete(api, device))
            elif problem is not None:
                outcomes.append(Outcome("delete the device", problem))
            written.replace(path)
            outcomes.append(Outcome(f"remove {name} from {path}"))
        finally:
            context.close()
    return _report_remove(name, outcomes)


def _context(inventory: LoadedInventory, target: Target, no_input: bool) -> RunContext:
    """A run limited to exactly this one server."""
    return RunContext(inventory, (target,), console.ConsoleEvents(no_input=no_input),
                      concurrency=1, limited=True)


def _warn_uncovered(inventory: LoadedInventory, target: Target) -> None:
    """Say so when no managed rule's dst names one of the host's tags."""
    covered = {tag for rule in inventory.model.ssh_rules for tag in rule.dst}
    if not covered & set(target.tags):
        console.warning(f"{target.name}: no ssh_rules rule has one of its tags "
                        f"({', '.join(target.tags)}) in dst: its sessions are not covered by "
                        "a rule tsops manages; add its tag to a rule's dst")


def _print_policy_plan(diff: str) -> None:
    if diff:
        console.line("policy file:")
        console.write(diff)
    else:
        console.line("policy file: no change")


def _confirm(question: str, yes: bool, no_input: bool) -> None:
    if yes:
        return
    if no_input or not console.is_interactive():
        raise UsageError("changes are pending and there is no terminal to confirm them: "
                         "rerun with --yes to apply")
    import typer

    if not typer.confirm(question, default=False):
        raise TsopsError("nothing was changed")


def _extend_policy(inventory: LoadedInventory, api: TailscaleApi, allow_unverified: bool,
                   no_input: bool) -> str | None:
    """Patch the policy; an enforcing rule needs a recorder the API shows connected now.

    Without a recorder phase in this run, the health gate is the standalone one: a recorder tag
    counts as healthy when a device carrying it is connected to the control plane.
    """
    from tsops.policy.apply import apply_policy, enforced_recorder_tags, online_recorder_tags

    healthy = online_recorder_tags(api, enforced_recorder_tags(inventory))
    try:
        apply_policy(inventory, api, console.ConsoleEvents(no_input=no_input, yes=True),
                     healthy_recorder_tags=healthy, allow_unverified=allow_unverified)
    except TsopsError as error:
        return error.message
    return None


def _enroll(engine: ServerPhase, plan: HostPlan) -> HostResult:
    if plan.problem is not None:
        return HostResult(plan.target.name, "failed", plan.problem)
    if plan.converged:
        return HostResult(plan.target.name, "unchanged")
    return engine.apply([plan])[0]


def _prove(inventory: LoadedInventory, api: TailscaleApi, target: Target, canary: bool,
           user: str | None, timeout: float) -> CanaryResult | None:
    """A canary session to the new server and its recording at the destination (or None)."""
    from tsops.cli.verify import check_verifiable, verify_servers

    if not canary:
        console.warning(f"{target.name}: --skip-canary: nothing proved that its sessions are "
                        f"recorded; `tsops verify {inventory.path} --limit {target.name}` does")
        return None
    try:
        check_verifiable(inventory)
    except UsageError as error:
        console.warning(f"{target.name}: no canary: {error.message}")
        return None
    return verify_servers(inventory, api, [target], user, timeout)[0]


def _report_add(path: Path, name: str, result: HostResult, policy_error: str | None,
                proof: CanaryResult | None) -> int:
    if policy_error is not None:
        console.error(f"policy file: failed: {policy_error}")
    if result.outcome in ("failed", "skipped"):
        console.error(f"{name}: enrollment {result.outcome}: {result.reason}. The host stays in "
                      f"{path}: fix the cause, then `tsops bootstrap {path}` converges it")
    else:
        console.line(f"{name}: {result.outcome}, enrolled with its tags and Tailscale SSH on")
    if policy_error is not None or result.failed:
        return ExitCode.FAILED
    if proof is None:
        return ExitCode.OK
    if proof.state == "recorded":
        console.line(f"{name}: recorded: a canary session as {proof.user} "
                     f"landed at {proof.key} after {proof.seconds or 0:.1f} s")
        return ExitCode.OK
    console.error(f"{name}: {proof.state}: {proof.detail}. It is enrolled and in {path}; "
                  f"fix the cause, then `tsops verify {path} --limit {name}`")
    return ExitCode.FAILED if proof.state == "error" else ExitCode.DRIFT


def _node_id(remote: RemoteLike) -> tuple[str | None, str | None]:
    """The node ID `tailscale status` reports on the host, and why the host was unreachable."""
    from tsops.facts import parse_status
    from tsops.remote import HostUnreachable

    try:
        result = remote.run(STATUS)
    except HostUnreachable as error:
        return None, error.reason
    status = parse_status(result.stdout)
    return (status.node_id if status is not None else None), None


def _find_device(devices: list[Device], target: Target,
                 node_id: str | None) -> tuple[Device | None, str | None]:
    """The host's device: by node ID when the host told it, else by a unique hostname."""
    if node_id is not None:
        by_node = [d for d in devices if d.node_id == node_id]
        if by_node:
            return by_node[0], None
    by_name = [d for d in devices if d.hostname == target.name
               or d.name.split(".", 1)[0] == target.name]
    if len(by_name) > 1:
        ids = ", ".join(d.id for d in by_name)
        return None, (f"{len(by_name)} devices are named {target.name} ({ids}) and the host did "
                      "not tell its node ID: delete the right one by hand")
    return (by_name[0], None) if by_name else (None, None)


def _print_remove_plan(target: Target, device: Device | None, problem: str | None,
                       unreachable: str | None, logout: bool, uninstall: bool) -> None:
    steps: list[tuple[str, list[str]]] = []
    if uninstall or logout:
        what = "log out and uninstall tailscale" if uninstall else "tailscale logout"
        steps.append((f"{what} on the host" + (f" (unreachable now: {unreachable})"
                                               if unreachable else ""), []))
    if device is not None:
        steps.append((f"delete device {device.name or device.hostname} ({device.node_id})",
                      [f"API DELETE /device/{device.id}"]))
    elif problem is not None:
        steps.append((f"cannot delete the device: {problem}", []))
    else:
        steps.append(("no device of this name in the tailnet: nothing to delete", []))
    steps.append((f"remove {target.name} from the inventory", []))
    console.changes(target.name, None, steps)


def _on_host(remote: RemoteLike, unreachable: str | None, uninstall: bool) -> Outcome:
    from tsops.remote import HostUnreachable

    step = "uninstall tailscale" if uninstall else "tailscale logout"
    if unreachable is not None:
        return Outcome(step, f"unreachable: {unreachable}")
    try:
        result = remote.run(UNINSTALL if uninstall else LOGOUT)
    except HostUnreachable as error:
        return Outcome(step, f"unreachable: {error.reason}")
    if not result.ok:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return Outcome(step, f"exit {result.exited}: {detail[-1] if detail else 'no output'}")
    return Outcome(step)


def _delete(api: TailscaleApi, device: Device) -> Outcome:
    step = f"delete device {device.id}"
    try:
        api.delete_device(device.id)
    except TsopsError as error:
        return Outcome(step, error.message)
    return Outcome(step)


def _report_remove(name: str, outcomes: list[Outcome]) -> int:
    for outcome in outcomes:
        if outcome.failure is None:
            console.line(f"{name}: {outcome.step}: done")
        else:
            console.error(f"{name}: {outcome.step}: failed: {outcome.failure}")
    if any(o.failure for o in outcomes):
        console.error(f"{name}: removed only in part (see above); what failed can be done by "
                      "hand")
        return ExitCode.FAILED
    return ExitCode.OK
