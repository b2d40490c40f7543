"""`rotate-storage`: a new destination for the recordings, with no session left unrecorded.

prepare (options checked against the inventory; nothing remote) -> plan (the new destination
read, every recorder probed, the old recordings listed for `--migrate`; nothing changed) ->
switch: confirm, provision the new destination, canary, switch the recorders one at a time
(each verified; a failure puts every switched one back), the edited inventory moved over the
file, a migration record -> `--migrate`: copy, each recording verified by SHA-256.

`--to` naming the destination in use resumes a recorded migration (`plan_resume`, `resume`);
`--delete-source` deletes an earlier destination's recordings, each only once the current one
holds the same bytes (`plan_delete_source`, `delete_source`).

The caller (tsops.cli.rotate) writes the edited inventory to a validated private copy and
passes it in; long steps go to `context.events.step`, questions to `context.events.confirm`,
and everything else comes back in the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tsops.context import RunContext
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.files import FileChangedMeanwhile
from tsops.inventory.edit import set_storage
from tsops.inventory.file import commit
from tsops.inventory.load import LoadedInventory
from tsops.recorders.phase import RecorderPhase
from tsops.rotation.target import (
    RotateOptions,
    check_destination,
    check_options,
    same_destination,
    settings_differ,
    storage_changes,
)

if TYPE_CHECKING:
    from tsops.inventory.model import Storage
    from tsops.rotation.delete import DeletePlan
    from tsops.rotation.migrate import (
        MigrationRecord,
        MigrationReport,
        RecordingSource,
        SourceObject,
    )
    from tsops.rotation.switch import Switched, SwitchPlan

# How sessions fare while the recorders restart: another recorder takes them ("kept"), they are
# refused because ssh rules enforce recording ("refused"), or they go unrecorded ("unrecorded").
Sessions = Literal["kept", "refused", "unrecorded"]


def refusal(single: bool = False) -> str:
    """The sentence when a confirmation is needed and nobody can be asked (exit 2)."""
    extra = " (sessions will be refused during the restart, see above)" if single else ""
    return (f"the rotation needs confirmation{extra} and there is no terminal to ask on: "
            "rerun with --yes to apply")


def check_workers(workers: int) -> None:
    """Refuse a `--concurrency` below 1 (exit 2)."""
    if workers < 1:
        raise UsageError("--concurrency must be at least 1")


def check_old_destination(old: str) -> None:
    """Refuse a `--delete-source` that is neither s3://BUCKET nor an absolute directory."""
    check_destination(old, "--delete-source")


def current_storage(inventory: LoadedInventory) -> Storage:
    """The storage block in use; an inventory without recorders has nothing to rotate (exit 2)."""
    storage = inventory.model.storage
    if inventory.model.recorders is None or storage is None:
        raise UsageError(f"{inventory.path}: no `recorders` and `storage`: there is no "
                         "recording destination to rotate (see docs/recorder.md)")
    return storage


@dataclass(frozen=True)
class StorageEdit:
    """A rotation to a new destination: the storage in use and the inventory as it is and as
    it will be (text)."""

    current: Storage
    options: RotateOptions
    before: str
    after: str


@dataclass(frozen=True)
class AlreadyThere:
    """`--to` names the destination in use: nothing to switch; `--migrate` resumes."""

    inventory: Path
    current: Storage
    migrate: bool


def prepare(context: RunContext, options: RotateOptions) -> StorageEdit | AlreadyThere:
    """Check the options against the inventory (exit 2; nothing remote) and what they ask."""
    inventory = context.inventory
    current = current_storage(inventory)
    check_options(current, options)
    if same_destination(current, options):
        differing = settings_differ(current, options)
        if differing:
            raise UsageError(f"{differing[0]}: {options.to} is already the destination; a "
                             "rotation cannot change its settings: edit the storage block and "
                             f"run `tsops bootstrap {inventory.path}`")
        return AlreadyThere(inventory.path, current, options.migrate)
    before = inventory.path.read_text(encoding="utf-8")
    after = set_storage(before, storage_changes(current, options)).text
    return StorageEdit(current, options, before, after)


@dataclass
class RotationPlan:
    """What the rotation would do; nothing was changed to find it out."""

    edit: StorageEdit
    old: RecorderPhase
    new: RecorderPhase
    switch: SwitchPlan
    written: Path  # the edited inventory, validated, moved over the file after the switch
    enforced: bool = False  # ssh rules enforce recording
    source: RecordingSource | None = None  # --migrate: where the recordings are now
    listed: list[SourceObject] = field(default_factory=list)

    @property
    def old_destination(self) -> str:
        """Where the recorders write now."""
        return self.old.storage.destination

    @property
    def destination(self) -> str:
        """Where they will write."""
        return self.new.storage.destination

    @property
    def problem(self) -> str | None:
        """Why the rotation cannot start (nothing was changed), or None."""
        if not self.switch.problems:
            return None
        return "cannot rotate: " + "; ".join(self.switch.problems) + "; nothing was changed"

    @property
    def sessions(self) -> Sessions:
        """How sessions fare while the recorders restart one at a time."""
        if len(self.switch.active) >= 2:
            return "kept"
        return "refused" if self.enforced else "unrecorded"

    @property
    def single(self) -> bool:
        """Whether sessions are refused while the only active recorder restarts."""
        return self.sessions == "refused"

    @property
    def exit_code(self) -> ExitCode:
        """1 when the rotation cannot start."""
        return ExitCode.FAILED if self.problem is not None else ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (the `plan` of `rotate-storage -o json`)."""
        switch, bucket = self.switch, self.switch.bucket
        return {
            "from": self.old_destination, "to": self.destination, "problem": self.problem,
            "sessions": self.sessions,
            "bucket": None if bucket is None else {
                "name": bucket.bucket, "problem": bucket.problem,
                "changes": [c.summary for c in bucket.changes], "notes": list(bucket.notes)},
            "recorders": [{"name": h.target.name, "problem": h.problem,
                           "steps": [s.summary for s in h.steps], "warnings": list(h.warnings)}
                          for h in switch.hosts],
            "migration": None if self.source is None else {
                "source": self.source.description, "recordings": len(self.listed),
                "bytes": sum(i.size for i in self.listed)},
        }


def plan(context: RunContext, edit: StorageEdit, edited: LoadedInventory,
         written: Path) -> RotationPlan:
    """Resolve the credentials, read the new destination, probe every recorder under the
    edited inventory and, for `--migrate`, list the recordings to copy; change nothing."""
    from tsops.rotation.switch import plan_switch

    context.api  # noqa: B018 (credentials asked for before anything remote)
    old, new = RecorderPhase(context), RecorderPhase(context, planned=edited)
    planned = RotationPlan(edit, old, new, plan_switch(new), written, enforced=any(
        rule.enforce_recorder for rule in context.inventory.model.ssh_rules))
    if planned.problem is None and edit.options.migrate:
        planned.source = recording_source(context, old.storage)
        planned.listed = planned.source.objects()
    return planned


@dataclass
class SwitchReport:
    """How the switch ended: every recorder moved and the inventory updated, or why not."""

    inventory: Path
    old_destination: str
    destination: str
    single: bool
    switched: list[Switched] = field(default_factory=list)
    record: MigrationRecord | None = None
    stopped: str | None = None  # where every recorder is left, when the rotation stopped

    @property
    def gap_seconds(self) -> float:
        """The only recorder's restart to healthy (the recording gap when `single`)."""
        return self.switched[0].gap_seconds if self.switched else 0.0

    @property
    def exit_code(self) -> ExitCode:
        """1 when the rotation stopped."""
        return ExitCode.FAILED if self.stopped is not None else ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        """The switch as JSON-ready data (the `switch` of `rotate-storage -o json`)."""
        return {"from": self.old_destination, "to": self.destination,
                "switched": [{"name": d.name, "gap_seconds": round(d.gap_seconds, 1),
                              "checks": dict(d.checks)} for d in self.switched],
                "single": self.single, "gap_seconds": round(self.gap_seconds, 1),
                "stopped": self.stopped}


def switch(context: RunContext, planned: RotationPlan) -> SwitchReport:
    """Confirm, provision, canary, switch every recorder, then replace the inventory file.

    Nothing is changed before the confirmation; a failed provision or canary changes no
    recorder; a failed switch puts every switched recorder back; the inventory file is replaced
    only when every recorder writes to the new destination.
    """
    from tsops.rotation.migrate import MigrationRecord, state_dir
    from tsops.rotation.switch import RotationStopped, provision, switch_all, write_check

    if planned.problem is not None:
        raise TsopsError(planned.problem)
    path = context.inventory.path
    old, new = planned.old, planned.new
    report = SwitchReport(path, planned.old_destination, planned.destination, planned.single)
    context.events.confirm(f"Rotate the recordings of {path} to {planned.destination}?",
                           refusal(planned.single))
    say = context.events.step
    try:
        provision(new, planned.switch, say)
        write_check(new, new.inventory.recorders, say)
    except TsopsError as error:
        report.stopped = (f"rotation stopped before any recorder was changed: {error.message}. "
                          f"The recorders still write to {planned.old_destination}; the "
                          "inventory is unchanged")
        return report
    try:
        report.switched = switch_all(old, new, say)
    except RotationStopped as error:
        report.stopped = error.message
        return report
    try:
        commit(path, planned.edit.before, planned.edit.after)
    except FileChangedMeanwhile:
        report.stopped = (f"{path} changed while the recorders were switched: every recorder "
                          f"now writes to {planned.destination}, but the file was not updated; "
                          "set storage to the new destination by hand (the diff above)")
        return report
    hosts = () if old.storage.is_s3 else tuple(t.name for t in old.inventory.recorders)
    report.record = MigrationRecord.create(state_dir(), path, old.storage, hosts,
                                           planned.destination)
    return report


def copy_recordings(context: RunContext, planned: RotationPlan, switched: SwitchReport,
                    workers: int) -> MigrationReport:
    """`--migrate` after a switch: copy the old destination's recordings, each verified."""
    assert planned.source is not None and switched.record is not None
    return _migrate(context, planned.source, planned.new.storage, switched.record, workers)


@dataclass
class ResumePlan:
    """A migration to the destination in use, recorded by an earlier rotation (or none)."""

    current: Storage
    record: MigrationRecord | None = None
    source: RecordingSource | None = None


def plan_resume(context: RunContext, there: AlreadyThere) -> ResumePlan:
    """The recorded migration to the destination in use, and where it copies from."""
    from tsops.rotation.migrate import MigrationRecord, state_dir

    current = there.current
    record = MigrationRecord.find(state_dir(), there.inventory, current.destination)
    if record is None:
        return ResumePlan(current)
    return ResumePlan(current, record,
                      recording_source(context, record.source, record.source_hosts))


def resume(context: RunContext, planned: ResumePlan, workers: int) -> MigrationReport:
    """Confirm, then copy what the recorded migration has not verified yet."""
    assert planned.record is not None and planned.source is not None
    context.events.confirm(f"Copy the missing recordings to {planned.current.destination}?",
                           refusal())
    return _migrate(context, planned.source, planned.current, planned.record, workers)


def _migrate(context: RunContext, source: RecordingSource, storage: Storage,
             record: MigrationRecord, workers: int) -> MigrationReport:
    from tsops.rotation.migrate import BucketTarget, S3Source, migrate

    client = context.s3(storage)
    # Same endpoint (and region): S3 copies the object itself, with the operator's credentials,
    # which read the source already. The source is still read once, to be hashed for the check.
    same = (isinstance(source, S3Source)
            and source.client.meta.endpoint_url == client.meta.endpoint_url
            and source.client.meta.region_name == client.meta.region_name)
    target = BucketTarget(client, storage.bucket,
                          copy_from=source.bucket if same and isinstance(source, S3Source)
                          else None)
    if target.copy_from is not None:
        context.events.step(f"copying server-side from s3://{target.copy_from} (same endpoint)")
    return migrate(source, target, record, workers=workers, say=context.events.step)


def recording_source(context: RunContext, storage: Storage,
                     hosts: tuple[str, ...] = ()) -> RecordingSource:
    """Where recordings are read from: the bucket, or these recorder hosts' directory (all of
    the inventory's recorders when none are named)."""
    from tsops.rotation.migrate import S3Source, SshSource

    if storage.is_s3:
        return S3Source(context.s3(storage), storage.bucket)
    inventory = context.inventory
    targets = {t.name: t for t in inventory.recorders}
    names = hosts or tuple(targets)
    missing = [n for n in names if n not in targets]
    if missing:
        raise UsageError(f"the recordings at {storage.destination} are on "
                         f"{', '.join(missing)}, which is no recorder of {inventory.path} any "
                         "more; copy them by hand")
    return SshSource(storage.destination, {n: context.remote(targets[n]) for n in names})


@dataclass
class DeleteSourcePlan:
    """The recordings of an earlier destination: those verified at the current one, the rest
    kept."""

    source: RecordingSource
    source_storage: Storage
    current: Storage
    plan: DeletePlan


def plan_delete_source(context: RunContext, old: str, workers: int) -> DeleteSourcePlan:
    """Check that `old` is an earlier destination of a recorded rotation, then read every
    recording there and its copy at the current bucket (read only)."""
    from tsops.rotation.delete import plan_delete, refuse_compliance
    from tsops.rotation.migrate import BucketTarget, MigrationRecord, state_dir

    path = context.inventory.path
    current = current_storage(context.inventory)
    if old.rstrip("/") == current.destination.rstrip("/"):
        raise UsageError(f"--delete-source {old}: that is the destination in use; nothing "
                         "was deleted")
    if not current.is_s3:
        raise UsageError(f"--delete-source: the current destination {current.destination} is "
                         "a local directory; recordings are only verified in a bucket")
    record = MigrationRecord.find_from(state_dir(), path, old)
    if record is None:
        raise UsageError(f"--delete-source {old}: no rotation from {old} is recorded for "
                         f"{path} (in {state_dir()}); nothing is deleted without one")
    source_storage = record.source
    if source_storage.is_s3:
        refuse_compliance(context.s3(source_storage), source_storage.bucket)
    source = recording_source(context, source_storage, record.source_hosts)
    target = BucketTarget(context.s3(current), current.bucket)
    return DeleteSourcePlan(source, source_storage, current,
                            plan_delete(source, target, workers))


@dataclass
class DeleteSourceReport:
    """What was deleted at the earlier destination, and what failed."""

    source: str
    deleted: int
    kept: int
    failed: list[tuple[str, str]]

    @property
    def exit_code(self) -> ExitCode:
        """1 when any delete failed."""
        return ExitCode.FAILED if self.failed else ExitCode.OK

    def as_dict(self) -> dict[str, Any]:
        """The deletion as JSON-ready data (the `result` of `rotate-storage --delete-source`)."""
        return {"source": self.source, "deleted": self.deleted, "kept": self.kept,
                "failed": [{"key": k, "reason": r} for k, r in self.failed]}


def delete_source(context: RunContext, planned: DeleteSourcePlan) -> DeleteSourceReport:
    """Confirm, then delete the verified recordings at the earlier destination."""
    from tsops.rotation.delete import delete_verified

    verified = planned.plan.verified
    context.events.confirm(f"Delete {len(verified)} recording(s) from "
                           f"{planned.source.description}?", refusal())
    storage = planned.source_storage
    failed = delete_verified(planned.source, planned.plan, lambda: context.s3(storage),
                             storage.bucket if storage.is_s3 else "")
    return DeleteSourceReport(planned.source.description, len(verified) - len(failed),
                              len(planned.plan.kept), failed)
