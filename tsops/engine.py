"""Gather, plan, apply: the engine behind `tsops plan` and `tsops bootstrap`.

Every host is gathered with one probe (one SSH round trip), planned with pure code, and applied
in parallel. One host's failure never stops the others; every host ends with an outcome and a
one-line reason. Ctrl-C stops starting new hosts and steps, lets running steps finish, and the
run still reports.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from tsops import scripts
from tsops.errors import TsopsError
from tsops.facts import PROBE, HostFacts, ProbeError, parse_facts
from tsops.inventory.load import LoadedInventory, Target
from tsops.plan import HostPlan, Step, desired_for, plan_host
from tsops.remote import CommandFailed, RunResult
from tsops.tailscale_api import Device, TailscaleApi

T = TypeVar("T")
Outcome = Literal["unchanged", "changed", "failed", "skipped"]
Reporter = Callable[[str, str], None]


class RemoteLike(Protocol):
    """What the engine needs from a host connection (tsops.remote.Remote provides it)."""

    round_trips: int

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class HostResult:
    """How one host ended."""

    name: str
    outcome: Outcome
    reason: str = ""
    done: list[str] = field(default_factory=list)
    round_trips: int = 0


@dataclass
class Engine:
    """Runs gather, plan and apply over the servers of an inventory."""

    inventory: LoadedInventory
    targets: tuple[Target, ...]
    api: TailscaleApi
    connect: Callable[[Target], RemoteLike]
    concurrency: int = 32
    report: Reporter = lambda host, message: None
    remotes: dict[str, RemoteLike] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Close every host connection."""
        for remote in self.remotes.values():
            remote.close()

    def gather_and_plan(self) -> list[HostPlan]:
        """Probe every host in parallel (one round trip each) and plan it."""
        devices = self.api.list_devices()
        return self._parallel(lambda target: self._plan_one(target, devices))

    def apply(self, plans: list[HostPlan]) -> list[HostResult]:
        """Apply every plan in parallel and verify each host afterwards."""
        by_name = {plan.target.name: plan for plan in plans}
        return self._parallel(lambda target: self._apply_one(by_name[target.name]),
                              skipped=lambda target: HostResult(
                                  target.name, "skipped", "interrupted before it started"))

    def _parallel(
        self, work: Callable[[Target], T], skipped: Callable[[Target], T] | None = None
    ) -> list[T]:
        results: dict[str, T] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            futures: dict[Future[T], Target] = {
                pool.submit(self._unless_stopping, work, skipped, t): t for t in self.targets
            }
            try:
                wait(futures)
            except KeyboardInterrupt:
                self.stopping.set()
                self.report("*", "interrupted: finishing the steps that are running")
                for future in futures:
                    future.cancel()
                wait(futures)
                if skipped is None:  # nothing was changed yet: stop here
                    raise
            for future, target in futures.items():
                if future.cancelled() and skipped is not None:
                    results[target.name] = skipped(target)
                else:
                    results[target.name] = future.result()
        return [results[t.name] for t in self.targets]

    def _unless_stopping(
        self, work: Callable[[Target], T], skipped: Callable[[Target], T] | None, target: Target
    ) -> T:
        if self.stopping.is_set() and skipped is not None:
            return skipped(target)
        return work(target)

    def _remote(self, target: Target) -> RemoteLike:
        if target.name not in self.remotes:
            self.remotes[target.name] = self.connect(target)
        return self.remotes[target.name]

    def _facts(self, target: Target) -> HostFacts:
        result = self._remote(target).run(PROBE)
        try:
            return parse_facts(result.stdout)
        except ProbeError as error:
            raise TsopsError(f"{target.name}: {error}") from error

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
                    if self.stopping.is_set():
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
            _check(remote, remote.run(scripts.install_tarball(install, facts, uploaded)), step)
        elif step.kind == "install":
            _check(remote, remote.run(scripts.install_package(install, facts)), step)
        elif step.kind == "service":
            _check(remote, remote.run(scripts.enable_service()), step)
        elif step.kind == "enroll":
            key = self.api.create_auth_key(desired.tags, f"tsops {desired.hostname}")
            try:
                _check(remote, remote.run(scripts.enroll(desired), stdin=key.key + "\n"), step)
            finally:
                self.api.delete_key(key.id)
        elif step.kind == "retag":
            assert plan.device is not None
            self.api.set_device_tags(plan.device.id, desired.tags)
        elif step.kind == "ssh":
            _check(remote, remote.run(scripts.enable_ssh()), step)
        elif step.kind == "hostname":
            _check(remote, remote.run(scripts.rename(desired.hostname)), step)

    def _verify(self, plan: HostPlan) -> None:
        """Probe again and plan again: a host is done only when nothing is left to change."""
        self.report(plan.target.name, "verifying")
        again = plan_host(plan.target, plan.desired, self._facts(plan.target),
                          self.api.list_devices())
        if again.problem is not None:
            raise TsopsError(f"{plan.target.name}: after applying: {again.problem}")
        if again.steps:
            left = "; ".join(step.summary for step in again.steps)
            raise TsopsError(f"{plan.target.name}: after applying, still to do: {left}")


def _check(remote: RemoteLike, result: RunResult, step: Step) -> None:
    if not result.ok:
        raise CommandFailed(getattr(remote, "name", "host"), step.summary, result)


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
