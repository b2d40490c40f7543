"""`verify`: a canary session per server, and its recording found at the destination.

What an operator otherwise does by hand before an audit: SSH to each server over Tailscale,
then look in the bucket (or the recorders' folder) for the new recording. The report's exit code
is 0 when every chosen server's canary was recorded, 3 when one was refused or not recorded, 1
when tsops could not check (the API, the destination or a host it needs was unreachable, a
`check` rule). add-server proves a new server with the same flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tsops.canary import (
    DEFAULT_TIMEOUT_S,
    CanaryResult,
    Destination,
    SessionRunner,
    plan_canaries,
    run_canaries,
)
from tsops.context import RunContext
from tsops.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from tsops.inventory.load import LoadedInventory, Target
    from tsops.recordings.tamper import Tampered


@dataclass(frozen=True)
class VerifyReport:
    """Every chosen server's canary, in inventory order, and the managed rules' recorder tags
    that no online device carries (Tailscale SSH then runs their sessions unrecorded, even
    under enforceRecorder: reference section 6)."""

    results: list[CanaryResult]
    recorders_offline: tuple[str, ...] = ()
    # Recordings in the bucket rewritten or deleted (tsops.recordings.tamper), and why the
    # bucket's versions could not be listed.
    tampered: tuple[Tampered, ...] = ()
    tamper_problem: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        """1 when something could not be checked, else 3 when a server is not recorded, a
        recorder tag has no online device or a recording was rewritten, else 0."""
        code = exit_code(self.results)
        if self.tamper_problem is not None:
            return ExitCode.FAILED
        if code == ExitCode.OK and (self.recorders_offline or self.tampered):
            return ExitCode.DRIFT
        return code

    def alarms(self) -> list[str]:
        """One line per recorder tag without an online device and per tampered recording."""
        return [f"no online device carries {tag}: Tailscale SSH runs the sessions of the rules "
                "recording to it unrecorded, even with enforceRecorder"
                for tag in self.recorders_offline] + [
                f"tampered: {found.line()}" for found in self.tampered] + (
                [f"tampering not checked: {self.tamper_problem}"]
                if self.tamper_problem is not None else [])

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what `verify -o json` prints)."""
        data = results_as_dict(self.results)
        data["recorders_offline"] = list(self.recorders_offline)
        if self.recorders_offline and data["state"] == "recorded":
            data["state"] = "not-recorded"
        data["tampered"] = [found.as_dict() for found in self.tampered]
        data["tamper_problem"] = self.tamper_problem
        if self.tampered and data["state"] == "recorded":
            data["state"] = "tampered"
        if self.tamper_problem is not None:
            data["state"] = "error"
        return data


def check_verifiable(inventory: LoadedInventory) -> None:
    """Refuse (exit 2) an inventory whose recording tsops does not manage end to end."""
    model = inventory.model
    if not model.ssh_rules:
        raise UsageError(f"{inventory.path}: has no ssh_rules: no rule says which sessions "
                         "must be recorded, so there is nothing to verify")
    if model.storage is None or model.recorders is None:
        raise UsageError(f"{inventory.path}: has no recorders and storage sections: tsops "
                         "does not know where recordings land")


def verify(context: RunContext, user: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
           session: SessionRunner | None = None) -> VerifyReport:
    """The canaries of the run's chosen servers; the inventory must be verifiable."""
    from tsops.policy.apply import managed_recorder_tags, online_recorder_tags

    check_verifiable(context.inventory)
    tags = managed_recorder_tags(context.inventory)
    online = online_recorder_tags(context.api, tags) if tags else set()
    offline = tuple(sorted(tags - online))
    results = verify_servers(context, context.targets, user, timeout, session)
    tampered, problem = check_tampering(context)
    return VerifyReport(results, offline, tuple(tampered), problem)


def check_tampering(context: RunContext) -> tuple[list[Tampered], str | None]:
    """The bucket's rewritten recordings, or why its versions could not be listed (an S3
    destination only: a local folder keeps no versions)."""
    from tsops.recordings.store import S3Store, StoreError
    from tsops.recordings.tamper import tampered

    storage = context.inventory.model.storage
    if storage is None or not storage.is_s3:
        return [], None
    try:
        return tampered(S3Store(context.s3(storage), storage.bucket)), None
    except StoreError as error:
        return [], error.message


def verify_servers(context: RunContext, targets: Sequence[Target], user: str | None,
                   timeout: float, session: SessionRunner | None = None,
                   ) -> list[CanaryResult]:
    """The canaries of `targets`, in their order (also add-server's proof).

    `session` opens a Tailscale SSH session (tsops.tailnet_ssh.run_command by default).
    """
    if session is None:
        from tsops.tailnet_ssh import run_command

        session = run_command
    canaries, unplanned = plan_canaries(context.inventory, targets, context.api.list_devices(),
                                        user)
    destination = open_destination(context)
    for canary in canaries:
        context.events.step(f"{canary.host}: canary session as {canary.user}@{canary.address}")
    done = run_canaries(canaries, session, destination, timeout=timeout,
                        concurrency=context.concurrency)
    order = {t.name: i for i, t in enumerate(targets)}
    return sorted(done + unplanned, key=lambda r: order[r.host])


def open_destination(context: RunContext) -> Destination:
    """The inventory's destination: the bucket (operator's credentials) or the recorders' folder,
    searched over the run's SSH connections to the recorder hosts."""
    from tsops.canary import BucketObjects, RecorderFolders

    inventory = context.inventory
    storage = inventory.model.storage
    assert storage is not None
    if storage.is_s3:
        from tsops.recordings.store import S3Store

        return BucketObjects(S3Store(context.s3(storage), storage.bucket))
    return RecorderFolders(storage.destination,
                           {t.name: context.remote(t) for t in inventory.recorders})


def exit_code(results: Sequence[CanaryResult]) -> ExitCode:
    """1 when something could not be checked, else 3 when a server is not recorded, else 0."""
    if any(r.state == "error" for r in results):
        return ExitCode.FAILED
    if any(r.state != "recorded" for r in results):
        return ExitCode.DRIFT
    return ExitCode.OK


def results_as_dict(results: Sequence[CanaryResult]) -> dict[str, Any]:
    """The canaries' results as JSON-ready data (what `verify -o json` prints)."""
    states = {r.state for r in results}
    overall = ("error" if "error" in states else
               "not-recorded" if states - {"recorded"} else "recorded")
    return {"state": overall, "servers": [
        {"name": r.host, "state": r.state, "detail": r.detail, "node_id": r.node_id or None,
         "recording": r.key, "seconds": None if r.seconds is None else round(r.seconds, 1)}
        for r in results]}
