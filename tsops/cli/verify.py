"""`tsops verify`: a canary session per server, and its recording found at the destination.

What an operator otherwise does by hand before an audit: SSH to each server over Tailscale,
then look in the bucket (or the recorder's folder) for the new recording. Exit 0 when every
chosen server's canary was recorded, 3 when one was refused or not recorded, 1 when tsops could
not check (the API, the destination or a host it needs was unreachable, a `check` rule).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tsops.canary import (
    CanaryResult,
    Destination,
    plan_canaries,
    run_canaries,
)
from tsops.cli import console
from tsops.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from tsops.inventory.load import LoadedInventory, Target
    from tsops.remote import RemoteLike
    from tsops.tailscale_api import TailscaleApi

OutputFormat = Literal["table", "json"]
WORDS = {"recorded": "recorded", "not-recorded": "NOT RECORDED", "refused": "REFUSED",
         "error": "error"}


def check_verifiable(inventory: LoadedInventory) -> None:
    """Refuse (exit 2) an inventory whose recording tsops does not manage end to end."""
    model = inventory.model
    if not model.ssh_rules:
        raise UsageError(f"{inventory.path}: has no ssh_rules: no rule says which sessions "
                         "must be recorded, so there is nothing to verify")
    if model.storage is None or model.recorders is None:
        raise UsageError(f"{inventory.path}: has no recorders and storage sections: tsops "
                         "does not know where recordings land")


def run_verify(path: Path, limits: list[str], user: str | None, timeout: float,
               concurrency: int, no_input: bool, output: OutputFormat) -> int:
    """Plan a canary per server, run them, report; exit 0, 3 or 1 as the module says."""
    from tsops.context import RunContext

    if timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    context = RunContext.open(path, limits, events=console.ConsoleEvents(no_input=no_input),
                              concurrency=concurrency)
    check_verifiable(context.inventory)
    with context:
        results = verify_servers(context.inventory, context.api, context.targets, user, timeout,
                                 concurrency)
    if output == "json":
        console.line(json.dumps(results_json(results), indent=2))
    else:
        print_results(results)
    return exit_code(results)


def verify_servers(inventory: LoadedInventory, api: TailscaleApi, targets: Sequence[Target],
                   user: str | None, timeout: float, concurrency: int = 8,
                   ) -> list[CanaryResult]:
    """The canaries of `targets`, in inventory order (also add-server's proof)."""
    from tsops.tailnet_ssh import run_command

    canaries, unplanned = plan_canaries(inventory, targets, api.list_devices(), user)
    remotes: list[RemoteLike] = []
    try:
        destination = open_destination(inventory, remotes)
        for canary in canaries:
            console.err.print(f"{canary.host}: canary session as {canary.user}@{canary.address}",
                              highlight=False)
        done = run_canaries(canaries, run_command, destination, timeout=timeout,
                            concurrency=concurrency)
    finally:
        for remote in remotes:
            remote.close()
    order = {t.name: i for i, t in enumerate(targets)}
    return sorted(done + unplanned, key=lambda r: order[r.host])


def open_destination(inventory: LoadedInventory, remotes: list[RemoteLike]) -> Destination:
    """The inventory's destination: the bucket (operator's credentials) or the recorders' folder."""
    from tsops.canary import BucketObjects, RecorderFolders

    storage = inventory.model.storage
    assert storage is not None
    if storage.is_s3:
        from tsops.s3 import client_for

        return BucketObjects(client_for(storage), storage.bucket)
    from tsops.context import ssh_connector

    connect = ssh_connector(inventory)
    remotes.extend(connect(target) for target in inventory.recorders)
    return RecorderFolders(storage.destination, {r.name: r for r in remotes})


def exit_code(results: Sequence[CanaryResult]) -> int:
    """1 when something could not be checked, else 3 when a server is not recorded, else 0."""
    if any(r.state == "error" for r in results):
        return ExitCode.FAILED
    if any(r.state != "recorded" for r in results):
        return ExitCode.DRIFT
    return ExitCode.OK


def results_json(results: Sequence[CanaryResult]) -> dict[str, Any]:
    """The machine-readable report."""
    states = {r.state for r in results}
    overall = ("error" if "error" in states else
               "not-recorded" if states - {"recorded"} else "recorded")
    return {"state": overall, "servers": [
        {"name": r.host, "state": r.state, "detail": r.detail, "node_id": r.node_id or None,
         "recording": r.key, "seconds": None if r.seconds is None else round(r.seconds, 1)}
        for r in results]}


def print_results(results: Sequence[CanaryResult]) -> None:
    """One line per server, then a summary line."""
    for r in results:
        where = f": {r.key}" if r.key else ""
        took = f" after {r.seconds:.1f} s" if r.seconds is not None else ""
        console.line(f"{r.host}: {WORDS[r.state]}{took} - {r.detail}{where}")
    recorded = sum(r.state == "recorded" for r in results)
    console.line(f"{recorded} of {len(results)} servers proved recorded")
