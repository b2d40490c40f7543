"""Gather, plan, apply for servers: the server phase of `tsops plan` and `tsops bootstrap`.

Every host is gathered with one probe (one SSH round trip), planned with pure code, and applied
in parallel through the run's Runner. One host's failure never stops the others; every host ends
with an outcome and a one-line reason. Ctrl-C stops starting new hosts and steps, lets running
steps finish, and the run still reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from tsops.context import RunContext
from tsops.errors import TsopsError
from tsops.inventory.load import LoadedInventory, Target
from tsops.remote import CommandFailed, RemoteLike, RunResult, run_surviving_restart
from tsops.runner import INTERRUPTED, HostResult
from tsops.servers import scripts
from tsops.servers.facts import FACTS, HostFacts
from tsops.servers.plan import HostPlan, Step, desired_for, plan_host
from tsops.tailscale_api import Device


class ServerPhase:
    """Gather, plan and apply over the chosen servers of a run."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    @property
    def inventory(self) -> LoadedInventory:
        """The run's inventory."""
        return self.context.inventory

    @property
    def report(self) -> Callable[[str, str], None]:
        """Where per-host progress goes."""
        return self.context.events.progress

    def gather_and_plan(self) -> list[HostPlan]:
        """Probe every chosen server in parallel (one round trip each) and plan it."""
        devices = self.context.api.list_devices()
        return self.context.runner.each(self.context.targets,
                                        lambda target: self._plan_one(target, devices))

    def apply(self, plans: list[HostPlan]) -> list[HostResult]:
        """Apply every plan in parallel and verify each host afterwards."""
        by_name = {plan.target.name: plan for plan in plans}
        targets = [plan.target for plan in plans]
        return self.context.runner.each(
            targets, lambda target: self._apply_one(by_name[target.name]),
            skipped=lambda target: HostResult(target.name, "skipped", INTERRUPTED))

    def unchanged(self, plans: list[HostPlan]) -> list[HostResult]:
        """The results of plans with nothing to do (no step applied, nothing probed again)."""
        return [HostResult(p.target.name, "unchanged",
                           round_trips=self.context.round_trips(p.target.name)) for p in plans]

    def _remote(self, target: Target) -> RemoteLike:
        return self.context.remote(target)

    def _facts(self, target: Target) -> HostFacts:
        return FACTS.run(self._remote(target))

    def _plan_one(self, target: Target, devices: list[Device]) -> HostPlan:
        desired = desired_for(self.inventory, target)
        self.report(target.name, "gathering facts")
        try:
            facts = self._facts(target)
        except TsopsError as error:
            return HostPlan(target=target, desired=desired, problem=_reason(error, target))
        plan = plan_host(target, desired, facts, devices)
        self.report(target.name, "planned")
        return plan

    def _apply_one(self, plan: HostPlan) -> HostResult:
        target = plan.target
        remote = self._remote(target)
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
                        self._verify(plan)
            except TsopsError as error:
                result.outcome, result.reason = "failed", _reason(error, target)
        result.round_trips = remote.round_trips
        self.report(target.name, result.outcome)
        return result

    def _apply_step(self, plan: HostPlan, step: Step) -> None:
        assert plan.facts is not None
        remote = self._remote(plan.target)
        install, facts, desired = plan.desired.install, plan.facts, plan.desired
        if step.kind == "repo":
            _check(remote, remote.run(scripts.configure_apt_repo(install, facts)), step)
        elif step.kind == "install" and install.method == "tarball":
            assert install.tarball is not None
            uploaded = None
            if install.tarball.path:
                local = self.inventory.local_path(install.tarball.path)
                _verify_local_tarball(local, install.tarball.sha256)
                uploaded = f"/run/tsops-{hashlib.sha256(str(local).encode()).hexdigest()[:8]}.tgz"
                remote.put(local, uploaded)
            _check(remote, run_surviving_restart(
                remote, scripts.install_tarball(install, facts, uploaded)), step)
        elif step.kind == "install":
            _check(remote, run_surviving_restart(remote, scripts.install_package(install, facts)),
                   step)
        elif step.kind == "service":
            _check(remote, remote.run(scripts.enable_service()), step)
        elif step.kind == "account":
            assert desired.canary_user is not None
            _check(remote, remote.run(scripts.create_account(desired.canary_user)), step)
        elif step.kind == "enroll":
            key = self.context.api.create_auth_key(desired.tags, f"tsops {desired.hostname}")
            try:
                _check(remote, remote.run(scripts.enroll(desired), stdin=key.key + "\n"), step)
            finally:
                self.context.api.delete_key(key.id)
        elif step.kind == "retag":
            assert plan.device is not None
            self.context.api.set_device_tags(plan.device.id, desired.tags)
        elif step.kind == "ssh":
            _check(remote, remote.run(scripts.enable_ssh()), step)
        elif step.kind == "hostname":
            _check(remote, remote.run(scripts.rename(desired.hostname)), step)

    def _verify(self, plan: HostPlan) -> None:
        """Probe again and plan again: a host is done only when nothing is left to change."""
        self.report(plan.target.name, "verifying")
        again = plan_host(plan.target, plan.desired, self._facts(plan.target),
                          self.context.api.list_devices())
        if again.problem is not None:
            raise TsopsError(f"{plan.target.name}: after applying: {again.problem}")
        if again.steps:
            left = "; ".join(step.summary for step in again.steps)
            raise TsopsError(f"{plan.target.name}: after applying, still to do: {left}")


def _check(remote: RemoteLike, result: RunResult, step: Step) -> None:
    if not result.ok:
        raise CommandFailed(remote.name, step.summary, result)


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
