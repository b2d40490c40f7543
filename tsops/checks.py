"""Status: turn the plans of servers, recorders, storage and the policy into checks; pure code.

A pending step is drift: each step kind fails the check it belongs to. A host that could not be
reached or planned is an error. Nothing here touches a host or a service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tsops.errors import ExitCode
from tsops.policy.coverage import Coverage, Gap
from tsops.policy.plan import PolicyPlan
from tsops.recorders.bucket import BucketPlan
from tsops.recorders.host import HostStepKind, RecorderHostPlan
from tsops.recordings.tamper import Tampered
from tsops.servers.exposure import Exposure
from tsops.servers.plan import HostPlan, StepKind, tarball_version
from tsops.tailscale_api import Device

State = Literal["ok", "drift", "error", "unknown"]
Role = Literal["server", "recorder"]
SERVER_CHECKS = ("reachable", "version", "enrolled", "tags", "ssh")
RECORDER_CHECKS = ("reachable", "unit", "tailnet", "files", "destination")
SERVER_STEP_CHECK: dict[StepKind, str] = {
    "repo": "version", "install": "version", "service": "enrolled", "enroll": "enrolled",
    "hostname": "enrolled", "retag": "tags", "ssh": "ssh", "openssh": "openssh",
    # Without the canary account, verify's Tailscale SSH session cannot log in.
    "account": "ssh",
}
# "start" is left out: it follows any other step, so the unit check reads the unit's state.
RECORDER_STEP_CHECK: dict[HostStepKind, str] = {
    "binary": "files", "user": "files", "statedir": "files", "env": "files", "unit": "files",
    "destination": "destination", "authkey": "tailnet",
}
_RANK: dict[State, int] = {"ok": 0, "unknown": 0, "drift": 1, "error": 2}
API_DOWN = "not checked: the Tailscale API did not answer"


@dataclass(frozen=True)
class Check:
    """One comparison of what the inventory expects with what was found."""

    name: str
    state: State
    expected: str
    actual: str

    def as_dict(self) -> dict[str, str]:
        """The check as JSON-ready data."""
        return {"name": self.name, "state": self.state, "expected": self.expected,
                "actual": self.actual}


@dataclass(frozen=True)
class HostStatus:
    """The checks of one server or recorder; `reason` says why it is in error."""

    name: str
    role: Role
    checks: tuple[Check, ...]
    reason: str | None = None
    round_trips: int = 0
    exposure: Exposure | None = None

    @property
    def state(self) -> State:
        """The worst state of its checks (an error when it has a reason)."""
        return "error" if self.reason is not None else worst(c.state for c in self.checks)

    def check(self, name: str) -> Check | None:
        """The check of that name, if this host has it."""
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True)
class PolicyStatus:
    """Whether the policy file holds the managed rules as the inventory says."""

    check: Check
    diff: str = ""


@dataclass(frozen=True)
class CoverageStatus:
    """Whether every session to the servers is recorded as asked: the policy's coverage gaps
    (as the policy is now) and an online device for each managed rule's recorder tag."""

    checks: tuple[Check, ...]
    gaps: tuple[Gap, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data: the checks and every gap."""
        return {"checks": [c.as_dict() for c in self.checks],
                "gaps": [g.as_dict() for g in self.gaps]}


@dataclass(frozen=True)
class StreamStatus:
    """`status` of one log type's stream (tsops.audit.streaming): whether it matches the
    inventory, and whether it publishes (the API's stream status: last error, entries sent)."""

    log_type: str
    check: Check
    publishing: Check | None = None
    details: dict[str, Any] | None = None

    @property
    def checks(self) -> tuple[Check, ...]:
        """Both checks (the second only when the stream exists)."""
        return (self.check,) if self.publishing is None else (self.check, self.publishing)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (an entry of `status -o json`'s `log_streaming`)."""
        return {"log_type": self.log_type, **self.check.as_dict(),
                "publishing": None if self.publishing is None else {
                    **self.publishing.as_dict(), "status": self.details}}


@dataclass(frozen=True)
class Status:
    """Everything `tsops status` found."""

    hosts: tuple[HostStatus, ...]
    storage: Check | None = None
    policy: PolicyStatus | None = None
    problems: tuple[str, ...] = ()
    coverage: CoverageStatus | None = None
    recordings: Check | None = None  # tamper detection over the bucket's versions
    tampered: tuple[Tampered, ...] = ()
    warnings: tuple[str, ...] = ()
    # Outside systems that did not answer, as (service, message): what needs them is unknown.
    unavailable: tuple[tuple[str, str], ...] = ()
    log_streaming: tuple[StreamStatus, ...] | None = None  # None: the inventory has none

    @property
    def state(self) -> State:
        """The worst state of all hosts, the storage and the policy."""
        if self.problems or self.unavailable:
            return "error"
        states = [h.state for h in self.hosts]
        if self.storage is not None:
            states.append(self.storage.state)
        if self.policy is not None:
            states.append(self.policy.check.state)
        if self.coverage is not None:
            states += [c.state for c in self.coverage.checks]
        if self.recordings is not None:
            states.append(self.recordings.state)
        for stream in self.log_streaming or ():
            states += [c.state for c in stream.checks]
        return worst(states)

    @property
    def exit_code(self) -> ExitCode:
        """0 when everything matches, 3 on drift, 1 on any error."""
        return {"ok": ExitCode.OK, "unknown": ExitCode.OK, "drift": ExitCode.DRIFT,
                "error": ExitCode.FAILED}[self.state]

    def as_dict(self) -> dict[str, Any]:
        """The whole status as JSON-ready data: every check with its expected and actual values
        (what `status -o json` prints)."""
        return {
            "state": self.state,
            "problems": list(self.problems),
            "hosts": [{"name": h.name, "role": h.role, "state": h.state, "reason": h.reason,
                       "round_trips": h.round_trips, "checks": [c.as_dict() for c in h.checks],
                       **({"openssh": h.exposure.as_dict()} if h.exposure is not None else {})}
                      for h in self.hosts],
            "storage": self.storage.as_dict() if self.storage is not None else None,
            "policy": None if self.policy is None else {
                **self.policy.check.as_dict(), "diff": self.policy.diff},
            "coverage": None if self.coverage is None else self.coverage.as_dict(),
            "recordings": None if self.recordings is None else {
                **self.recordings.as_dict(), "tampered": [t.as_dict() for t in self.tampered]},
            "warnings": list(self.warnings),
            "unavailable": [{"service": service, "message": message}
                            for service, message in self.unavailable],
            "log_streaming": None if self.log_streaming is None else [
                s.as_dict() for s in self.log_streaming],
        }


def worst(states: Iterable[State]) -> State:
    """The most severe of some states; "ok" when none is worse than not checked."""
    found: State = max(states, key=lambda s: _RANK[s], default="ok")
    return "ok" if found == "unknown" else found


def _failed(summaries: dict[str, list[str]], name: str) -> State:
    return "drift" if name in summaries else "ok"


def _not_planned(name: str, role: Role, problem: str, reached: bool,
                 round_trips: int) -> HostStatus:
    """A host in error: unreachable, or reached but not plannable (its other checks unknown)."""
    checks = RECORDER_CHECKS if role == "recorder" else SERVER_CHECKS
    reachable = Check("reachable", "ok" if reached else "error", "one probe answers",
                      "answered" if reached else problem)
    rest = (Check(c, "unknown", "", "not checked") for c in checks[1:])
    return HostStatus(name, role, (reachable, *rest), reason=problem, round_trips=round_trips)


def server_status(plan: HostPlan, round_trips: int = 0, api_down: bool = False) -> HostStatus:
    """The checks of one server, from its plan (`api_down`: without the API's device list,
    the tags it holds there are unknown)."""
    name = plan.target.name
    facts = plan.facts
    if facts is None:
        return _not_planned(name, "server", plan.problem or "no facts", False, round_trips)
    if plan.problem is not None:
        return _not_planned(name, "server", plan.problem, True, round_trips)
    failed: dict[str, list[str]] = {}
    for step in plan.steps:
        failed.setdefault(SERVER_STEP_CHECK[step.kind], []).append(step.summary)
    desired, status, prefs = plan.desired, facts.status, facts.prefs
    install = desired.install
    pin = tarball_version(install) if install.method == "tarball" else install.version
    version = Check("version", _failed(failed, "version"), pin or "installed",
                    facts.tailscale_version or "not installed")
    control = desired.login_server or "the default control server"
    enrolled = Check(
        "enrolled", _failed(failed, "enrolled"),
        f"Running on {control}, tailnet {desired.tailnet}, hostname {desired.hostname}",
        "tailscaled inactive" if not facts.tailscaled_active else
        f"{status.backend_state if status else 'no status'} on "
        f"{prefs.control_url if prefs else 'unknown'}, tailnet "
        f"{status.tailnet if status else 'unknown'}, hostname "
        f"{prefs.hostname if prefs else 'unknown'}",
    )
    expected_tags = " ".join(sorted(desired.tags))
    if enrolled.state != "ok" and "enroll" in {s.kind for s in plan.steps}:
        tags = Check("tags", "unknown", expected_tags, "not enrolled")
        ssh = Check("ssh", "unknown", "on", "not enrolled")
    else:
        current = plan.device.tags if plan.device is not None else (
            status.tags if status is not None else ())
        tags = Check("tags", _failed(failed, "tags"), expected_tags,
                     " ".join(sorted(current)) or "(untagged)")
        if api_down:
            tags = Check("tags", "unknown", expected_tags,
                         f"{API_DOWN} (the node reports {tags.actual})")
        ssh = Check("ssh", _failed(failed, "ssh"), "on",
                    "on" if prefs is not None and prefs.run_ssh else "off")
    reachable = Check("reachable", "ok", "one probe answers", "answered")
    checks: tuple[Check, ...] = (reachable, version, enrolled, tags, ssh)
    if plan.exposure is not None:
        checks = (*checks, openssh_check(plan.exposure))
    return HostStatus(name, "server", checks, round_trips=round_trips, exposure=plan.exposure)


def openssh_check(exposure: Exposure) -> Check:
    """OpenSSH as the server's `openssh` setting asks (keep: what it listens on, reported)."""
    listening = ", ".join(exposure.listening) or "nothing"
    actual = f"listening on {listening}"
    if exposure.problem is not None:
        return Check("openssh", "error", exposure.mode, exposure.problem)
    if exposure.mode == "keep":
        return Check("openssh", "ok", "keep (not managed by tsops)", actual)
    expected = ("sshd stopped and disabled" if exposure.mode == "off" else
                f"listening only on {', '.join(exposure.wanted)}")
    return Check("openssh", "ok" if exposure.matches else "drift", expected, actual)


def recorder_status(plan: RecorderHostPlan, device: Device | None, tag: str,
                    storage: Check | None, min_free_gb: int, round_trips: int = 0,
                    api_down: bool = False) -> HostStatus:
    """The checks of one recorder, from its plan, its API device and the storage check
    (`api_down`: whether it is online in the tailnet is unknown)."""
    name = plan.target.name
    facts = plan.facts
    if facts is None:
        return _not_planned(name, "recorder", plan.problem or "no facts", False, round_trips)
    if plan.problem is not None:
        return _not_planned(name, "recorder", plan.problem, True, round_trips)
    failed: dict[str, list[str]] = {}
    for step in plan.steps:
        if step.kind in RECORDER_STEP_CHECK:
            failed.setdefault(RECORDER_STEP_CHECK[step.kind], []).append(step.summary)
    unit_ok = facts.active == "active" and facts.enabled == "enabled"
    unit = Check("unit", "ok" if unit_ok else "drift", "active, enabled",
                 f"{facts.active or 'unknown'}, {facts.enabled or 'unknown'}")
    if device is None:
        online = f"not registered with {tag}"
    elif not device.connected_to_control:
        online = f"registered with {tag}, offline"
    else:
        online = f"online with {tag}" + ("" if facts.has_state else ", but has no state")
    tailnet_ok = device is not None and device.connected_to_control and "tailnet" not in failed
    tailnet = Check("tailnet", "ok" if tailnet_ok else "drift", f"online with {tag}", online)
    if api_down:
        tailnet = Check("tailnet", "unknown", f"online with {tag}", API_DOWN)
    changes = failed.get("files")
    files = Check("files", _failed(failed, "files"),
                  "binary, user, statedir, env and unit as the inventory renders them",
                  "to change: " + "; ".join(changes) if changes else "match")
    spec = plan.spec
    if spec.storage.is_s3:
        bucket = storage or Check("storage", "unknown", spec.storage.destination, "not checked")
        destination = Check("destination", bucket.state, bucket.expected, bucket.actual)
    else:
        low = facts.free_kb is not None and facts.free_kb < min_free_gb * 1024 * 1024
        free = "unknown" if facts.free_kb is None else f"{facts.free_kb / 1024 / 1024:.1f} GiB"
        destination = Check(
            "destination", "drift" if "destination" in failed or low else "ok",
            f"{spec.storage.destination} owned by {spec.owner}, mode 0700, "
            f"at least {min_free_gb} GiB free",
            f"owner:mode {facts.destination_owner or 'missing'}, {free} free",
        )
    reachable = Check("reachable", "ok", "one probe answers", "answered")
    return HostStatus(name, "recorder", (reachable, unit, tailnet, files, destination),
                      round_trips=round_trips)


def storage_check(bucket: BucketPlan | None) -> Check | None:
    """The bucket's settings and policy compared with the inventory (None: a local directory)."""
    if bucket is None:
        return None
    expected = f"bucket {bucket.bucket}: settings and bucket policy as the inventory says"
    if bucket.problem is not None:
        return Check("storage", "error", expected, bucket.problem)
    if bucket.changes:
        return Check("storage", "drift", expected,
                     "to change: " + "; ".join(c.summary for c in bucket.changes))
    return Check("storage", "ok", expected, "match")


def policy_status(plan: PolicyPlan, rules: tuple[str, ...], diff: str) -> PolicyStatus:
    """Whether the managed rules are present and enforced as the inventory says (no diff)."""
    expected = (f"managed rules {', '.join(rules)} present and enforced as the inventory says"
                if rules else "no managed rules")
    if not plan.changed:
        return PolicyStatus(Check("policy", "ok", expected, "match"))
    found = [f"{label}: {', '.join(names)}" for label, names in (
        ("missing", plan.added_rules), ("differs", plan.changed_rules),
        ("no longer in the inventory", plan.removed_rules), ("tags to add", plan.added_tags),
        ) if names]
    return PolicyStatus(Check("policy", "drift", expected, "; ".join(found) or "text differs"),
                        diff)


def policy_error(message: str) -> PolicyStatus:
    """The policy could not be read or parsed."""
    return PolicyStatus(Check("policy", "error", "the policy file readable", message))


def coverage_check(coverage: Coverage) -> Check:
    """Whether the policy as it is now lets a session to a server land on a rule that does
    not record it as the inventory asks (tsops.policy.coverage)."""
    expected = "every session to the servers lands first on a rule that records it as asked"
    if coverage.clean:
        return Check("coverage", "ok", expected, f"no gaps ({len(coverage.servers)} server(s))")
    rules = dict.fromkeys(g.rule.describe().split(":")[0] for g in coverage.gaps)
    return Check("coverage", "drift", expected,
                 f"{len(coverage.gaps)} gap(s) at {', '.join(rules)}")


def recorders_online_check(tags: Iterable[str], online: Iterable[str]) -> Check:
    """Whether each managed rule's recorder tag has an online device: with none, Tailscale
    SSH runs those sessions unrecorded, even under enforceRecorder (reference section 6)."""
    wanted = sorted(set(tags))
    missing = [tag for tag in wanted if tag not in set(online)]
    expected = f"an online device with {', '.join(wanted)}"
    if not missing:
        return Check("recorders-online", "ok", expected, "online")
    return Check("recorders-online", "drift", expected,
                 f"no online device with {', '.join(missing)}: Tailscale SSH runs the sessions "
                 "of those rules unrecorded, even with enforceRecorder")


def tamper_check(tampered: Iterable[Tampered]) -> Check:
    """Whether every recording in the bucket still has the one version tsrecorder wrote
    (tsops.recordings.tamper): a second version or a delete marker is drift, named by key."""
    found = list(tampered)
    expected = "every recording has exactly one version (never overwritten or deleted)"
    if not found:
        return Check("recordings", "ok", expected, "no recording rewritten")
    return Check("recordings", "drift", expected,
                 f"{len(found)} recording(s) rewritten or deleted: "
                 + ", ".join(t.key for t in found))


def tamper_error(message: str) -> Check:
    """The bucket's versions could not be listed."""
    return Check("recordings", "error", "the bucket's versions listed", message)
