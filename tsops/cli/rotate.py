"""`tsops rotate-storage`: a new destination for the recordings, with no session left unrecorded.

validate -> gather -> plan (printed; `--dry-run` stops here) -> confirm -> provision the new
destination -> canary -> switch the recorders one at a time (each verified; a failure puts
every switched one back) -> the inventory's storage block edited -> `--migrate`: copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tsops.cli import console
from tsops.cli.inventory_file import print_diff
from tsops.context import RunContext
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.inventory.edit import set_storage
from tsops.inventory.file import candidate
from tsops.inventory.load import LoadedInventory, Target, load_inventory
from tsops.recorder.phase import RecorderPhase
from tsops.rotation.target import (
    RotateOptions,
    check_options,
    same_destination,
    settings_differ,
    storage_changes,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tsops.inventory.model import Storage
    from tsops.remote import RemoteLike
    from tsops.rotation.migrate import MigrationRecord, MigrationReport, Source
    from tsops.rotation.switch import SwitchPlan

    S3ClientFor = Callable[[Storage], S3Client]


def run_rotate(path: Path, options: RotateOptions, *, dry_run: bool, yes: bool,
               no_input: bool, workers: int) -> int:
    """Rotate the inventory's recorders to `options.to`; with `--migrate`, copy recordings."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    inventory = load_inventory(path)
    current = _current_storage(inventory)
    check_options(current, options)
    if same_destination(current, options):
        return _already_there(inventory, current, options, dry_run=dry_run, yes=yes,
                              no_input=no_input, workers=workers)
    before = path.read_text(encoding="utf-8")
    edit = set_storage(before, storage_changes(current, options))
    with candidate(path, edit.text, "the new storage block is invalid; nothing was changed"
                   ) as (written, edited):
        print_diff(path, before, edit.text, "after the rotation")
        with RunContext(inventory, events=console.ConsoleEvents(no_input=no_input)) as context:
            context.api  # noqa: B018 (credentials asked for before anything remote)
            old, new = RecorderPhase(context), RecorderPhase(context, planned=edited)
            return _rotate(path, before, written, old, new, options, dry_run=dry_run, yes=yes,
                           no_input=no_input, workers=workers)


def _current_storage(inventory: LoadedInventory) -> Storage:
    storage = inventory.model.storage
    if inventory.model.recorders is None or storage is None:
        raise UsageError(f"{inventory.path}: no `recorders` and `storage`: there is no "
                         "recording destination to rotate (see docs/recorder.md)")
    return storage


def _rotate(path: Path, before: str, candidate: Path, old: RecorderPhase, new: RecorderPhase,
            options: RotateOptions, *, dry_run: bool, yes: bool, no_input: bool,
            workers: int) -> int:
    from tsops.rotation.switch import RotationStopped, canary, plan_switch, provision, switch_all

    plan = plan_switch(new)
    _print_switch_plan(old, plan)
    if plan.problems:
        raise TsopsError("cannot rotate: " + "; ".join(plan.problems) + "; nothing was changed")
    source = (_source(old.storage, old.inventory, old.remote, old.context.s3)
              if options.migrate else None)
    if source is not None:
        listed = source.objects()
        console.line(f"migration: copy the recordings of {source.description} (now "
                     f"{len(listed)}, {sum(i.size for i in listed)} bytes; listed again once "
                     f"the recorders are switched) to {new.storage.destination}, each verified "
                     "by SHA-256; the source is only read")
    single = _warn_single(old, plan)
    if dry_run:
        console.line("dry run: nothing was changed")
        return ExitCode.OK
    _confirm(f"Rotate the recordings of {path} to {new.storage.destination}?", yes, no_input,
             single)

    def say(message: str) -> None:
        console.err.print(message, markup=False, highlight=False)

    try:
        provision(new, plan, say)
        canary(new, new.inventory.recorders, say)
    except TsopsError as error:
        raise RotationStopped(f"rotation stopped before any recorder was changed: "
                              f"{error.message}. The recorders still write to "
                              f"{old.storage.destination}; the inventory is unchanged") from error
    switched = switch_all(old, new, say)
    if path.read_text(encoding="utf-8") != before:
        raise TsopsError(f"{path} changed while the recorders were switched: every recorder "
                         f"now writes to {new.storage.destination}, but the file was not "
                         f"updated; set storage to the new destination by hand (the diff above)")
    candidate.replace(path)
    for done in switched:
        console.line(f"recorder {done.name}: writes to {new.storage.destination}, verified "
                     f"({done.checks.get('destination', '')}); restart to healthy in "
                     f"{done.gap_seconds:.1f} s")
    if single:
        gap = switched[0].gap_seconds
        console.line(f"recording gap: at most {gap:.1f} s (the only recorder, from its restart "
                     "to healthy); sessions under enforce_recorder rules were refused meanwhile")
    console.line(f"{path}: storage.destination is now {new.storage.destination}")
    console.line(f"to prove sessions are recorded there: tsops verify {path}")
    record = _record(path, old, new)
    if not options.migrate:
        console.line(f"the recordings stay at {old.storage.destination}; to copy them: "
                     f"tsops rotate-storage {path} --to {new.storage.destination} --migrate")
        return ExitCode.OK
    assert source is not None
    return _migrate(source, new.storage, record, workers)


def _print_switch_plan(old: RecorderPhase, plan: SwitchPlan) -> None:
    console.line(f"rotate: {old.storage.destination} -> {plan.new_storage.destination}")
    if plan.bucket is not None:
        console.changes(f"storage {plan.new_storage.destination}", plan.bucket.problem,
                        [(c.summary, c.detail.splitlines()) for c in plan.bucket.changes])
        for note in plan.bucket.notes:
            console.warning(f"storage: {note}")
    else:
        console.line(f"storage {plan.new_storage.destination}: created on each recorder host "
                     "(owner the service user, mode 0700)")
    console.line("canary: a write with the recorder's own credentials, read back, before "
                 "any recorder is touched")
    for number, host in enumerate(plan.hosts, 1):
        console.changes(f"recorder {host.target.name} ({number} of {len(plan.hosts)}, then "
                        "verified: unit active, online, canary)", host.problem,
                        [(s.summary, []) for s in host.steps])
        for warning in host.warnings:
            console.warning(f"{host.target.name}: {warning}")
    console.line("inventory: storage block rewritten once every recorder is switched")


def _warn_single(old: RecorderPhase, plan: SwitchPlan) -> bool:
    """Warn when sessions will be refused during the switch; whether that is the case."""
    enforced = any(rule.enforce_recorder for rule in old.inventory.model.ssh_rules)
    active = plan.active
    if len(active) >= 2:
        console.line(f"{len(active)} recorders accept sessions; they are switched one at a "
                     "time, so another one always accepts sessions")
        return False
    if enforced:
        console.warning(f"only {len(active)} recorder accepts sessions now and ssh rules enforce "
                        "recording: while it restarts (a few seconds, measured and reported), "
                        "new sessions are refused and sessions being recorded are ended")
        return True
    console.warning("only one recorder accepts sessions now: sessions in the few seconds of "
                    "its restart are not recorded")
    return False


def _confirm(question: str, yes: bool, no_input: bool, single: bool) -> None:
    if yes:
        return
    if no_input or not console.is_interactive():
        extra = " (sessions will be refused during the restart, see above)" if single else ""
        raise UsageError(f"the rotation needs confirmation{extra} and there is no terminal to "
                         "ask on: rerun with --yes to apply")
    import typer

    if not typer.confirm(question, default=False):
        raise TsopsError("nothing was changed")


def _source(storage: Storage, inventory: LoadedInventory,
            connect: Callable[[Target], RemoteLike], s3: S3ClientFor,
            hosts: tuple[str, ...] = ()) -> Source:
    """Where recordings are read from: the bucket, or each recorder host's directory."""
    from tsops.rotation.migrate import S3Source, SshSource

    if storage.is_s3:
        return S3Source(s3(storage), storage.bucket)
    targets = {t.name: t for t in inventory.recorders}
    names = hosts or tuple(targets)
    missing = [n for n in names if n not in targets]
    if missing:
        raise UsageError(f"the recordings at {storage.destination} are on "
                         f"{', '.join(missing)}, which is no recorder of {inventory.path} any "
                         "more; copy them by hand")
    return SshSource(storage.destination, {n: connect(targets[n]) for n in names})


def _record(path: Path, old: RecorderPhase, new: RecorderPhase) -> MigrationRecord:
    from tsops.rotation.migrate import MigrationRecord, state_dir

    hosts = () if old.storage.is_s3 else tuple(t.name for t in old.inventory.recorders)
    return MigrationRecord.create(state_dir(), path, old.storage, hosts,
                                  new.storage.destination)


def _migrate(source: Source, target: Storage, record: MigrationRecord, workers: int) -> int:
    from tsops.rotation.migrate import S3Destination, migrate
    from tsops.s3 import client_for

    destination = S3Destination(client_for(target), target.bucket)
    report = migrate(source, destination, record, workers=workers,
                     say=lambda m: console.err.print(m, markup=False, highlight=False))
    return _print_report(report, record)


def _print_report(report: MigrationReport, record: MigrationRecord) -> int:
    console.line(report.summary())
    for key, reason in report.failed[:20]:
        console.error(f"failed: {key}: {reason}")
    if report.failed:
        more = len(report.failed) - 20
        console.error((f"... and {more} more; " if more > 0 else "")
                      + f"rerun the same command to retry (verified ones are kept in "
                      f"{record.path}); the source was not changed")
        return ExitCode.FAILED
    console.line(f"every recording of {report.source} is at {report.destination} with the same "
                 "SHA-256; the source was not changed")
    return ExitCode.OK


def _already_there(inventory: LoadedInventory, current: Storage, options: RotateOptions, *,
                   dry_run: bool, yes: bool, no_input: bool, workers: int) -> int:
    """`--to` is the destination in use: nothing to switch; `--migrate` resumes a migration."""
    differing = settings_differ(current, options)
    if differing:
        raise UsageError(f"{differing[0]}: {options.to} is already the destination; a rotation "
                         "cannot change its settings: edit the storage block and run "
                         f"`tsops bootstrap {inventory.path}`")
    console.line(f"nothing to do: {inventory.path} already records to {current.destination}")
    if not options.migrate:
        return ExitCode.OK
    from tsops.rotation.migrate import MigrationRecord, state_dir

    record = MigrationRecord.find(state_dir(), inventory.path, current.destination)
    if record is None:
        console.line(f"no rotation to {current.destination} was recorded for {inventory.path}: "
                     "nothing to migrate")
        return ExitCode.OK
    with RunContext(inventory, events=console.ConsoleEvents(no_input=no_input)) as context:
        source = _source(record.source, inventory, context.remote, context.s3,
                         record.source_hosts)
        console.line(f"migration: resume copying from {source.description} to "
                     f"{current.destination} ({len(record.verified)} verified before, kept in "
                     f"{record.path})")
        if dry_run:
            console.line("dry run: nothing was changed")
            return ExitCode.OK
        _confirm(f"Copy the missing recordings to {current.destination}?", yes, no_input, False)
        return _migrate(source, current, record, workers)


def run_delete_source(path: Path, old: str, *, dry_run: bool, yes: bool, no_input: bool,
                      workers: int) -> int:
    """Delete the recordings of an earlier destination, each verified at the current one."""
    from tsops.rotation.delete import delete_verified, plan_delete, refuse_compliance
    from tsops.rotation.migrate import S3Destination, state_dir
    from tsops.rotation.target import check_destination
    from tsops.s3 import client_for

    check_destination(old, "--delete-source")
    inventory = load_inventory(path)
    current = _current_storage(inventory)
    if old.rstrip("/") == current.destination.rstrip("/"):
        raise UsageError(f"--delete-source {old}: that is the destination in use; nothing "
                         "was deleted")
    if not current.is_s3:
        raise UsageError(f"--delete-source: the current destination {current.destination} is "
                         "a local directory; recordings are only verified in a bucket")
    record = _record_from(path, old)
    if record is None:
        raise UsageError(f"--delete-source {old}: no rotation from {old} is recorded for "
                         f"{path} (in {state_dir()}); nothing is deleted without one")
    source_storage = record.source
    if source_storage.is_s3:
        refuse_compliance(client_for(source_storage), source_storage.bucket)
    with RunContext(inventory, events=console.ConsoleEvents(no_input=no_input)) as context:
        source = _source(source_storage, inventory, context.remote, context.s3,
                         record.source_hosts)
        destination = S3Destination(client_for(current), current.bucket)
        plan = plan_delete(source, destination, workers)
        console.line(f"{source.description}: {len(plan.verified)} recording(s) to remove, "
                     f"each present at {current.destination} with the same SHA-256; "
                     f"{len(plan.kept)} kept")
        for key, why in plan.kept[:20]:
            console.warning(f"kept: {key}: {why}")
        if not plan.verified:
            console.line("nothing to delete")
            return ExitCode.OK
        if dry_run:
            console.line("dry run: nothing was deleted")
            return ExitCode.OK
        _confirm(f"Delete {len(plan.verified)} recording(s) from {source.description}?", yes,
                 no_input, False)
        failed = delete_verified(
            source, plan, lambda: client_for(source_storage),
            source_storage.bucket if source_storage.is_s3 else "")
    console.line(f"deleted {len(plan.verified) - len(failed)} recording(s) from "
                 f"{source.description}; {len(plan.kept)} kept, {len(failed)} failed")
    for key, why in failed[:20]:
        console.error(f"failed: {key}: {why}")
    return ExitCode.FAILED if failed else ExitCode.OK


def _record_from(path: Path, old: str) -> MigrationRecord | None:
    """The newest rotation record of this inventory whose source is `old`."""
    from tsops.rotation.migrate import MigrationRecord, inventory_id, state_dir

    directory = state_dir()
    if not directory.is_dir():
        return None
    candidates = []
    for record_file in directory.glob("*.jsonl"):
        record = MigrationRecord.read(record_file)
        if record.source.destination.rstrip("/") == old.rstrip("/") and \
                record_file.name.startswith(inventory_id(path)):
            candidates.append((record_file.stat().st_mtime, record))
    return max(candidates, key=lambda c: c[0])[1] if candidates else None
