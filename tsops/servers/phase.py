"""Gather, plan, apply for servers: the server phase of `tsops plan` and `tsops bootstrap`.

Every host is gathered with one probe (one SSH round trip), planned with pure code, and applied
in parallel through the run's Runner. One host's failure never stops the others; every host ends
with an outcome and a one-line reason. Ctrl-C stops starting new hosts and steps, lets running
steps finish, and the run still reports.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from time import monotonic, sleep

from tsops.context import RunContext
from tsops.errors import TsopsError
from tsops.inventory.load import LoadedInventory, Target
from tsops.remote import (
    CommandFailed,
    HostUnreachable,
    RemoteLike,
    RunResult,
    Stage,
    run_surviving_restart,
)
from tsops.runner import INTERRUPTED, HostResult
from tsops.servers import exposure, scripts
from tsops.servers.facts import FACTS, HostFacts
from tsops.servers.plan import HostPlan, Step, StepKind, desired_for, plan_host
from tsops.tailscale_api import Device


class ServerPhase:
    """Gather, plan and apply over the chosen servers of a run."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.earlier_round_trips: dict[str, int] = {}

    @property
    def inventory(self) -> LoadedInventory:
        """The run's inventory."""
        return self.context.inventory

    @property
    def report(self) -> Callable[[str, str], None]:
        """Where per-host progress goes."""
        return self.context.events.progress

    def gather_and_plan(self, *, without_api: bool = False) -> list[HostPlan]:
        """Probe every chosen server in parallel (one round trip each) and plan it.

        `without_api`: when the device list cannot be read, plan from the hosts alone (status
        reports what it could probe; nothing is applied from such plans).
        """
        devices: list[Device] | None
        try:
            devices = self.context.devices()  # also what chooses each server's connection path
        except TsopsError:
            if not without_api:
                raise
            devices = None
        return self.context.runner.each(self.context.targets,
                                        lambda target: self._plan_one(target, devices))

    def apply(self, plans: list[HostPlan], *,
              hold: frozenset[StepKind] = frozenset()) -> list[HostResult]:
        """Apply every plan in parallel and verify each host afterwards.

        Steps of the kinds in `hold` are left for `finish` (bootstrap holds the OpenSSH change
        until the policy, with the rule that lets tsops in over Tailscale SSH, is written).
        """
        by_name = {plan.target.name: _without(plan, hold) for plan in plans}
        targets = [plan.target for plan in plans]
        return self.context.runner.each(
            targets, lambda target: self._apply_one(by_name[target.name], hold),
            skipped=lambda target: HostResult(target.name, "skipped", INTERRUPTED))

    def finish(self, plans: list[HostPlan], results: list[HostResult],
               hold: frozenset[StepKind], blocked: str | None = None) -> list[HostResult]:
        """Apply the held steps of the hosts that got through `apply`, merged into `results`.

        `blocked` says why they cannot be applied now (the host then fails with it).
        """
        by_name = {result.name: result for result in results}
        held = [plan for plan in plans if any(step.kind in hold for step in plan.steps)
                and not by_name[plan.target.name].failed]
        if not held:
            return results
        if blocked is not None:
            for plan in held:
                result = by_name[plan.target.name]
                result.outcome = "failed"
                result.reason = (f"{'; '.join(s.summary for s in plan.steps if s.kind in hold)}"
                                 f": not done, {blocked}; rerun when that is fixed")
            return results
        only = {plan.target.name: replace(plan, steps=tuple(
            step for step in plan.steps if step.kind in hold)) for plan in held}
        finished = self.context.runner.each(
            [plan.target for plan in held],
            lambda target: self._apply_one(only[target.name], frozenset()),
            skipped=lambda target: HostResult(target.name, "skipped", INTERRUPTED))
        for late in finished:
            result = by_name[late.name]
            result.done.extend(late.done)
            result.round_trips = late.round_trips
            if late.outcome != "unchanged":
                result.outcome = late.outcome
            if late.reason:
                result.reason = late.reason
        return results

    def unchanged(self, plans: list[HostPlan]) -> list[HostResult]:
        """The results of plans with nothing to do (no step applied, nothing probed again)."""
        return [HostResult(p.target.name, "unchanged",
                           round_trips=self.context.round_trips(p.target.name)) for p in plans]

    def _remote(self, target: Target) -> RemoteLike:
        return self.context.remote(target)

    def _facts(self, target: Target) -> HostFacts:
        return FACTS.run(self._remote(target))

    def _plan_one(self, target: Target, devices: list[Device] | None) -> HostPlan:
        desired = desired_for(self.inventory, target)
        self.report(target.name, "gathering facts")
        try:
            facts = self._facts(target)
        except TsopsError as error:
            return HostPlan(target=target, desired=desired, problem=_reason(error, target))
        plan = plan_host(target, desired, facts, devices)
        self.report(target.name, "planned")
        return plan

    def _apply_one(self, plan: HostPlan, hold: frozenset[StepKind] = frozenset()) -> HostResult:
        target = plan.target
        result = HostResult(target.name, "unchanged")
        if plan.problem is not None:
            result.outcome, result.reason = "failed", plan.problem
        else:
            try:
                for step in plan.steps:
                    if self.context.runner.stopping.is_set():
                        result.outcome = "failed" if result.done else "skipped"
                        result.reason = "interrupted; rerun to finish"
                        break
                    self.report(target.name, step.summary)
                    self._apply_step(plan, step)
                    result.done.append(step.summary)
                    result.outcome = "changed"
                else:
                    if plan.steps:
                        self._verify(plan, hold)
            except TsopsError as error:
                result.outcome, result.reason = "failed", _reason(error, target)
        result.round_trips = (self.earlier_round_trips.get(target.name, 0)
                              + self.context.round_trips(target.name))
        self.report(target.name, result.outcome)
        return result

    def _apply_step(self, plan: HostPlan, step: Step) -> None:
        assert plan.facts is not None
        remote = self._remote(plan.target)
        install, desired = plan.desired.install, plan.desired
        if step.kind == "install" and install.method == "tarball" and install.tarball \
                and install.tarball.path:
            local = self.inventory.local_path(install.tarball.path)
            _verify_local_tarball(local, install.tarball.sha256)
            with Stage(remote, files={scripts.STAGED_TARBALL: local}) as stage:
                _check(remote, stage.run(step_script(plan, step, self.inventory) or "",
                                         surviving_restart=True), step)
        elif step.kind == "install":
            _check(remote, run_surviving_restart(
                remote, step_script(plan, step, self.inventory) or ""), step)
        elif step.kind == "enroll":
            key = self.context.api.create_auth_key(desired.tags, f"tsops {desired.hostname}")
            try:
                with Stage(remote, texts={scripts.STAGED_AUTHKEY: key.key + "\n"}) as stage:
                    _check(remote, stage.run(step_script(plan, step, self.inventory) or ""),
                           step)
            finally:
                self.context.api.delete_key(key.id)
        elif step.kind == "retag":
            assert plan.device is not None
            self.context.api.set_device_tags(plan.device.id, desired.tags)
        elif step.kind == "openssh":
            self._apply_exposure(plan, step)
        else:
            _check(remote, remote.run(step_script(plan, step, self.inventory) or ""), step)

    def _reconnect(self, target: Target) -> RemoteLike:
        """A new connection over the path tsops uses next, keeping the old one's round trips."""
        name = target.name
        self.earlier_round_trips[name] = (self.earlier_round_trips.get(name, 0)
                                          + self.context.round_trips(name))
        return self.context.reconnect(target)

    def _apply_exposure(self, plan: HostPlan, step: Step) -> None:
        """Arm the dead-man, change sshd, and confirm over a new connection (or report the revert).

        The change is final only once a new connection disarmed the timer; if none can be
        opened, the host restores OpenSSH by itself when the window ends, and tsops waits for
        that, checks the host answers again and fails the host naming what was reverted.
        """
        target = plan.target
        openssh = target.openssh
        token = secrets.token_hex(6)
        remote = self._remote(target)
        try:
            result = remote.run(exposure.apply_script(token, openssh))
        except HostUnreachable as error:
            self._await_revert(plan, token, monotonic(), f"the connection was lost while "
                               f"applying OpenSSH {openssh.mode} ({error.reason})")
            return
        armed = monotonic()
        if result.exited in (5, 6):  # sshd -t refused the drop-in, or no timer: nothing changed
            detail = " ".join(result.stderr.split())
            raise TsopsError(f"{target.name}: {detail or 'the change was not made'}")
        if not result.ok:
            output = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
            self._await_revert(plan, token, armed, f"applying OpenSSH {openssh.mode} failed "
                               f"(exit {result.exited}: {output[-1]})")
            return
        self.report(target.name, "confirming the OpenSSH change over a new connection")
        try:
            confirmed = self._reconnect(target).run(exposure.disarm_script(token))
        except HostUnreachable as error:
            self._await_revert(plan, token, armed, f"OpenSSH {openssh.mode} cut tsops off (a "
                               f"new connection failed: {error.reason})")
            return
        if confirmed.exited == 4:
            raise TsopsError(f"{target.name}: OpenSSH {openssh.mode} was reverted by the host's "
                             f"dead-man timer before tsops could confirm it "
                             f"(revert_after {openssh.revert_after} too short?): "
                             f"{confirmed.stdout.strip()}")
        _check(self._remote(target), confirmed, step)

    def _await_revert(self, plan: HostPlan, token: str, armed: float, lost: str) -> None:
        """Wait out the dead-man window, reach the host again and report what it reverted."""
        target = plan.target
        openssh = target.openssh
        self.report(target.name, f"{lost}; waiting for the host's dead-man revert "
                                 f"({openssh.revert_after})")
        sleep(max(0.0, armed + openssh.revert_seconds + REVERT_GRACE - monotonic()))
        deadline = monotonic() + REACH_AGAIN
        while True:
            try:
                remote = self._reconnect(target)
                outcome = remote.run(exposure.outcome_script(token))
                break
            except HostUnreachable as again:
                if monotonic() > deadline:
                    raise TsopsError(
                        f"{target.name}: {lost}; still unreachable {int(REACH_AGAIN)}s after "
                        f"its dead-man window ({again.reason}): its revert should have restored "
                        "OpenSSH as it was; check the host's console") from again
                sleep(REACH_RETRY)
        if outcome.exited == 3:
            raise TsopsError(f"{target.name}: {lost}; {outcome.stdout.strip()}")
        if outcome.exited == 0:
            # The timer never fired (the host's clock? a stopped timer?): revert it now.
            reverted = remote.run(f"/bin/sh {exposure.state_path(token)}.revert; "
                                  f"{exposure.outcome_script(token)}")
            raise TsopsError(f"{target.name}: {lost}; its dead-man timer had not fired, tsops "
                             f"reverted it: {reverted.stdout.strip()}")
        raise TsopsError(f"{target.name}: {lost}; the host reverted it by itself and is "
                         f"reachable again: {outcome.stdout.strip()}")

    def _verify(self, plan: HostPlan, hold: frozenset[StepKind] = frozenset()) -> None:
        """Probe again and plan again: a host is done only when nothing is left to change
        (but the held steps)."""
        self.report(plan.target.name, "verifying")
        again = plan_host(plan.target, plan.desired, self._facts(plan.target),
                          self.context.api.list_devices())
        if again.problem is not None:
            raise TsopsError(f"{plan.target.name}: after applying: {again.problem}")
        left_steps = [step for step in again.steps if step.kind not in hold]
        if left_steps:
            left = "; ".join(step.summary for step in left_steps)
            raise TsopsError(f"{plan.target.name}: after applying, still to do: {left}")


REVERT_GRACE = 5.0
"""Seconds after the dead-man window before tsops looks for the host again."""
REACH_AGAIN = 120.0
"""How long after that tsops keeps trying to reach the host."""
REACH_RETRY = 3.0


def _without(plan: HostPlan, hold: frozenset[StepKind]) -> HostPlan:
    """The plan without its held steps."""
    if not hold:
        return plan
    return replace(plan, steps=tuple(step for step in plan.steps if step.kind not in hold))


def _check(remote: RemoteLike, result: RunResult, step: Step) -> None:
    if not result.ok:
        raise CommandFailed(remote.name, step.summary, result)


def step_script(plan: HostPlan, step: Step, inventory: LoadedInventory,
                label: str = "LABEL") -> str | None:
    """The exact shell script a step runs as root on the host (None: an API call only).

    Apply runs what this returns; `plan -v` prints it. No script holds a secret: the auth key
    of `enroll` and a local tarball are staged by the SSH user in a private directory the
    script finds as `$stage` (tsops.remote.Stage). `label` names the OpenSSH change's dead-man timer
    (random at apply time, which runs `_apply_exposure`).
    """
    assert plan.facts is not None
    install, facts, desired = plan.desired.install, plan.facts, plan.desired
    if step.kind == "repo":
        return scripts.configure_apt_repo(install, facts)
    if step.kind == "install" and install.method == "tarball":
        assert install.tarball is not None
        return scripts.install_tarball(install, facts, uploaded=bool(install.tarball.path))
    if step.kind == "install":
        return scripts.install_package(install, facts)
    if step.kind == "service":
        return scripts.enable_service()
    if step.kind == "account":
        assert desired.canary_user is not None
        return scripts.create_account(desired.canary_user)
    if step.kind == "enroll":
        return scripts.enroll(desired)
    if step.kind == "ssh":
        return scripts.enable_ssh()
    if step.kind == "hostname":
        return scripts.rename(desired.hostname)
    if step.kind == "openssh":
        return exposure.apply_script(label, plan.target.openssh)
    return None


def _verify_local_tarball(path: Path, sha256: str) -> None:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise TsopsError(f"cannot read the tarball {path}: {error.strerror}") from error
    if digest != sha256:
        raise TsopsError(f"{path} has sha256 {digest}, the inventory says {sha256}: "
                         "nothing was installed")


def _reason(error: TsopsError, target: Target) -> str:
    return error.message.removeprefix(f"{target.name}: ")
