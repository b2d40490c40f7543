"""`plan` and `bootstrap`: recorders (storage first, then their health gate), servers, policy.

`plan()` gathers everything and changes nothing; the caller shows it and asks; `apply()` makes
the changes in the one safe order: the storage and the recorders, each recorder through the
health gate, then the servers, and last the policy file, enforcing recording only through
recorder tags verified healthy in this run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tsops.context import RunContext
from tsops.errors import ExitCode, TsopsError
from tsops.policy.coverage import Gap
from tsops.recorders.bucket import worm_warnings
from tsops.recorders.phase import RecorderPhase, RecorderPhaseResult, RecorderPlans
from tsops.runner import HostResult
from tsops.servers.phase import ServerPhase
from tsops.servers.plan import HostPlan, StepKind

if TYPE_CHECKING:
    from tsops.flows.audit import LogStreamingPlan, LogStreamingReport


@dataclass(frozen=True)
class PolicyPreview:
    """Whether the policy file would change, the unified diff, and the patched file's
    coverage gaps (tsops.policy.coverage)."""

    changed: bool
    diff: str
    gaps: tuple[Gap, ...] = ()


@dataclass(frozen=True)
class PolicyOutcome:
    """What the policy step did: changed or not, the diff and version, or why it failed
    (`refused`: not written because of coverage gaps, listed in `gaps`)."""

    changed: bool
    diff: str = ""
    etag: str = ""
    error: str | None = None
    gaps: tuple[Gap, ...] = ()
    refused: bool = False


@dataclass
class BootstrapPlan:
    """Everything bootstrap would change: recorders and storage, servers, the policy file."""

    hosts: list[HostPlan]
    recorders: RecorderPlans | None = None
    policy: PolicyPreview | None = None
    log_streaming: LogStreamingPlan | None = None  # None: the inventory has no log_streaming

    @property
    def problem(self) -> bool:
        """Whether a host, a recorder, the storage or log streaming cannot be planned."""
        recorders = self.recorders
        recorder_problem = recorders is not None and (
            bool(recorders.bucket and recorders.bucket.problem)
            or any(p.problem for p in recorders.hosts))
        streaming_problem = self.log_streaming is not None and self.log_streaming.error is not None
        return recorder_problem or streaming_problem or any(p.problem for p in self.hosts)

    @property
    def nothing_plannable(self) -> bool:
        """Whether not one host or recorder could be planned (bootstrap then stops unasked)."""
        problems = [p.problem for p in self.hosts]
        if self.recorders is not None:
            problems += [p.problem for p in self.recorders.hosts]
        return bool(problems) and all(problems)

    @property
    def converged(self) -> bool:
        """Whether the recorders, the storage and every server need nothing."""
        return (self.recorders is None or self.recorders.converged) and all(
            p.converged for p in self.hosts)

    @property
    def pending(self) -> bool:
        """Whether anything would change, the policy file included."""
        return (any(p.steps for p in self.hosts)
                or (self.recorders is not None and not self.recorders.converged)
                or (self.policy is not None and self.policy.changed)
                or (self.log_streaming is not None and self.log_streaming.pending))

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what `plan -o json` prints)."""
        data: dict[str, Any] = {}
        if self.recorders is not None:
            data["recorders"] = self.recorders.as_dict()
            data["warnings"] = worm_warnings(self.recorders.storage)
        if self.policy is not None:
            data["policy"] = {"changed": self.policy.changed, "diff": self.policy.diff,
                              "coverage_gaps": [g.as_dict() for g in self.policy.gaps]}
        data["hosts"] = [{
            "name": p.target.name, "problem": p.problem,
            "changes": [{"kind": s.kind, "summary": s.summary, "api_calls": list(s.api_calls)}
                        for s in p.steps],
            **({"openssh": p.exposure.as_dict()} if p.exposure is not None else {}),
        } for p in self.hosts]
        if self.log_streaming is not None:
            data["log_streaming"] = self.log_streaming.as_dict()
        return data

    def exit_code(self, detailed: bool) -> ExitCode:
        """1 when something cannot be planned, 3 with `detailed` when changes are pending."""
        if self.problem:
            return ExitCode.FAILED
        return ExitCode.DRIFT if detailed and self.pending else ExitCode.OK


@dataclass
class BootstrapReport:
    """How every part ended."""

    hosts: list[HostResult]
    recorders: RecorderPhaseResult | None = None
    policy: PolicyOutcome | None = None
    log_streaming: LogStreamingReport | None = None

    def as_dict(self) -> dict[str, Any]:
        """The results as JSON-ready data (what `bootstrap -o json` prints)."""
        data: dict[str, Any] = {}
        if self.recorders is not None:
            data["recorders"] = self.recorders.as_dict()
        if self.policy is not None:
            data["policy"] = ({"changed": False, "error": self.policy.error}
                              if self.policy.error is not None else
                              {"changed": self.policy.changed, "diff": self.policy.diff,
                               "etag": self.policy.etag})
            data["policy"]["coverage_gaps"] = [g.as_dict() for g in self.policy.gaps]
        data["hosts"] = [asdict(r) for r in self.hosts]
        if self.log_streaming is not None:
            data["log_streaming"] = self.log_streaming.as_dict()
        return data

    @property
    def exit_code(self) -> ExitCode:
        """1 when a host, a recorder, the storage or the policy failed; else 3 when the
        policy was refused for coverage gaps."""
        policy = self.policy
        failed = (any(r.failed for r in self.hosts)
                  or (self.recorders is not None and self.recorders.failed)
                  or (policy is not None and policy.error is not None and not policy.refused)
                  or (self.log_streaming is not None and self.log_streaming.failed))
        if failed:
            return ExitCode.FAILED
        return ExitCode.DRIFT if policy is not None and policy.refused else ExitCode.OK


def has_recorders(context: RunContext) -> bool:
    """Whether this run deploys recorders (the inventory has them; no `--limit`)."""
    model = context.inventory.model
    return model.recorders is not None and model.storage is not None and not context.limited


def manages_policy(context: RunContext) -> bool:
    """Whether this run patches the policy file (the inventory has rules; no `--limit`)."""
    return bool(context.inventory.model.ssh_rules) and not context.limited


def plan(context: RunContext, *, with_policy: bool = True) -> BootstrapPlan:
    """Gather the recorders, the storage and every chosen server, and plan them; no change.

    The three are probed at the same time (a slow bucket or recorder no longer delays the
    servers' probes); the plan lists them in the same order whatever finished first, and an
    error that stops planning is the one the sequential order would have met first.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tsops.runner import result

    _ = context.api  # its credentials are resolved (and prompted for) once, before the threads
    with ThreadPoolExecutor(max_workers=3) as pool:
        recorders = pool.submit(RecorderPhase(context).plan) if has_recorders(context) else None
        hosts = pool.submit(ServerPhase(context).gather_and_plan)
        preview = pool.submit(preview_policy, context) if with_policy else None
        streaming = pool.submit(plan_streaming, context)
        recorder_plans = result(recorders) if recorders is not None else None
        host_plans = result(hosts)
        policy = result(preview) if preview is not None else None
        stream_plan = result(streaming)
    return BootstrapPlan(host_plans, recorder_plans, policy, stream_plan)


def plan_streaming(context: RunContext) -> LogStreamingPlan | None:
    """Log streaming's pending writes, when the inventory has `log_streaming` (docs/audit.md)."""
    from tsops.flows.audit import manages_log_streaming, plan_log_streaming

    return plan_log_streaming(context) if manages_log_streaming(context) else None


def preview_policy(context: RunContext) -> PolicyPreview | None:
    """The policy file's pending change, when this run manages it."""
    if not manages_policy(context):
        return None
    from tsops.policy.apply import diff_policy

    policy_plan, diff = diff_policy(context.inventory, context.api)
    return PolicyPreview(policy_plan.changed, diff, policy_plan.coverage.gaps)


def apply(context: RunContext, planned: BootstrapPlan, *,
          allow_unverified: bool = False, allow_gaps: bool = False) -> BootstrapReport:
    """Make the planned changes: recorders and their health gate, servers, then the policy."""
    recorders = None
    if planned.recorders is not None:
        recorders = RecorderPhase(context).apply(planned.recorders)
    servers = ServerPhase(context)
    # The OpenSSH change comes last, after the policy: when tsops will reach a server over
    # Tailscale SSH next, the rule that lets it in must be written before sshd is closed.
    hold: frozenset[StepKind] = frozenset({"openssh"}) if manages_policy(context) else frozenset()
    if all(p.converged for p in planned.hosts):
        hosts = servers.unchanged(planned.hosts)
    else:
        hosts = servers.apply(planned.hosts, hold=hold)
    healthy = recorders.healthy_tags if recorders is not None else frozenset()
    policy = apply_policy(context, set(healthy), allow_unverified, allow_gaps) if manages_policy(
        context) else None
    if hold and not all(p.converged for p in planned.hosts):
        blocked = None
        if policy is not None and (policy.error is not None or policy.refused):
            blocked = "because the policy file was not written"
        hosts = servers.finish(planned.hosts, hosts, hold, blocked)
    streaming = None
    if planned.log_streaming is not None:
        from tsops.flows.audit import apply_log_streaming

        streaming = apply_log_streaming(context, planned.log_streaming)
    return BootstrapReport(hosts, recorders, policy, streaming)


def apply_policy(context: RunContext, healthy: set[str],
                 allow_unverified: bool, allow_gaps: bool = False) -> PolicyOutcome:
    """Patch the policy, enforcing only `healthy` recorder tags; a failure is reported, and
    a patch leaving coverage gaps is refused (nothing written) unless `allow_gaps`."""
    from tsops.policy.apply import CoverageRefused
    from tsops.policy.apply import apply_policy as write_policy

    try:
        result = write_policy(context.inventory, context.api, context.events,
                              healthy_recorder_tags=healthy, allow_unverified=allow_unverified,
                              allow_gaps=allow_gaps)
    except CoverageRefused as refusal:
        return PolicyOutcome(False, error=refusal.message, gaps=refusal.coverage.gaps,
                             refused=True)
    except TsopsError as error:
        return PolicyOutcome(False, error=error.message)
    return PolicyOutcome(result.changed, result.diff, result.etag, gaps=result.coverage.gaps)
