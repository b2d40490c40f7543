"""Gather, plan, show, confirm and write the policy patch, with optimistic concurrency.

The functions here are what `tsops policy` and `tsops bootstrap` call: `diff_policy`,
`apply_policy`, `rollback_policy`, `enforced_recorder_tags` (the tags a run must verify) and
`online_recorder_tags` (the standalone health check).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.events import Events
from tsops.policy.coverage import Coverage
from tsops.policy.plan import (
    PolicyPlan,
    coverage_servers,
    desired_rules,
    desired_tags,
    plan_policy,
)
from tsops.policy.store import (
    ApiSource,
    FileSource,
    History,
    PolicyChangedMeanwhile,
    PolicySource,
    Record,
    Snapshot,
    default_state_dir,
)

if TYPE_CHECKING:
    from tsops.inventory.load import LoadedInventory
    from tsops.tailscale_api import TailscaleApi

ATTEMPTS = 4


class PolicyRejected(TsopsError):
    """The validate endpoint refused the candidate policy; nothing was written."""


class LockoutRefused(TsopsError):
    """Writing enforceRecorder: true without a verified recorder could lock everyone out."""


class CoverageRefused(TsopsError):
    """The patched policy would let sessions to the servers land on a rule that does not
    record them (as asked); nothing was written."""

    exit_code = ExitCode.DRIFT

    def __init__(self, label: str, coverage: Coverage) -> None:
        lines = "\n".join(coverage.lines())
        super().__init__(
            f"refusing to write {label}: {len(coverage.gaps)} coverage gap(s), sessions that "
            "would not be recorded as the inventory asks; nothing was written. Give those "
            "rules a recorder, set `policy.managed_rules: first` in the inventory, or pass "
            f"--allow-coverage-gaps to write anyway:\n{lines}")
        self.coverage = coverage


@dataclass(frozen=True)
class PolicyResult:
    """What a policy apply did; `changed` is False when the file already matched."""

    changed: bool
    etag: str
    diff: str
    attempts: int
    added_rules: tuple[str, ...]
    changed_rules: tuple[str, ...]
    removed_rules: tuple[str, ...]
    added_tags: tuple[str, ...]
    warnings: tuple[str, ...]
    record: Path | None
    coverage: Coverage


def open_source(inventory: LoadedInventory, api: TailscaleApi | None) -> PolicySource:
    """The inventory's policy source: the API (needs `api`) or the operator's file."""
    policy = inventory.model.policy
    if policy.source == "file":
        assert policy.file is not None
        return FileSource(inventory.local_path(policy.file), api)
    if api is None:
        raise UsageError("policy source `api` needs Tailscale API credentials")
    return ApiSource(api)


def unified_diff(before: str, after: str, label: str) -> str:
    """A unified diff of two texts (empty when equal)."""
    return "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"{label} (current)", tofile=f"{label} (patched)",
    ))


def plan_for(inventory: LoadedInventory, text: str, label: str) -> PolicyPlan:
    """The patch of `text` for this inventory; a text that is not HuJSON names line:column."""
    from tsops.policy.hujson import HuJSONError

    policy = inventory.model.policy
    try:
        return plan_policy(text, desired_rules(inventory), desired_tags(inventory),
                           policy.tag_owners, coverage_servers(inventory), policy.managed_rules)
    except HuJSONError as error:
        raise HuJSONError(f"invalid policy: {error.reason}", error.line, error.column,
                          source=label) from error


def diff_policy(inventory: LoadedInventory, api: TailscaleApi | None) -> tuple[PolicyPlan, str]:
    """Read the policy and return the plan and its unified diff; nothing is written."""
    source = open_source(inventory, api)
    snapshot = source.read()
    plan = plan_for(inventory, snapshot.text, source.label)
    return plan, unified_diff(plan.before, plan.after, source.label)


def enforced_recorder_tags(inventory: LoadedInventory) -> set[str]:
    """The recorder tags the managed rules enforce: those a run must verify healthy."""
    return {rule.recorder for rule in desired_rules(inventory) if rule.enforce and rule.recorder}


def managed_recorder_tags(inventory: LoadedInventory) -> set[str]:
    """The recorder tags of every managed rule: each needs an online device, or Tailscale SSH
    runs the rule's sessions unrecorded (reference section 6)."""
    return {rule.recorder for rule in desired_rules(inventory) if rule.recorder}


def online_recorder_tags(api: TailscaleApi, tags: Iterable[str]) -> set[str]:
    """The tags among `tags` that some device connected to the control plane carries now."""
    wanted = set(tags)
    return {tag for device in api.list_devices() if device.connected_to_control
            for tag in device.tags if tag in wanted}


def check_lockout(plan: PolicyPlan, healthy_recorder_tags: set[str],
                  allow_unverified: bool, events: Events) -> None:
    """Refuse enforcing rules whose recorder was not verified healthy, unless overridden."""
    unverified = [(rule, tag) for rule, tag in plan.enforcing if tag not in healthy_recorder_tags]
    if not unverified:
        return
    listed = "; ".join(f"rule {rule!r} records to {tag}" for rule, tag in unverified)
    if allow_unverified:
        events.warning(f"writing enforceRecorder: true although no healthy recorder was verified "
                        f"({listed}): if no recorder answers, every SSH session these rules "
                        "match is refused")
        return
    raise LockoutRefused(
        f"refusing to write enforceRecorder: true: no recorder was verified healthy ({listed}); "
        "SSH sessions would be refused until one answers. Start the recorder and rerun, or "
        "pass --allow-unverified-recorder to write it anyway")


def _show_outside_edits(history: History, snapshot: Snapshot, label: str,
                        events: Events) -> None:
    """When the policy changed since tsops last wrote it, show what changed outside tsops."""
    last = history.last()
    if last is None or last.after.etag == snapshot.etag:
        return
    events.info(f"{label} changed outside tsops since its last write "
                 f"(version {last.after.etag[:12]}, now {snapshot.etag[:12]}):")
    events.diff("".join(difflib.unified_diff(
        last.after.text.splitlines(keepends=True), snapshot.text.splitlines(keepends=True),
        fromfile=f"{label} (as tsops wrote it)", tofile=f"{label} (now)")))


def _show_plan(plan: PolicyPlan, diff: str, events: Events, show_gaps: bool) -> None:
    """Warnings, the coverage gaps (unless a refusal will list them) and the diff."""
    for warning in plan.warnings:
        events.warning(warning)
    if show_gaps:
        for line in plan.coverage.lines():
            events.warning(line)
    events.diff(diff)


def check_coverage(plan: PolicyPlan, label: str, allow_gaps: bool) -> None:
    """Refuse (exit 3) a patched policy with coverage gaps, unless allowed."""
    if plan.coverage.gaps and not allow_gaps:
        raise CoverageRefused(label, plan.coverage)


REFUSED = ("the policy would change and there is no terminal to confirm it: rerun with --yes "
           "to apply")


def _write(source: PolicySource, snapshot: Snapshot, text: str, events: Events) -> Snapshot:
    """Validate then write; a refusal by the validator leaves everything as it was."""
    validation = source.validate(text)
    if validation.problem:
        raise PolicyRejected(f"the Tailscale API rejected the patched policy, nothing was "
                             f"written: {validation.problem}")
    for warning in validation.warnings:
        events.warning(f"{source.label}: the Tailscale API warns (writing anyway): {warning}")
    if not source.can_validate:
        events.warning(f"{source.label}: not validated (no API credentials at hand)")
    return source.write(text, snapshot.etag)


def apply_policy(
    inventory: LoadedInventory,
    api: TailscaleApi | None,
    events: Events,
    *,
    healthy_recorder_tags: set[str] | Callable[[], set[str]],
    allow_unverified: bool,
    allow_gaps: bool = False,
    state_dir: Path | None = None,
) -> PolicyResult:
    """Patch the policy towards the inventory: show, confirm, validate, write with If-Match.

    On a concurrent change (412, or a file changed under us) the policy is fetched again and
    the patch re-applied and re-validated, up to ATTEMPTS times. Every write is kept in the
    state directory. A change leaving coverage gaps is refused (CoverageRefused, exit 3)
    before anything is asked or written, unless `allow_gaps`; gaps in a policy that needs no
    change are only shown. `healthy_recorder_tags` may be the health gate itself, run only when
    a change with enforcing rules is about to be written.
    """
    source = open_source(inventory, api)
    history = History(state_dir or default_state_dir(inventory))
    for attempt in range(1, ATTEMPTS + 1):
        snapshot = source.read()
        if attempt == 1:
            _show_outside_edits(history, snapshot, source.label, events)
        plan = plan_for(inventory, snapshot.text, source.label)
        diff = unified_diff(plan.before, plan.after, source.label)
        if attempt == 1:
            _show_plan(plan, diff, events, allow_gaps or not plan.changed)
        if not plan.changed:
            if attempt == 1:
                events.info(f"{source.label}: already up to date")
            return _result(plan, snapshot.etag, diff, attempt, None)
        check_coverage(plan, source.label, allow_gaps)
        if not isinstance(healthy_recorder_tags, set):
            healthy_recorder_tags = healthy_recorder_tags() if plan.enforcing else set()
        check_lockout(plan, healthy_recorder_tags, allow_unverified, events)
        if attempt == 1:
            events.confirm(f"Write these changes to {source.label}?", REFUSED)
        try:
            written = _write(source, snapshot, plan.after, events)
        except PolicyChangedMeanwhile as error:
            events.warning(f"{error.message}; reading it again and re-applying "
                            f"(attempt {attempt + 1} of {ATTEMPTS})")
            continue
        record = history.add(snapshot, written, "apply")
        events.info(f"{source.label}: written (version {written.etag[:12]}; kept as "
                     f"write {record.number} in {history.directory})")
        return _result(plan, written.etag, diff, attempt,
                       history.directory / f"{record.number:04d}.json")
    raise TsopsError(f"{source.label} kept changing while tsops wrote it; gave up after "
                     f"{ATTEMPTS} attempts, nothing was written")


def _result(plan: PolicyPlan, etag: str, diff: str, attempts: int,
            record: Path | None) -> PolicyResult:
    return PolicyResult(
        changed=record is not None, etag=etag, diff=diff, attempts=attempts,
        added_rules=plan.added_rules, changed_rules=plan.changed_rules,
        removed_rules=plan.removed_rules, added_tags=plan.added_tags,
        warnings=plan.warnings, record=record, coverage=plan.coverage,
    )


def history_for(inventory: LoadedInventory, state_dir: Path | None = None) -> History:
    """The record of policy writes for this inventory's tailnet (or file)."""
    return History(state_dir or default_state_dir(inventory))


def rollback_policy(
    inventory: LoadedInventory,
    api: TailscaleApi | None,
    events: Events,
    *,
    number: int | None,
    state_dir: Path | None = None,
) -> Record | None:
    """Put back the policy as it was before tsops's write `number` (default: the latest).

    Edits made since are shown and lost only after confirmation; the rollback is itself
    validated, written with If-Match and kept as a write. Returns the new record, or None when
    the policy already is that text.
    """
    source = open_source(inventory, api)
    history = History(state_dir or default_state_dir(inventory))
    target = history.get(number) if number is not None else history.last()
    if target is None:
        raise TsopsError(f"tsops has written no policy version to undo (nothing in "
                         f"{history.directory})")
    snapshot = source.read()
    if snapshot.text == target.before.text:
        events.info(f"{source.label}: already as it was before write {target.number}")
        return None
    _show_outside_edits(history, snapshot, source.label, events)
    events.diff(unified_diff(snapshot.text, target.before.text, source.label))
    events.confirm(f"Put back {source.label} as it was before write {target.number} "
                   f"({target.written_at})?", REFUSED)
    try:
        written = _write(source, snapshot, target.before.text, events)
    except PolicyChangedMeanwhile as error:
        raise TsopsError(f"{error.message}; nothing was rolled back, rerun to see the new "
                         "changes") from error
    record = history.add(snapshot, written, f"rollback of write {target.number}")
    events.info(f"{source.label}: rolled back (kept as write {record.number})")
    return record
