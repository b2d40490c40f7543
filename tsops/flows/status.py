"""`status`: servers, recorders, storage and the policy read at the same time; only reads.

The comparisons themselves are pure (tsops.checks); this flow gathers what they compare: one
probe per host through the same planners bootstrap uses, the bucket, the devices and the policy.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from tsops.checks import (
    Check,
    CoverageStatus,
    HostStatus,
    PolicyStatus,
    Status,
    StreamStatus,
    coverage_check,
    policy_error,
    policy_status,
    recorder_status,
    recorders_online_check,
    server_status,
    storage_check,
    tamper_check,
    tamper_error,
)
from tsops.context import RunContext
from tsops.errors import TsopsError
from tsops.flows.bootstrap import has_recorders, manages_policy
from tsops.policy import hujson
from tsops.policy.coverage import Coverage
from tsops.policy.plan import coverage_servers, desired_rules, policy_coverage
from tsops.recorders.bucket import worm_warnings
from tsops.recorders.phase import RecorderPhase, RecorderPlans
from tsops.recordings.tamper import Tampered
from tsops.servers.phase import ServerPhase


def gather_status(context: RunContext) -> Status:
    """Every check of the chosen servers, the recorders, the storage and the policy."""
    phase = RecorderPhase(context) if has_recorders(context) else None
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        servers = pool.submit(ServerPhase(context).gather_and_plan)
        recorders: Future[RecorderPlans] | None = None
        if phase is not None:
            recorders = pool.submit(phase.plan)
        policy = pool.submit(_policy, context) if manages_policy(context) else None
        tamper = pool.submit(_tamper, context) if phase is not None else None
        presence = _recorders_online(context)
        plans = servers.result()
        hosts = [server_status(p, context.round_trips(p.target.name)) for p in plans]
        storage = None
        if phase is not None and recorders is not None:
            try:
                recorder_plans = recorders.result()
            except TsopsError as error:
                problems.append(f"recorders: {error.message}")
            else:
                storage = storage_check(recorder_plans.bucket)
                hosts += _recorders(context, phase, recorder_plans, storage)
        policy_result, gaps = policy.result() if policy is not None else (None, None)
        recordings, tampered = tamper.result() if tamper is not None else (None, ())
    checks = tuple(c for c in (presence, gaps and coverage_check(gaps)) if c)
    coverage = CoverageStatus(checks, gaps.gaps if gaps else ()) if checks else None
    warnings = tuple(worm_warnings(phase.storage)) if phase is not None else ()
    streams = _log_streaming(context, problems)
    return Status(tuple(hosts), storage, policy_result, tuple(problems), coverage,
                  recordings, tuple(tampered), warnings, streams)


def _log_streaming(context: RunContext, problems: list[str]) -> tuple[StreamStatus, ...] | None:
    """Each managed stream against the inventory, and its publishing (None: not managed)."""
    from tsops.flows.audit import log_streaming_status, manages_log_streaming

    if not manages_log_streaming(context):
        return None
    streams, error = log_streaming_status(context)
    if error is not None:
        problems.append(error)
    return streams


def _tamper(context: RunContext) -> tuple[Check | None, list[Tampered]]:
    """Recordings in the bucket with more than one version (None: not an S3 destination, or
    no bucket yet, which the storage check reports)."""
    from tsops.recordings.store import S3Store, StoreError
    from tsops.recordings.tamper import tampered

    storage = context.inventory.model.storage
    if storage is None or not storage.is_s3:
        return None, []
    try:
        found = tampered(S3Store(context.s3(storage), storage.bucket))
    except StoreError as error:
        if error.code in ("NoSuchBucket", "404"):
            return None, []
        return tamper_error(error.message), []
    return tamper_check(found), found


def _recorders(context: RunContext, phase: RecorderPhase, plans: RecorderPlans,
               storage: Check | None) -> list[HostStatus]:
    devices = context.api.list_devices()
    found = []
    for plan in plans.hosts:
        device = next((d for d in devices
                       if d.hostname == plan.target.name and phase.tag in d.tags), None)
        found.append(recorder_status(plan, device, phase.tag, storage,
                                     plans.storage.min_free_gb,
                                     context.round_trips(plan.target.name)))
    return found


def _policy(context: RunContext) -> tuple[PolicyStatus, Coverage | None]:
    """The managed rules' check, and the coverage of the policy as it is now."""
    from tsops.policy.apply import diff_policy

    inventory = context.inventory
    rules = tuple(rule.name for rule in inventory.model.ssh_rules)
    try:
        plan, diff = diff_policy(inventory, context.api)
    except TsopsError as error:
        return policy_error(error.message), None
    current = policy_coverage(hujson.parse(plan.before), desired_rules(inventory),
                              coverage_servers(inventory))
    return policy_status(plan, rules, diff), current


def _recorders_online(context: RunContext) -> Check | None:
    """Whether every managed rule's recorder tag has an online device (None: no such tag)."""
    from tsops.policy.apply import managed_recorder_tags, online_recorder_tags

    tags = managed_recorder_tags(context.inventory)
    if not tags:
        return None
    return recorders_online_check(tags, online_recorder_tags(context.api, tags))
