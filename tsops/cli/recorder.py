"""`tsops recorder iam-policy`, and how bootstrap shows the recorder phase's plan and results."""

from __future__ import annotations

import json
from pathlib import Path

from tsops.cli import console
from tsops.errors import UsageError
from tsops.inventory.load import load_inventory
from tsops.recorders.bucket import worm_warnings
from tsops.recorders.phase import RecorderPhaseResult, RecorderPlans


def run_iam_policy(path: Path) -> None:
    """Print the least-privilege IAM policy for the recorder's S3 credentials."""
    from tsops.recorders.render import iam_policy

    inventory = load_inventory(path)
    storage, recorders = inventory.model.storage, inventory.model.recorders
    if storage is None or recorders is None or not storage.is_s3:
        raise UsageError(f"{path}: storage.destination: the IAM policy is for an S3 destination "
                         "(s3://BUCKET); this inventory has none")
    console.line(json.dumps(iam_policy(storage, recorders.ui), indent=2))


def _redacted(env: str) -> list[str]:
    """An environment file with the values of secret-looking names replaced."""
    shown = []
    for line in env.splitlines():
        name, equals, _value = line.partition("=")
        secret = any(word in name.upper() for word in ("KEY", "SECRET", "TOKEN", "PASSWORD"))
        shown.append(f"{name}=<redacted>" if equals and secret else line)
    return shown


def print_recorder_plans(plans: RecorderPlans, *, verbose: bool = False) -> None:
    """Show what the recorder phase would change, with a JSON diff for the bucket policy;
    with `verbose`, the unit and environment file each recorder host gets (secrets redacted)."""
    bucket = plans.bucket
    if bucket is not None:
        console.changes(f"storage {plans.storage.destination}", bucket.problem or None,
                        [(c.summary, c.detail.splitlines()) for c in bucket.changes])
        for note in bucket.notes:
            console.warning(f"storage: {note}")
    for warning in worm_warnings(plans.storage):
        console.warning(warning)
    for plan in plans.hosts:
        console.changes(f"recorder {plan.target.name}", plan.problem,
                        [(step.summary, []) for step in plan.steps])
        if verbose and plan.steps and plan.unit:
            console.line(f"  unit file of {plan.target.name}:")
            for line in plan.unit.rstrip("\n").splitlines():
                console.line(f"    | {line}")
            if plan.env:
                console.line(f"  environment file of {plan.target.name} (secrets redacted):")
                for line in _redacted(plan.env):
                    console.line(f"    | {line}")
        for warning in plan.warnings:
            console.warning(f"{plan.target.name}: {warning}")
    if plans.hosts and plans.gate:
        console.line(f"health gate: {plans.gate}")


def print_recorder_results(result: RecorderPhaseResult) -> None:
    """A line per recorder and the storage, then any failure in full on stderr.

    Warnings were shown with the plan just before; JSON output carries them per host.
    """
    storage = result.storage
    writes = len(storage.s3_writes)
    console.line(f"storage {storage.destination}: {storage.outcome}"
                 + (f" ({writes} S3 write(s))" if writes else ""))
    for host in result.hosts:
        health = "healthy" if host.healthy else "NOT healthy"
        if host.verification == "not verified":
            health = "NOT verified"
        console.line(f"recorder {host.name}: {host.outcome}, {len(host.done)} change(s), "
                     f"{health}" + (f" (destination {host.verified_how})"
                                    if host.healthy and host.verified_how else ""))
    if storage.outcome == "failed":
        console.error(f"storage: failed: {storage.reason}")
    for host in result.hosts:
        if host.outcome in ("failed", "skipped"):
            console.error(f"recorder {host.name}: {host.outcome}: {host.reason}")
        elif not host.healthy:
            console.warning(f"recorder {host.name}: {host.reason}; enforceRecorder is withheld "
                            "for it unless --allow-unverified-recorder")
    tags = ", ".join(sorted(result.healthy_tags)) or "none"
    console.line(f"healthy recorder tags: {tags}")
