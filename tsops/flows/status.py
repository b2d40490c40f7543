"""`status`: servers, recorders, storage and the policy read at the same time; only reads.

The comparisons themselves are pure (tsops.checks); this flow gathers what they compare: one
probe per host through the same planners bootstrap uses, the bucket, the devices and the policy.

The device list is read once, first. When the Tailscale API does not answer, status still
probes every host it can reach and reports it; what needs the API (a server's tags in the
tailnet, a recorder online, the recorder tags' presence, a policy kept in the API) is marked
unknown, and the API's failure makes the whole status an error (exit 1).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from tsops.checks import (
    API_DOWN,
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
from tsops.errors import ExitCode, TsopsError
from tsops.flows.bootstrap import has_recorders, manages_policy
from tsops.policy import hujson
from tsops.policy.coverage import Coverage
from tsops.policy.plan import coverage_servers, desired_rules, policy_coverage
from tsops.recorders.bucket import worm_warnings
from tsops.recorders.phase import RecorderPhase, RecorderPlans
from tsops.recordings.tamper import Tampered
from tsops.runner import result
from tsops.servers.phase import ServerPhase
from tsops.tailscale_api import Device, find_named


def gather_status(context: RunContext) -> Status:
    """Every check of the chosen servers, the recorders, the storage and the policy."""
    phase = RecorderPhase(context) if has_recorders(context) else None
    problems: list[str] = []
    devices, api_problem = _devices(context)
    down = devices is None
    with ThreadPoolExecutor(max_workers=3) as pool:
        servers = pool.submit(ServerPhase(context).gather_and_plan, without_api=down)
        recorders: Future[RecorderPlans] | None = None
        if phase is not None:
            recorders = pool.submit(phase.plan, devices or [])
        policy = pool.submit(_policy, context, down) if manages_policy(context) else None
        tamper = pool.submit(_tamper, context) if phase is not None else None
        presence = _recorders_online(context, devices)
        plans = result(servers)
        hosts = [server_status(p, context.round_trips(p.target.name), down) for p in plans]
        storage = None
        if phase is not None and recorders is not None:
            try:
                recorder_plans = result(recorders)
            except TsopsError as error:
                problems.append(f"recorders: {error.message}")
            else:
                storage = storage_check(recorder_plans.bucket)
                unread = recorder_plans.bucket
                if unread is not None and unread.unread and storage is not None:
                    # Not checked, not wrong: every host is still reported, the run is an error.
                    storage = Check("storage", "unknown", storage.expected,
                                    f"not checked: {unread.problem}")
                    problems.append(f"storage: {unread.problem}")
                hosts += _recorders(context, phase, recorder_plans, storage, devices)
        policy_result, gaps = result(policy) if policy is not None else (None, None)
        recordings, tampered = result(tamper) if tamper is not None else (None, ())
    if recordings is not None and recordings.state == "unknown" and not problems:
        problems.append(f"recordings: {recordings.actual.removeprefix('not checked: ')}")
    checks = tuple(c for c in (presence, gaps and coverage_check(gaps)) if c)
    coverage = CoverageStatus(checks, gaps.gaps if gaps else ()) if checks else None
    warnings = tuple(worm_warnings(phase.storage)) if phase is not None else ()
    unavailable = (("tailscale-api", api_problem),) if api_problem is not None else ()
    streams = _log_streaming(context, problems)
    return Status(tuple(hosts), storage, policy_result, tuple(problems), coverage,
                  recordings, tuple(tampered), warnings, unavailable=unavailable,
                  log_streaming=streams)


def _devices(context: RunContext) -> tuple[list[Device] | None, str | None]:
    """The tailnet's devices, or None and the API's failure (one line)."""
    try:
        return context.devices(), None
    except TsopsError as error:
        return None, error.message


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
        if not error.code or error.exit_code == ExitCode.BAD_INPUT:  # S3 unreachable, or the
            # operator's credentials missing or refused: not checked, not wrong
            return Check("recordings", "unknown", "the bucket's versions listed",
                         f"not checked: {error.message}"), []
        return tamper_error(error.message), []
    return tamper_check(found), found


def _recorders(context: RunContext, phase: RecorderPhase, plans: RecorderPlans,
               storage: Check | None, devices: list[Device] | None) -> list[HostStatus]:
    found = []
    for plan in plans.hosts:
        device = find_named(devices or [], plan.target.name, tag=phase.tag)[0]
        found.append(recorder_status(plan, device, phase.tag, storage,
                                     plans.storage.min_free_gb,
                                     context.round_trips(plan.target.name),
                                     api_down=devices is None))
    return found


def _policy(context: RunContext, api_down: bool = False) -> tuple[PolicyStatus, Coverage | None]:
    """The managed rules' check, and the coverage of the policy as it is now."""
    from tsops.policy.apply import diff_policy

    inventory = context.inventory
    if api_down and inventory.model.policy.source == "api":
        return PolicyStatus(Check("policy", "unknown", "the policy file readable", API_DOWN)), None
    rules = tuple(rule.name for rule in inventory.model.ssh_rules)
    try:
        plan, diff = diff_policy(inventory, context.api)
    except TsopsError as error:
        return policy_error(error.message), None
    current = policy_coverage(hujson.parse(plan.before), desired_rules(inventory),
                              coverage_servers(inventory))
    return policy_status(plan, rules, diff), current


def _recorders_online(context: RunContext, devices: list[Device] | None) -> Check | None:
    """Whether every managed rule's recorder tag has an online device (None: no such tag)."""
    from tsops.policy.apply import managed_recorder_tags

    tags = managed_recorder_tags(context.inventory)
    if not tags:
        return None
    if devices is None:
        return Check("recorders-online", "unknown",
                     f"an online device with {', '.join(sorted(tags))}", API_DOWN)
    online = {tag for device in devices if device.connected_to_control
              for tag in device.tags if tag in tags}
    return recorders_online_check(tags, online)
