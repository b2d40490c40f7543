"""`policy diff|apply|rollback` below the CLI: which API client the policy source needs.

The patching itself is tsops.policy (plan, apply with If-Match, history and rollback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tsops.context import RunContext
from tsops.events import Unattended
from tsops.secrets import SecretError

if TYPE_CHECKING:
    from tsops.tailscale_api import TailscaleApi


def policy_api(context: RunContext) -> TailscaleApi | None:
    """The API client the inventory's policy source uses.

    The API source needs it. A file in the operator's repository only gains validation from
    it, so its credentials are never asked for, and without them the file is not validated
    (a warning says so).
    """
    if context.inventory.model.policy.source == "api":
        return context.api
    asking, context.events = context.events, Unattended(context.events)
    try:
        return context.api
    except SecretError as error:
        asking.warning(f"no API credentials ({error.message}); the policy file is not "
                       "validated through the API")
        return None
    finally:
        context.events = asking
