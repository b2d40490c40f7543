"""The recorder phase of bootstrap: storage first, then every recorder host, then the health gate.

Gather and plan touch nothing. Apply provisions the bucket; only when that succeeded are the
recorder hosts deployed (a recorder never points at a bucket that was not provisioned). The
health gate then checks each recorder: unit active, online in the tailnet with its tag, and the
destination writable. `healthy_tags` is what the policy step may route sessions to.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops import s3
from tsops.context import RunContext
from tsops.errors import TsopsError
from tsops.inventory.load import LoadedInventory, Target
from tsops.inventory.model import Storage
from tsops.recorders import host as recorder_host
from tsops.recorders.bucket import (
    BucketFacts,
    BucketPlan,
    S3Writes,
    apply_bucket,
    gather_bucket,
    plan_bucket,
    verify_bucket,
)
from tsops.recorders.gate import Gate
from tsops.recorders.host import RecorderHostPlan, sha256, spec_for
from tsops.recorders.render import (
    render_authkey_env,
    render_env,
    render_unit,
)
from tsops.remote import CommandFailed, RemoteLike, RunResult, Stage
from tsops.runner import INTERRUPTED, HostResult, Outcome
from tsops.tailscale_api import Device, TailscaleApi, find_named

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ONLINE_TIMEOUT = 60.0


@dataclass
class RecorderResult(HostResult):
    """How one recorder host ended, and whether it passed the health gate."""

    healthy: bool = False
    checks: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    verification: str = ""  # "verified", "failed" or "not verified" (tsops.recorders.gate)
    verified_how: str = ""  # how the destination was written, or why it could not be


@dataclass
class StorageResult:
    """How the bucket (or local destination) ended."""

    destination: str
    outcome: Outcome
    reason: str = ""
    done: list[str] = field(default_factory=list)
    s3_writes: list[str] = field(default_factory=list)


@dataclass
class RecorderPlans:
    """Everything the recorder phase would change."""

    storage: Storage
    bucket: BucketPlan | None
    bucket_facts: BucketFacts | None
    hosts: list[RecorderHostPlan]
    gate: str = ""  # how the health gate will prove each recorder writes its destination

    def as_dict(self) -> dict[str, Any]:
        """The recorder plan as JSON-ready data."""
        bucket = self.bucket
        return {
            "storage": {
                "destination": self.storage.destination,
                "problem": bucket.problem if bucket else None,
                "changes": [{"kind": c.kind, "summary": c.summary, "diff": c.detail}
                            for c in bucket.changes] if bucket else [],
                "notes": list(bucket.notes) if bucket else [],
            },
            "hosts": [{"name": p.target.name, "problem": p.problem,
                       "warnings": list(p.warnings), "health_gate": self.gate,
                       "changes": [{"kind": s.kind, "summary": s.summary} for s in p.steps]}
                      for p in self.hosts],
        }

    @property
    def converged(self) -> bool:
        """Whether nothing needs to change (problems count as changes to report)."""
        bucket_ok = self.bucket is None or (not self.bucket.changes and not self.bucket.problem)
        return bucket_ok and all(not p.steps and not p.problem for p in self.hosts)


@dataclass
class RecorderPhaseResult:
    """The outcome of the recorder phase."""

    tag: str
    storage: StorageResult
    hosts: list[RecorderResult]

    def as_dict(self) -> dict[str, Any]:
        """The recorder phase's results as JSON-ready data."""
        return {"storage": asdict(self.storage), "hosts": [asdict(h) for h in self.hosts],
                "healthy_tags": sorted(self.healthy_tags)}

    @property
    def healthy_tags(self) -> frozenset[str]:
        """The recorder tags with at least one healthy recorder: what the policy may enforce."""
        return frozenset({self.tag}) if any(h.healthy for h in self.hosts) else frozenset()

    @property
    def failed(self) -> bool:
        """Whether anything failed (exit 1). A recorder that is only *not verified* (the gate
        could not be run for it) is no failure by itself: the policy step withholds
        `enforceRecorder` for it, and that refusal is what fails the run."""
        return self.storage.outcome == "failed" or any(
            h.outcome in ("failed", "skipped")
            or (not h.healthy and h.verification != "not verified") for h in self.hosts)


@dataclass
class RecorderPhase:
    """Deploys and verifies the recorders of an inventory, with the run's connections.

    `planned` is the inventory to deploy when it is not the run's own (a rotation deploys the
    inventory as it will be, over the same connections).
    """

    context: RunContext
    planned: LoadedInventory | None = None
    writes: S3Writes = field(default_factory=S3Writes)
    online_timeout: float = ONLINE_TIMEOUT
    on_progress: Callable[[str, str], None] | None = None  # instead of the run's events

    @property
    def inventory(self) -> LoadedInventory:
        """The inventory whose recorders this phase deploys."""
        return self.planned or self.context.inventory

    @property
    def api(self) -> TailscaleApi:
        """The run's Tailscale API client."""
        return self.context.api

    @property
    def report(self) -> Callable[[str, str], None]:
        """Where per-host progress goes."""
        return self.on_progress or self.context.events.progress

    @property
    def storage(self) -> Storage:
        """The inventory's storage section."""
        assert self.inventory.model.storage is not None
        return self.inventory.model.storage

    @property
    def ui(self) -> bool:
        """Whether the recorders serve their UI (needs read access to the bucket)."""
        assert self.inventory.model.recorders is not None
        return self.inventory.model.recorders.ui

    @property
    def tag(self) -> str:
        """The recorders' tag."""
        assert self.inventory.model.recorders is not None
        return self.inventory.model.recorders.tag

    def remote(self, target: Target) -> RemoteLike:
        """The run's connection to a recorder host."""
        return self.context.remote(target)

    def s3_factory(self, storage: Storage, keys: tuple[str, str] | None) -> S3Client:
        """An S3 client from the run: the operator's credentials, or the recorder's keys."""
        return self.context.s3(storage, keys)

    def _recorder_keys(self) -> tuple[str, str] | None:
        credentials = self.storage.credentials
        if credentials is None or not self.storage.is_s3:
            return None
        return (self.context.secret(credentials.access_key_id, "recorder S3 access key id"),
                self.context.secret(credentials.secret_access_key,
                                    "recorder S3 secret access key"))

    def _binary(self) -> tuple[Path, str] | None:
        recorders = self.inventory.model.recorders
        assert recorders is not None
        if recorders.runtime != "binary" or recorders.binary is None:
            return None
        path = self.inventory.local_path(recorders.binary)
        try:
            return path, sha256(path.read_bytes())
        except OSError as error:
            raise TsopsError(f"recorders.binary: cannot read {path}: {error.strerror}") from error

    def plan(self, devices: list[Device] | None = None) -> RecorderPlans:
        """Read the bucket and every recorder host (one round trip each); plan (no change).

        `devices`: the device list already read (status passes [] when the API is down),
        else it is read now."""
        storage = self.storage
        bucket: BucketPlan | None = None
        facts: BucketFacts | None = None
        if storage.is_s3:
            self.report("storage", f"reading bucket {storage.bucket}")
            try:
                facts = gather_bucket(self.s3_factory(storage, None), storage.bucket)
                bucket = plan_bucket(storage, self.ui, facts)
            except s3.S3Error as error:
                bucket = BucketPlan(storage.bucket, problem=error.message, unread=(
                    not error.reached or isinstance(error, s3.S3CredentialsError)))
        return RecorderPlans(storage, bucket, facts,
                             self.plan_hosts(self.inventory.recorders, devices),
                             self.gate_how())

    def gate_how(self) -> str:
        """How the health gate proves this inventory's recorders write their destination."""
        if not self.storage.is_s3:
            return "canary file written on the recorder host as the recorder's user"
        how = self.gate().how
        if self._recorder_keys() is None:
            how += " (needs curl 7.75 or later on the recorder host)"
        return f"canary object written {how}"

    def plan_hosts(self, targets: tuple[Target, ...],
                   devices: list[Device] | None = None) -> list[RecorderHostPlan]:
        """Probe these recorder hosts (one round trip each, in parallel) and plan them."""
        keys = self._recorder_keys()
        env = render_env(*(keys or (None, None)))
        binary = self._binary()
        listed = self.api.list_devices() if devices is None else devices
        return self.context.runner.each(
            targets, lambda t: self._plan_host(t, env, binary, listed))

    def apply_host(self, plan: RecorderHostPlan, changed_storage: bool) -> RecorderResult:
        """Deploy one planned recorder host and run its health gate (canary rewritten)."""
        return self._apply_host(plan, self._binary(), changed_storage)

    def s3_write_check(self, target: Target) -> str:
        """Write a canary through the recorder's own credentials and network path and read it
        back (an S3 destination); TsopsError when the gate does not pass."""
        result = self.gate().check(target.name, self.remote(target))
        if not result.verified:
            raise TsopsError(f"{target.name}: health: {result.line}")
        return result.line

    def gate(self) -> Gate:
        """The health gate's canary check for this inventory's storage (tsops.recorders.gate)."""
        recorders = self.inventory.model.recorders
        assert recorders is not None
        return Gate(self.storage, recorders.runtime, recorders.container_engine,
                    self.s3_factory, self._recorder_keys(), on_write=self.writes.calls.append)

    def verify(self, targets: tuple[Target, ...] | None = None) -> list[RecorderResult]:
        """The health gate alone, changing nothing on the hosts: each recorder's unit active,
        online with its tag, and its destination written through its own credentials. What
        `policy apply` and `add-server` run before they write `enforceRecorder`."""
        chosen = self.inventory.recorders if targets is None else targets
        if not chosen:
            return []
        recorders = self.inventory.model.recorders
        assert recorders is not None
        spec_targets = {t.name: spec_for(self.inventory, t) for t in chosen}
        devices = self.api.list_devices()

        def one(target: Target) -> RecorderResult:
            result = RecorderResult(target.name, "unchanged")
            plan = RecorderHostPlan(target=target, spec=spec_targets[target.name])
            device = self._device(devices, target)
            if device is None or not device.connected_to_control:
                result.outcome = "failed"
                result.reason = (f"health: not online with {self.tag} (the API shows no "
                                 "connected device of that name)")
                return result
            try:
                remote = self.remote(target)
                self._health(plan, remote, result, rewrite_check=True)
            except TsopsError as error:
                if result.verification != "not verified":
                    result.outcome = "failed"
                result.reason = error.message.removeprefix(f"{target.name}: ")
            return result

        return self.context.runner.each(
            chosen, one, skipped=lambda t: RecorderResult(t.name, "skipped", INTERRUPTED))

    def _plan_host(self, target: Target, env: str, binary: tuple[Path, str] | None,
                   devices: list[Device]) -> RecorderHostPlan:
        spec = spec_for(self.inventory, target)
        unit = render_unit(spec)
        self.report(target.name, "gathering facts")
        try:
            facts = recorder_host.facts_probe(spec).run(self.remote(target))
        except TsopsError as error:
            return RecorderHostPlan(target=target, spec=spec,
                                    problem=error.message.removeprefix(f"{target.name}: "))
        registered = self._device(devices, target) is not None
        return recorder_host.plan_recorder_host(
            target, spec, facts, unit, env, binary[1] if binary else None, registered,
            self.storage.min_free_gb)

    def _device(self, devices: list[Device], target: Target) -> Device | None:
        """The recorder's device: an offline stale twin of the same name never hides the
        online one (tailscale_api.find_named)."""
        return find_named(devices, target.name, tag=self.tag)[0]

    def apply(self, plans: RecorderPlans) -> RecorderPhaseResult:
        """Provision storage, deploy every recorder host in parallel, then run the health gate."""
        storage_result = self._apply_storage(plans)
        binary = self._binary()
        if storage_result.outcome == "failed":
            hosts = [RecorderResult(p.target.name, "skipped",
                                    "storage was not provisioned: the recorder was not deployed")
                     for p in plans.hosts]
        else:
            changed_storage = storage_result.outcome == "changed"
            by_name = {p.target.name: p for p in plans.hosts}
            hosts = self.context.runner.each(
                [p.target for p in plans.hosts],
                lambda t: self._apply_host(by_name[t.name], binary, changed_storage),
                skipped=lambda t: RecorderResult(t.name, "skipped", INTERRUPTED))
        return RecorderPhaseResult(self.tag, storage_result, hosts)

    def _apply_storage(self, plans: RecorderPlans) -> StorageResult:
        storage = plans.storage
        result = StorageResult(storage.destination, "unchanged", s3_writes=self.writes.calls)
        bucket = plans.bucket
        if bucket is None:
            return result
        if bucket.problem is not None:
            result.outcome, result.reason = "failed", bucket.problem
            return result
        if not bucket.changes:
            return result
        self.report("storage", f"provisioning bucket {storage.bucket}")
        assert plans.bucket_facts is not None
        try:
            client = self.s3_factory(storage, None)
            apply_bucket(client, storage, self.ui, bucket, plans.bucket_facts, self.writes)
            verify_bucket(client, storage, self.ui)
        except s3.S3Error as error:
            result.outcome, result.reason = "failed", error.message
            return result
        result.outcome = "changed"
        result.done = [c.summary for c in bucket.changes]
        return result

    def _apply_host(self, plan: RecorderHostPlan, binary: tuple[Path, str] | None,
                    changed_storage: bool) -> RecorderResult:
        target = plan.target
        result = RecorderResult(target.name, "unchanged", warnings=list(plan.warnings))
        if plan.problem is not None:
            result.outcome, result.reason = "failed", plan.problem
            return result
        remote = self.remote(target)
        try:
            self._deploy(plan, remote, binary, result)
            self._health(plan, remote, result, rewrite_check=bool(plan.steps) or changed_storage)
        except TsopsError as error:
            if result.verification != "not verified":  # deployed, only not provable
                result.outcome = "failed"
            result.reason = error.message.removeprefix(f"{target.name}: ")
        result.round_trips = remote.round_trips
        self.report(target.name, result.outcome)
        return result

    def _deploy(self, plan: RecorderHostPlan, remote: RemoteLike,
                binary: tuple[Path, str] | None, result: RecorderResult) -> None:
        kinds = {s.kind for s in plan.steps}
        if not kinds:
            return
        name = plan.target.name
        self.report(name, "deploying")
        key_id = None
        try:
            # Files and secrets are staged by the SSH user in a private directory and installed
            # by one privileged script (tsops.remote.Stage): nothing through sudo's stdin.
            texts: dict[str, str] = {}
            if "env" in kinds:
                texts[recorder_host.STAGED_ENV] = plan.env
            if "unit" in kinds:
                texts[recorder_host.STAGED_UNIT] = plan.unit
            if "authkey" in kinds:
                key = self.api.create_auth_key((self.tag,), f"tsops recorder {name}")
                key_id = key.id
                texts[recorder_host.STAGED_AUTHKEY] = render_authkey_env(key.key)
            files: dict[str, Path] = {}
            if "binary" in kinds:
                assert binary is not None
                files[recorder_host.STAGED_BINARY] = binary[0]
            if texts or files:
                with Stage(remote, texts, files) as stage:
                    _check(remote, stage.run(recorder_host.install_script(plan.spec, kinds)),
                           "install the recorder's files")
            elif kinds & {"user", "statedir", "destination"}:
                _check(remote, remote.run(recorder_host.prepare_script(plan.spec, kinds)),
                       "prepare the recorder's files and user")
            restart = plan.facts is not None and plan.facts.active == "active"
            self.report(name, "restarting" if restart else "starting")
            _check(remote, remote.run(recorder_host.start_script(restart)), "start the recorder")
            result.done = [s.summary for s in plan.steps]
            result.outcome = "changed"
            if key_id is not None:
                self._wait_online(plan.target, remote)
                _check(remote, remote.run(recorder_host.remove_authkey_script()),
                       "remove the auth key file")
        finally:
            if key_id is not None:
                self.api.delete_key(key_id)

    def _wait_online(self, target: Target, remote: RemoteLike | None = None) -> Device:
        deadline = time.monotonic() + self.online_timeout
        while True:
            device = self._device(self.api.list_devices(), target)
            if device is not None and device.connected_to_control:
                return device
            if time.monotonic() >= deadline:
                raise TsopsError(f"{target.name}: the recorder did not come online with "
                                 f"{self.tag} within {self.online_timeout:.0f} s "
                                 f"(see journalctl -u tsrecorder on the host){_said(remote)}")
            time.sleep(1)

    def _health(self, plan: RecorderHostPlan, remote: RemoteLike, result: RecorderResult,
                rewrite_check: bool) -> None:
        target = plan.target
        self.report(target.name, "health check")
        active = plan.facts.active if plan.facts is not None and not plan.steps else None
        if active is None:
            active = recorder_host.unit_state().run(remote)
        result.checks["unit"] = active
        if active != "active":
            result.verification = "failed"
            raise TsopsError(f"{target.name}: health: tsrecorder.service is {active or 'unknown'}"
                             f" (see journalctl -u tsrecorder on the host){_said(remote)}")
        try:
            device = self._wait_online(target, remote)
        except TsopsError:
            result.verification = "failed"
            raise
        result.checks["tailnet"] = f"online as {device.name or device.hostname} with {self.tag}"
        if self.storage.is_s3:
            gate = self.gate().check(target.name, remote, write=rewrite_check)
            result.verification, result.verified_how = gate.verdict, gate.how
            result.checks["destination"] = gate.line
            if not gate.verified:
                raise TsopsError(f"{target.name}: health: {gate.line}")
        else:
            token = pysecrets.token_hex(8)
            run = remote.run(recorder_host.write_check_script(plan.spec, token))
            if not run.ok or run.stdout.strip() != token:
                raise TsopsError(f"{target.name}: health: {self.storage.destination} is not "
                                 f"writable by {plan.spec.owner}: "
                                 f"{(run.stderr or run.stdout).strip()[-200:]}")
            result.checks["destination"] = f"{self.storage.destination} writable"
            result.verification = "verified"
            result.verified_how = f"written on the recorder host as {plan.spec.owner}"
        result.healthy = True


def _said(remote: RemoteLike | None) -> str:
    """`; its last log line: ...` for a recorder that is not running or not online ('' when
    there is none, or no connection)."""
    if remote is None:
        return ""
    last = recorder_host.last_log_line().run(remote)
    return f"; its last log line: {last}" if last else ""


def _check(remote: RemoteLike, result: RunResult, what: str) -> None:
    if not result.ok:
        raise CommandFailed(remote.name, what, result)


def verified_recorder_tags(context: RunContext, tags: set[str]) -> set[str]:
    """Run the health gate now for the recorders behind `tags`; the tags it verified.

    What `policy apply` and `add-server` call before writing `enforceRecorder`, as bootstrap
    runs the same gate after deploying. Each recorder's outcome goes to the run's events:
    verified and how, or why not. A tag that this inventory's recorders do not carry cannot
    be checked, so it is not verified: a device being online proves nothing about recording.
    """
    model = context.inventory.model
    ours = (model.recorders.tag
            if model.recorders is not None and model.storage is not None else None)
    for tag in sorted(tags - {ours} if ours else tags):
        context.events.warning(
            f"{tag}: not verified: no recorder in this inventory's recorders section carries "
            "it, so tsops cannot prove it writes recordings (online is not healthy)")
    if ours is None or ours not in tags:
        return set()
    results = RecorderPhase(context).verify()
    for result in results:
        if result.healthy:
            context.events.info(f"recorder {result.name}: verified: "
                                f"{result.checks.get('destination', '')}")
        else:
            verdict = "not verified" if result.verification == "not verified" else "NOT healthy"
            context.events.warning(f"recorder {result.name}: {verdict}: {result.reason}")
    return {ours} if any(r.healthy for r in results) else set()
