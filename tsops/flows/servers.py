"""`add-server` and `remove-server`: one server in or out of recording.

Both follow gather, plan, apply: the inventory edit is made on a private copy and validated by
the loader before anything else happens (`adding`, `removing`), the host and the API are read
(`plan_add`, `plan_remove`), and only then, after the caller has shown the plan and asked, is
anything changed (`apply_add`, `apply_remove`). The edited file replaces the inventory only in
apply; leaving the `with` block of `adding`/`removing` without that removes the copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops.canary import DEFAULT_TIMEOUT_S
from tsops.context import RunContext
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.events import Confirmed, Events
from tsops.flows.bootstrap import PolicyPreview
from tsops.inventory.edit import NewHost, add_host, remove_host
from tsops.inventory.file import candidate, commit
from tsops.inventory.load import LoadedInventory, Target, load_inventory
from tsops.runner import HostResult
from tsops.servers.phase import ServerPhase

if TYPE_CHECKING:
    from tsops.canary import CanaryResult, SessionRunner
    from tsops.remote import RemoteLike
    from tsops.servers.plan import HostPlan
    from tsops.tailscale_api import Device, TailscaleApi

REFUSED = "nothing was changed"
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
class InventoryChange:
    """One server's edit of the inventory, validated on a private copy; `commit` writes it.

    `inventory` is what the flow works with: the edited inventory when adding, the current one
    (which still has the server) when removing.
    """

    path: Path
    before: str
    after: str
    inventory: LoadedInventory
    target: Target

    def commit(self) -> None:
        """Write the edit over the inventory (atomic, keeping the file's mode), unless the file
        changed since it was read."""
        commit(self.path, self.before, self.after)


@contextmanager
def adding(path: Path, host: NewHost) -> Iterator[InventoryChange]:
    """The inventory with `host` added, validated; nothing remote is touched."""
    load_inventory(path)  # the current file must be valid before it is edited
    before = path.read_text(encoding="utf-8")
    edit = add_host(before, host)
    with candidate(path, edit.text, REFUSED) as (_, inventory):
        target = next(t for t in inventory.servers if t.name == host.name)
        yield InventoryChange(path, before, edit.text, inventory, target)


@contextmanager
def removing(path: Path, name: str) -> Iterator[InventoryChange]:
    """The inventory without server `name`, validated; nothing remote is touched."""
    inventory = load_inventory(path)
    target = next((t for t in inventory.servers if t.name == name), None)
    if target is None:
        role = "a recorder, not a server" if any(
            t.name == name for t in inventory.recorders) else "not a server of this inventory"
        raise UsageError(f"{name}: {role} ({path}); {REFUSED}")
    before = path.read_text(encoding="utf-8")
    edit = remove_host(before, name)
    with candidate(path, edit.text, REFUSED):
        yield InventoryChange(path, before, edit.text, inventory, target)


def open_run(change: InventoryChange, events: Events) -> RunContext:
    """A run limited to exactly the changed server."""
    return RunContext(change.inventory, (change.target,), events, concurrency=1, limited=True)


# add-server

@dataclass
class AddPlan:
    """What adding the server would do: its enrollment plan, warnings, the policy change.

    `policy` is None when the inventory has no ssh_rules (the policy is not managed here) or
    before `preview_policy` has filled it in.
    """

    change: InventoryChange
    host: HostPlan
    warnings: tuple[str, ...]
    policy: PolicyPreview | None = None

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (the `plan` of `add-server -o json`)."""
        plan = self.host
        return {
            "name": plan.target.name, "problem": plan.problem,
            "changes": [{"kind": s.kind, "summary": s.summary, "api_calls": list(s.api_calls)}
                        for s in plan.steps],
            "warnings": list(self.warnings),
            "policy": None if self.policy is None else {
                "changed": self.policy.changed, "diff": self.policy.diff,
                "coverage_gaps": [g.as_dict() for g in self.policy.gaps]},
        }


@dataclass
class AddReport:
    """How adding the server ended: its enrollment, the policy write, the canary's proof."""

    path: Path
    name: str
    enrollment: HostResult
    policy_error: str | None = None
    proof: CanaryResult | None = None
    policy_refused: bool = False  # not written for coverage gaps (the error lists them)

    @property
    def exit_code(self) -> ExitCode:
        """1 when enrollment or the policy failed or the canary could not check; 3 when the
        policy was refused for coverage gaps, or the canary was refused or not recorded;
        else 0."""
        if self.enrollment.failed or (self.policy_error is not None and not self.policy_refused):
            return ExitCode.FAILED
        if self.policy_refused:
            return ExitCode.DRIFT
        if self.proof is None or self.proof.state == "recorded":
            return ExitCode.OK
        return ExitCode.FAILED if self.proof.state == "error" else ExitCode.DRIFT

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data (the `result` of `add-server -o json`)."""
        enrollment, proof = self.enrollment, self.proof
        return {
            "enrollment": {"outcome": enrollment.outcome, "reason": enrollment.reason or None,
                           "done": list(enrollment.done)},
            "policy": {"written": self.policy_error is None, "error": self.policy_error,
                       "refused": self.policy_refused},
            "proof": None if proof is None else {
                "state": proof.state, "detail": proof.detail, "user": proof.user or None,
                "recording": proof.key, "node_id": proof.node_id or None,
                "seconds": None if proof.seconds is None else round(proof.seconds, 1)},
            "exit_code": int(self.exit_code),
        }


def plan_add(context: RunContext, change: InventoryChange) -> AddPlan:
    """Gather the new server (one probe) and plan its enrollment; nothing is changed."""
    host = ServerPhase(context).gather_and_plan()[0]
    return AddPlan(change, host, _add_warnings(change.inventory, change.target))


def _add_warnings(inventory: LoadedInventory, target: Target) -> tuple[str, ...]:
    """No managed policy; or no managed rule's dst naming one of the host's tags."""
    rules = inventory.model.ssh_rules
    if not rules:
        return ("the inventory has no ssh_rules: the policy is not managed here, and nothing "
                "proves this host's sessions are recorded",)
    covered = {tag for rule in rules for tag in rule.dst}
    if covered & set(target.tags):
        return ()
    return (f"{target.name}: no ssh_rules rule has one of its tags ({', '.join(target.tags)}) "
            "in dst: its sessions are not covered by a rule tsops manages; add its tag to a "
            "rule's dst",)


def preview_policy(context: RunContext) -> PolicyPreview | None:
    """The policy file's pending change (None: the inventory has no ssh_rules)."""
    if not context.inventory.model.ssh_rules:
        return None
    from tsops.policy.apply import diff_policy

    policy_plan, diff = diff_policy(context.inventory, context.api)
    return PolicyPreview(policy_plan.changed, diff, policy_plan.coverage.gaps)


def apply_add(context: RunContext, planned: AddPlan, *, allow_unverified: bool = False,
              allow_gaps: bool = False, canary: bool = True, canary_user: str | None = None,
              canary_timeout: float = DEFAULT_TIMEOUT_S,
              session: SessionRunner | None = None) -> AddReport:
    """Write the inventory, extend the policy when it must change, enroll the server alone,
    then prove its sessions recorded with a canary (unless `canary` is off)."""
    change = planned.change
    change.commit()
    context.events.info(f"{change.path}: {change.target.name} added")
    # The policy goes first: an auth key may only carry tags declared in tagOwners.
    policy_error, refused = (_extend_policy(context, allow_unverified, allow_gaps)
                             if planned.policy is not None and planned.policy.changed
                             else (None, False))
    enrollment = _enroll(ServerPhase(context), planned.host)
    proof = None
    if policy_error is None and not enrollment.failed:
        proof = _prove(context, change.target, canary, canary_user, canary_timeout, session)
    return AddReport(change.path, change.target.name, enrollment, policy_error, proof, refused)


def _extend_policy(context: RunContext, allow_unverified: bool,
                   allow_gaps: bool = False) -> tuple[str | None, bool]:
    """Patch the policy; an enforcing rule needs a recorder that passes the health gate now.

    Without a recorder phase in this run, the health gate runs on its own
    (tsops.recorders.phase.verified_recorder_tags): a recorder tag counts as healthy when one of
    the inventory's recorders is active, online and writes its destination through its own
    credentials; online alone is not healthy. The operator has confirmed the whole change
    already, so the policy step asks nothing again. Returns the error, if any, and whether it
    was a refusal for coverage gaps.
    """
    from tsops.policy.apply import CoverageRefused, apply_policy, enforced_recorder_tags
    from tsops.recorders.phase import verified_recorder_tags

    inventory, api = context.inventory, context.api

    def healthy() -> set[str]:  # the override skips the gate (the policy step warns)
        if allow_unverified:
            return set()
        return verified_recorder_tags(context, enforced_recorder_tags(inventory))

    try:
        apply_policy(inventory, api, Confirmed(context.events), healthy_recorder_tags=healthy,
                     allow_unverified=allow_unverified, allow_gaps=allow_gaps)
    except CoverageRefused as refused:
        return refused.message, True
    except TsopsError as error:
        return error.message, False
    return None, False


def _enroll(phase: ServerPhase, plan: HostPlan) -> HostResult:
    if plan.problem is not None:
        return HostResult(plan.target.name, "failed", plan.problem)
    if plan.converged:
        return HostResult(plan.target.name, "unchanged")
    return phase.apply([plan])[0]


def _prove(context: RunContext, target: Target, canary: bool, user: str | None,
           timeout: float, session: SessionRunner | None) -> CanaryResult | None:
    """A canary session to the new server and its recording at the destination (or None)."""
    from tsops.flows.verify import check_verifiable, verify_servers

    if not canary:
        context.events.warning(
            f"{target.name}: --skip-canary: nothing proved that its sessions are recorded; "
            f"`tsops verify {context.inventory.path} --limit {target.name}` does")
        return None
    try:
        check_verifiable(context.inventory)
    except UsageError as error:
        context.events.warning(f"{target.name}: no canary: {error.message}")
        return None
    return verify_servers(context, [target], user, timeout, session)[0]


# remove-server


@dataclass(frozen=True)
class StepResult:
    """One applied step of remove-server: what it was, and why it failed (None: it worked)."""

    step: str
    failure: str | None = None


@dataclass(frozen=True)
class RemovePlan:
    """What removing the server would do.

    `device` is its device in the tailnet (None: none found, or `problem` says why it cannot be
    told); `unreachable` why the host did not answer; `logout`/`uninstall` what to run there.
    """

    change: InventoryChange
    device: Device | None
    problem: str | None
    unreachable: str | None
    logout: bool
    uninstall: bool

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (the `plan` of `remove-server -o json`)."""
        device = self.device
        return {
            "name": self.change.target.name,
            "device": None if device is None else {
                "id": device.id, "node_id": device.node_id, "name": device.name,
                "hostname": device.hostname},
            "problem": self.problem, "unreachable": self.unreachable,
            "logout": self.logout or self.uninstall, "uninstall": self.uninstall,
        }


@dataclass(frozen=True)
class RemoveReport:
    """Every applied step, in order; the server is out of the inventory in any case."""

    name: str
    steps: list[StepResult]

    @property
    def partial(self) -> bool:
        """Whether a step failed (the rest was done)."""
        return any(s.failure for s in self.steps)

    @property
    def exit_code(self) -> ExitCode:
        """1 when a step failed, else 0."""
        return ExitCode.FAILED if self.partial else ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data (the `result` of `remove-server -o json`)."""
        return {"steps": [{"step": s.step, "failure": s.failure} for s in self.steps],
                "partial": self.partial, "exit_code": int(self.exit_code)}


def plan_remove(context: RunContext, change: InventoryChange, *, logout: bool = False,
                uninstall: bool = False) -> RemovePlan:
    """Ask the host its node ID (one round trip) and find its device; nothing is changed."""
    api, remote = context.api, context.remote(change.target)
    node_id, unreachable = _node_id(remote)
    device, problem = _find_device(api.list_devices(), change.target, node_id)
    return RemovePlan(change, device, problem, unreachable, logout, uninstall)


def apply_remove(context: RunContext, planned: RemovePlan) -> RemoveReport:
    """Log out or uninstall on the host, delete the device, take it out of the inventory; a
    failed step does not stop the others."""
    change = planned.change
    steps: list[StepResult] = []
    if planned.uninstall or planned.logout:
        steps.append(_on_host(context.remote(change.target), planned.unreachable,
                              planned.uninstall))
    if planned.device is not None:
        steps.append(_delete(context.api, planned.device))
    elif planned.problem is not None:
        steps.append(StepResult("delete the device", planned.problem))
    change.commit()
    steps.append(StepResult(f"remove {change.target.name} from {change.path}"))
    return RemoveReport(change.target.name, steps)


def _node_id(remote: RemoteLike) -> tuple[str | None, str | None]:
    """The node ID `tailscale status` reports on the host, and why the host was unreachable."""
    from tsops.remote import HostUnreachable
    from tsops.servers.facts import NODE_STATUS

    try:
        status = NODE_STATUS.run(remote)
    except HostUnreachable as error:
        return None, error.reason
    return (status.node_id if status is not None else None), None


def _find_device(devices: list[Device], target: Target,
                 node_id: str | None) -> tuple[Device | None, str | None]:
    """The host's device: by node ID when the host told it (no other device is ever deleted
    then: a device of the same name with another node ID is a stale twin, or another
    machine), else by a unique hostname."""
    if node_id is not None:
        by_node = [d for d in devices if d.node_id == node_id]
        return (by_node[0] if by_node else None), None
    by_name = [d for d in devices if d.hostname == target.name
               or d.name.split(".", 1)[0] == target.name]
    if len(by_name) > 1:
        ids = ", ".join(d.id for d in by_name)
        return None, (f"{len(by_name)} devices are named {target.name} ({ids}) and the host did "
                      "not tell its node ID: delete the right one by hand")
    return (by_name[0], None) if by_name else (None, None)


def _on_host(remote: RemoteLike, unreachable: str | None, uninstall: bool) -> StepResult:
    from tsops.remote import HostUnreachable, run_leaving_tailnet

    step = "uninstall tailscale" if uninstall else "tailscale logout"
    if unreachable is not None:
        return StepResult(step, f"unreachable: {unreachable}")
    try:
        result, seen = run_leaving_tailnet(remote, UNINSTALL if uninstall else LOGOUT)
    except HostUnreachable as error:
        return StepResult(step, f"unreachable: {error.reason}")
    if seen is not None:
        step = f"{step} ({seen})"
    if not result.ok:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return StepResult(step, f"exit {result.exited}: {detail[-1] if detail else 'no output'}")
    return StepResult(step)


def _delete(api: TailscaleApi, device: Device) -> StepResult:
    step = f"delete device {device.id}"
    try:
        api.delete_device(device.id)
    except TsopsError as error:
        return StepResult(step, error.message)
    return StepResult(step)
