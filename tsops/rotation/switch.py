"""Provision the new destination, prove it writable, then switch the recorders one at a time.

Two recorder phases share one set of host connections: `old` renders the inventory as it is,
`new` the inventory with the new storage block. Switching a recorder is the bootstrap engine's
own deploy and health gate under `new` (unit and environment rewritten, restart, active, online
with its tag, canary written as the recorder writes); putting it back is the same under `old`.
A failure puts every switched recorder back, so nothing ever points at the new destination
unless all of them do.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tsops.errors import TsopsError
from tsops.inventory.load import Target
from tsops.inventory.model import Storage
from tsops.recorders import host as recorder_host
from tsops.recorders.bucket import BucketFacts, BucketPlan, apply_bucket, verify_bucket
from tsops.recorders.host import RecorderHostPlan, spec_for
from tsops.recorders.phase import RecorderPhase

Say = Callable[[str], None]


class RotationStopped(TsopsError):
    """The rotation stopped; the message says where every recorder is left (exit 1)."""


@dataclass
class SwitchPlan:
    """What the switch would do: bucket changes and each recorder host's steps."""

    new_storage: Storage
    bucket: BucketPlan | None
    bucket_facts: BucketFacts | None
    hosts: list[RecorderHostPlan]

    @property
    def active(self) -> list[str]:
        """The recorders whose unit is running now (they accept sessions)."""
        return [p.target.name for p in self.hosts
                if p.facts is not None and p.facts.active == "active"]

    @property
    def problems(self) -> list[str]:
        """What prevents the switch, one line each."""
        found = [f"recorder {p.target.name}: {p.problem}" for p in self.hosts if p.problem]
        if self.bucket is not None and self.bucket.problem:
            found.insert(0, f"storage {self.new_storage.destination}: {self.bucket.problem}")
        return found


@dataclass
class Switched:
    """One recorder moved to the new destination, and how long it took to be healthy again."""

    name: str
    gap_seconds: float
    checks: dict[str, str] = field(default_factory=dict)


def plan_switch(new: RecorderPhase) -> SwitchPlan:
    """Read the new bucket and probe every recorder under the new storage (changes nothing):
    bootstrap's own recorder plan of the inventory as it will be."""
    planned = new.plan()
    return SwitchPlan(planned.storage, planned.bucket, planned.bucket_facts, planned.hosts)


def provision(new: RecorderPhase, plan: SwitchPlan, say: Say) -> None:
    """Create and lock down the new bucket as bootstrap does, then read it back."""
    storage = plan.new_storage
    if plan.bucket is None or not plan.bucket.changes:
        return
    assert plan.bucket_facts is not None
    say(f"storage {storage.destination}: provisioning "
        f"({'; '.join(c.summary for c in plan.bucket.changes)})")
    client = new.s3_factory(storage, None)
    apply_bucket(client, storage, new.ui, plan.bucket, plan.bucket_facts, new.writes)
    verify_bucket(client, storage, new.ui)


def write_check(new: RecorderPhase, targets: tuple[Target, ...], say: Say) -> None:
    """Prove the recorders can write the new destination before any of them is touched.

    S3: a canary put with the recorder's own keys and read back with the operator's. A local
    directory: created on each recorder host (owner the service user, mode 0700), then a file
    written, read back and removed as that user.
    """
    storage = new.storage
    for target in targets:
        if storage.is_s3:
            say(f"{target.name}: {new.s3_write_check(target)}")
            continue
        spec = spec_for(new.inventory, target)
        remote = new.remote(target)
        prepared = remote.run(recorder_host.prepare_script(spec, {"destination"}, None))
        token = pysecrets.token_hex(8)
        run = remote.run(recorder_host.write_check_script(spec, token)) if prepared.ok else None
        if run is None or not run.ok or run.stdout.strip() != token:
            failed = run if run is not None else prepared
            raise TsopsError(f"{target.name}: {storage.destination} is not writable by "
                             f"{spec.owner}: {(failed.stderr or failed.stdout).strip()[-200:]}")
        say(f"{target.name}: {storage.destination} created and writable by {spec.owner}")


def switch_all(old: RecorderPhase, new: RecorderPhase, say: Say) -> list[Switched]:
    """Switch every recorder in inventory order; on a failure put each switched one back."""
    started: dict[str, float] = {}

    def report(host: str, message: str) -> None:
        if message in ("restarting", "starting"):
            started[host] = time.monotonic()  # the unit stops here: the gap starts
        say(f"{host}: {message}")

    new.on_progress = old.on_progress = report
    switched: list[Switched] = []
    for target in new.inventory.recorders:
        try:
            switched.append(_switch_one(new, target, started))
        except TsopsError as error:
            failure = error.message
            say(f"{target.name}: switch failed: {failure}")
            back = _put_back(old, [target.name, *reversed([s.name for s in switched])], say)
            raise RotationStopped(_stopped_message(old.storage, failure, back)) from error
    return switched


def _switch_one(new: RecorderPhase, target: Target, started: dict[str, float]) -> Switched:
    (plan,) = new.plan_hosts((target,))
    if plan.problem is not None:
        raise TsopsError(f"{target.name}: {plan.problem}")
    result = new.apply_host(plan, changed_storage=True)
    if result.outcome == "failed" or not result.healthy:
        raise TsopsError(f"{target.name}: {result.reason or 'not healthy'}")
    gap = time.monotonic() - started.get(target.name, time.monotonic())
    return Switched(target.name, gap, result.checks)


def _put_back(old: RecorderPhase, names: list[str], say: Say) -> list[tuple[str, str | None]]:
    """Deploy the old storage on these recorders again, one at a time; (name, failure)."""
    outcome: list[tuple[str, str | None]] = []
    targets = {t.name: t for t in old.inventory.recorders}
    for name in names:
        say(f"{name}: putting it back on {old.storage.destination}")
        try:
            (plan,) = old.plan_hosts((targets[name],))
            if plan.problem is not None:
                raise TsopsError(plan.problem)
            result = old.apply_host(plan, changed_storage=True)
            failure = None if result.healthy else (result.reason or "not healthy")
        except TsopsError as error:
            failure = error.message
        outcome.append((name, failure))
    return outcome


def _stopped_message(old: Storage, failure: str,
                     back: list[tuple[str, str | None]]) -> str:
    restored = [name for name, failure in back if failure is None]
    broken = [f"{name} ({failure})" for name, failure in back if failure is not None]
    message = f"rotation stopped: {failure}. "
    if restored:
        message += (f"Back on {old.destination} and verified healthy: {', '.join(restored)}. ")
    if broken:
        message += (f"NOT verified back on {old.destination}: {'; '.join(broken)}: run "
                    "`tsops bootstrap INVENTORY` (the inventory still names the old "
                    "destination) once the cause is fixed. ")
    return message + "The inventory is unchanged."
