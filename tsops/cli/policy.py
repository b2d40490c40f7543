"""`tsops policy diff|apply|rollback`: patch the tailnet policy file's ssh rules and tagOwners."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops.cli import console
from tsops.cli.jsonout import emit
from tsops.context import RunContext
from tsops.errors import ExitCode
from tsops.flows.policy import policy_api
from tsops.inventory.load import load_inventory

if TYPE_CHECKING:
    from tsops.policy.apply import PolicyResult
    from tsops.policy.store import Record


def _context(path: Path, no_input: bool, yes: bool = False, output: str = "table") -> RunContext:
    events = console.ConsoleEvents(no_input=no_input, yes=yes, stdout_reserved=output == "json")
    return RunContext.open(path, events=events)


def run_diff(path: Path, *, no_input: bool, detailed_exitcode: bool,
             output: str = "table") -> int:
    """Print the unified diff tsops would apply; exit 3 with --detailed-exitcode if any."""
    from tsops.policy.apply import diff_policy

    with _context(path, no_input, output=output) as context:
        plan, diff = diff_policy(context.inventory, policy_api(context))
    for warning in plan.warnings:
        console.warning(warning)
    for line in plan.coverage.lines():
        console.warning(line)
    code = ExitCode.DRIFT if detailed_exitcode and diff else ExitCode.OK
    if output == "json":
        emit({"changed": bool(diff), "diff": diff, "warnings": list(plan.warnings),
              "coverage_gaps": [gap.as_dict() for gap in plan.coverage.gaps]})
        return code
    if not diff:
        console.line("policy: no changes")
        return ExitCode.OK
    console.write(diff)
    return code


def run_apply(path: Path, *, no_input: bool, yes: bool, allow_unverified: bool,
              allow_gaps: bool = False, output: str = "table") -> None:
    """Apply the patch; enforcement needs a recorder that passes the health gate now (or the
    override), and a patch leaving coverage gaps is refused (exit 3) unless `allow_gaps`."""
    from tsops.policy.apply import apply_policy, enforced_recorder_tags
    from tsops.recorders.phase import verified_recorder_tags

    with _context(path, no_input, yes, output) as context:
        inventory, api = context.inventory, policy_api(context)
        recorder_tags = enforced_recorder_tags(inventory)
        # The health gate (tsops.recorders.gate), run only when enforcing rules are about to
        # be written: online is not enough, the recorder must write its destination through
        # its own credentials; needs the API to see it online. The override skips it (the
        # policy step then warns that nothing was verified).
        def healthy() -> set[str]:
            if allow_unverified or api is None:
                return set()
            return verified_recorder_tags(context, recorder_tags)

        result = apply_policy(inventory, api, context.events, healthy_recorder_tags=healthy,
                              allow_unverified=allow_unverified, allow_gaps=allow_gaps)
    if result.changed:
        from tsops import runlog

        runlog.note(f"policy file written (ETag {result.etag}): rules added "
                    f"{', '.join(result.added_rules) or 'none'}, changed "
                    f"{', '.join(result.changed_rules) or 'none'}, removed "
                    f"{', '.join(result.removed_rules) or 'none'}")
    if output == "json":
        emit(_applied(result))
        return
    if result.changed:
        parts = [f"{len(result.added_rules)} rule(s) added",
                 f"{len(result.changed_rules)} changed", f"{len(result.removed_rules)} removed",
                 f"{len(result.added_tags)} tag(s) declared"]
        console.line("policy: " + ", ".join(parts))


def _applied(result: PolicyResult) -> dict[str, Any]:
    """What `policy apply -o json` prints (docs/json.md)."""
    return {"changed": result.changed, "etag": result.etag, "diff": result.diff,
            "attempts": result.attempts, "added_rules": list(result.added_rules),
            "changed_rules": list(result.changed_rules),
            "removed_rules": list(result.removed_rules), "added_tags": list(result.added_tags),
            "warnings": list(result.warnings),
            "record": None if result.record is None else str(result.record),
            "coverage_gaps": [gap.as_dict() for gap in result.coverage.gaps]}


def _write(record: Record) -> dict[str, Any]:
    """One kept policy write, as `policy rollback -o json` prints it."""
    return {"number": record.number, "written_at": record.written_at, "reason": record.reason,
            "before_etag": record.before.etag, "after_etag": record.after.etag}


def run_rollback(path: Path, *, no_input: bool, yes: bool, number: int | None,
                 list_only: bool, output: str = "table") -> None:
    """Undo a write tsops made (the latest by default), or list the writes kept."""
    from tsops.policy.apply import history_for, rollback_policy

    inventory = load_inventory(path)
    if list_only:
        history = history_for(inventory)
        records = history.records()
        if output == "json":
            emit({"directory": str(history.directory), "writes": [_write(r) for r in records]})
            return
        if not records:
            console.line(f"no policy writes kept in {history.directory}")
        for record in records:
            console.line(f"{record.number:4d}  {record.written_at}  {record.reason}  "
                         f"{record.before.etag[:12]} -> {record.after.etag[:12]}")
        return
    with _context(path, no_input, yes, output) as context:
        written = rollback_policy(inventory, policy_api(context), context.events, number=number)
    if output == "json":
        emit({"rolled_back": written is not None,
              "write": None if written is None else _write(written)})
