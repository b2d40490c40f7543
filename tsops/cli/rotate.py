"""`tsops rotate-storage`: the options handed to tsops.flows.rotation, its reports rendered.

The inventory edit is written to a validated private copy here (and shown as a diff); the flow
plans against it and moves it over the file once every recorder writes to the new destination.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops.cli import console
from tsops.cli.inventory_file import print_diff
from tsops.cli.jsonout import emit, reserved_stdout
from tsops.context import RunContext
from tsops.errors import ExitCode, TsopsError
from tsops.flows import rotation as flow
from tsops.inventory.file import candidate
from tsops.rotation.target import RotateOptions

if TYPE_CHECKING:
    from tsops.rotation.migrate import MigrationRecord, MigrationReport
    from tsops.rotation.switch import SwitchPlan

INVALID_EDIT = "the new storage block is invalid; nothing was changed"
SESSIONS_WARNING = {
    "refused": "only {active} recorder accepts sessions now and ssh rules enforce recording: "
               "while it restarts (a few seconds, measured and reported), new sessions are "
               "refused and sessions being recorded are ended",
    "unrecorded": "only one recorder accepts sessions now: sessions in the few seconds of its "
                  "restart are not recorded",
}


def _events(yes: bool, no_input: bool, json_mode: bool = False) -> console.ConsoleEvents:
    return console.ConsoleEvents(no_input=no_input, yes=yes, stdout_reserved=json_mode)


def run_rotate(path: Path, options: RotateOptions, *, dry_run: bool, yes: bool,
               no_input: bool, workers: int, output: str = "table") -> int:
    """Rotate the inventory's recorders to `options.to`; with `--migrate`, copy recordings."""
    json_mode = output == "json"
    document: dict[str, Any] = {"mode": "rotate", "inventory": str(path), "to": options.to,
                                "dry_run": dry_run, "state": "planned", "plan": None,
                                "switch": None, "migration": None}
    with reserved_stdout(json_mode):
        code = _rotate(path, options, dry_run=dry_run, yes=yes, no_input=no_input,
                       workers=workers, json_mode=json_mode, document=document)
    if json_mode:
        emit(document)
    return code


def _rotate(path: Path, options: RotateOptions, *, dry_run: bool, yes: bool, no_input: bool,
            workers: int, json_mode: bool, document: dict[str, Any]) -> int:
    flow.check_workers(workers)
    with RunContext.open(path, events=_events(yes, no_input, json_mode)) as context:
        request = flow.prepare(context, options)
        if isinstance(request, flow.AlreadyThere):
            return _already_there(context, request, dry_run=dry_run, workers=workers,
                                  document=document)
        with candidate(path, request.after, INVALID_EDIT) as (written, edited):
            print_diff(path, request.before, request.after, "after the rotation")
            planned = flow.plan(context, request, edited, written)
            document["plan"] = planned.as_dict()
            _print_plan(planned)
            if dry_run:
                console.line("dry run: nothing was changed")
                return ExitCode.OK
            report = flow.switch(context, planned)
            document["switch"] = report.as_dict()
            if report.stopped is not None:
                document["state"] = "stopped"
                console.error(report.stopped)
                return report.exit_code
            document["state"] = "switched"
            _print_switched(report)
            if not options.migrate:
                console.line(f"the recordings stay at {report.old_destination}; to copy them: "
                             f"tsops rotate-storage {path} --to {report.destination} --migrate")
                return ExitCode.OK
            assert report.record is not None
            migration = flow.copy_recordings(context, planned, report, workers)
            document["migration"] = migration.as_json()
            return _print_migration(migration, report.record)


def _print_plan(planned: flow.RotationPlan) -> None:
    _print_switch_plan(planned.old_destination, planned.switch)
    if planned.problem is not None:
        raise TsopsError(planned.problem)
    if planned.source is not None:
        listed = planned.listed
        console.line(f"migration: copy the recordings of {planned.source.description} (now "
                     f"{len(listed)}, {sum(i.size for i in listed)} bytes; listed again once "
                     f"the recorders are switched) to {planned.destination}, each verified "
                     "by SHA-256; the source is only read")
    if planned.sessions == "kept":
        console.line(f"{len(planned.switch.active)} recorders accept sessions; they are "
                     "switched one at a time, so another one always accepts sessions")
    else:
        console.warning(SESSIONS_WARNING[planned.sessions].format(
            active=len(planned.switch.active)))


def _print_switch_plan(old_destination: str, plan: SwitchPlan) -> None:
    console.line(f"rotate: {old_destination} -> {plan.new_storage.destination}")
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


def _print_switched(report: flow.SwitchReport) -> None:
    for done in report.switched:
        console.line(f"recorder {done.name}: writes to {report.destination}, verified "
                     f"({done.checks.get('destination', '')}); restart to healthy in "
                     f"{done.gap_seconds:.1f} s")
    if report.single:
        console.line(f"recording gap: at most {report.gap_seconds:.1f} s (the only recorder, "
                     "from its restart to healthy); sessions under enforce_recorder rules were "
                     "refused meanwhile")
    console.line(f"{report.inventory}: storage.destination is now {report.destination}")
    console.line(f"to prove sessions are recorded there: tsops verify {report.inventory}")


def _print_migration(report: MigrationReport, record: MigrationRecord) -> int:
    console.line(report.summary())
    for key, reason in report.failed[:20]:
        console.error(f"failed: {key}: {reason}")
    if report.failed:
        more = len(report.failed) - 20
        console.error((f"... and {more} more; " if more > 0 else "")
                      + f"rerun the same command to retry (verified ones are kept in "
                      f"{record.path}); the source was not changed")
    else:
        console.line(f"every recording of {report.source} is at {report.destination} with the "
                     "same SHA-256; the source was not changed")
    return report.exit_code


def _already_there(context: RunContext, there: flow.AlreadyThere, *, dry_run: bool,
                   workers: int, document: dict[str, Any]) -> int:
    """`--to` is the destination in use: nothing to switch; `--migrate` resumes a migration."""
    destination = there.current.destination
    document["state"] = "nothing-to-do"
    console.line(f"nothing to do: {there.inventory} already records to {destination}")
    if not there.migrate:
        return ExitCode.OK
    planned = flow.plan_resume(context, there)
    if planned.record is None or planned.source is None:
        console.line(f"no rotation to {destination} was recorded for {there.inventory}: "
                     "nothing to migrate")
        return ExitCode.OK
    console.line(f"migration: resume copying from {planned.source.description} to "
                 f"{destination} ({len(planned.record.verified)} verified before, kept in "
                 f"{planned.record.path})")
    document["state"] = "resume"
    if dry_run:
        console.line("dry run: nothing was changed")
        return ExitCode.OK
    migration = flow.resume(context, planned, workers)
    document["migration"] = migration.as_json()
    return _print_migration(migration, planned.record)


def run_delete_source(path: Path, old: str, *, dry_run: bool, yes: bool, no_input: bool,
                      workers: int, output: str = "table") -> int:
    """Delete the recordings of an earlier destination, each verified at the current one."""
    json_mode = output == "json"
    document: dict[str, Any] = {"mode": "delete-source", "inventory": str(path), "source": old,
                                "dry_run": dry_run, "plan": None, "result": None}
    with reserved_stdout(json_mode):
        code = _delete_source(path, old, dry_run=dry_run, yes=yes, no_input=no_input,
                              workers=workers, json_mode=json_mode, document=document)
    if json_mode:
        emit(document)
    return code


def _delete_source(path: Path, old: str, *, dry_run: bool, yes: bool, no_input: bool,
                   workers: int, json_mode: bool, document: dict[str, Any]) -> int:
    flow.check_old_destination(old)
    with RunContext.open(path, events=_events(yes, no_input, json_mode)) as context:
        planned = flow.plan_delete_source(context, old, workers)
        source, plan = planned.source.description, planned.plan
        document["plan"] = {"source": source, "current": planned.current.destination,
                            "to_delete": len(plan.verified),
                            "kept": [{"key": k, "reason": r} for k, r in plan.kept]}
        console.line(f"{source}: {len(plan.verified)} recording(s) to remove, each present at "
                     f"{planned.current.destination} with the same SHA-256; "
                     f"{len(plan.kept)} kept")
        for key, why in plan.kept[:20]:
            console.warning(f"kept: {key}: {why}")
        if not plan.verified:
            console.line("nothing to delete")
            return ExitCode.OK
        if dry_run:
            console.line("dry run: nothing was deleted")
            return ExitCode.OK
        report = flow.delete_source(context, planned)
    document["result"] = report.as_dict()
    console.line(f"deleted {report.deleted} recording(s) from {report.source}; {report.kept} "
                 f"kept, {len(report.failed)} failed")
    for key, why in report.failed[:20]:
        console.error(f"failed: {key}: {why}")
    return report.exit_code
