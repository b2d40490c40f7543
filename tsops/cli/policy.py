"""`tsops policy diff|apply|rollback`: patch the tailnet policy file's ssh rules and tagOwners."""

from __future__ import annotations

import sys
from pathlib import Path

from tsops import console
from tsops.errors import ExitCode
from tsops.inventory.load import LoadedInventory, load_inventory
from tsops.secrets import SecretError
from tsops.tailscale_api import TailscaleApi


def _api(inventory: LoadedInventory, no_input: bool) -> TailscaleApi | None:
    """An API client; for a file source, None when the credentials cannot be resolved."""
    from tsops.cli.bootstrap import connect_api

    if inventory.model.policy.source == "api":
        return connect_api(inventory, no_input)
    try:
        return connect_api(inventory, no_input=True)
    except SecretError as error:
        console.warning(f"no API credentials ({error.message}); the policy file is not "
                        "validated through the API")
        return None


def run_diff(path: Path, no_input: bool, detailed_exitcode: bool) -> None:
    """Print the unified diff tsops would apply; exit 3 with --detailed-exitcode if any."""
    from tsops.policy.apply import diff_policy, print_diff

    inventory = load_inventory(path)
    api = _api(inventory, no_input)
    try:
        plan, diff = diff_policy(inventory, api)
    finally:
        if api is not None:
            api.close()
    for conflict in plan.conflicts:
        console.warning(f"conflict: {conflict}")
    for warning in plan.warnings:
        console.warning(warning)
    if not diff:
        console.line("policy: no changes")
        return
    print_diff(diff)
    if detailed_exitcode:
        sys.exit(ExitCode.DRIFT)


def run_apply(path: Path, no_input: bool, yes: bool, allow_unverified_recorder: bool) -> None:
    """Apply the patch; enforcement needs an online recorder device (or the override)."""
    from tsops.policy.apply import apply_policy, enforced_recorder_tags, online_recorder_tags

    inventory = load_inventory(path)
    api = _api(inventory, no_input)
    try:
        recorder_tags = enforced_recorder_tags(inventory)
        healthy = online_recorder_tags(api, recorder_tags) if api and recorder_tags else set()
        result = apply_policy(inventory, api, healthy_recorder_tags=healthy,
                              allow_unverified=allow_unverified_recorder, yes=yes,
                              no_input=no_input)
    finally:
        if api is not None:
            api.close()
    if result.changed:
        parts = [f"{len(result.added_rules)} rule(s) added",
                 f"{len(result.changed_rules)} changed", f"{len(result.removed_rules)} removed",
                 f"{len(result.added_tags)} tag(s) declared"]
        console.line("policy: " + ", ".join(parts))


def run_rollback(path: Path, no_input: bool, yes: bool, number: int | None,
                 list_only: bool) -> None:
    """Undo a write tsops made (the latest by default), or list the writes kept."""
    from tsops.policy.apply import history_for, rollback_policy

    inventory = load_inventory(path)
    if list_only:
        history = history_for(inventory)
        records = history.records()
        if not records:
            console.line(f"no policy writes kept in {history.directory}")
        for record in records:
            console.line(f"{record.number:4d}  {record.written_at}  {record.reason}  "
                         f"{record.before.etag[:12]} -> {record.after.etag[:12]}")
        return
    api = _api(inventory, no_input)
    try:
        rollback_policy(inventory, api, number=number, yes=yes, no_input=no_input)
    finally:
        if api is not None:
            api.close()
