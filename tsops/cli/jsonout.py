"""`-o json`: one JSON document on stdout, everything else on stderr (schemas: docs/json.md).

A command in JSON mode runs its usual rendering inside `reserved_stdout()`, which sends every
line meant for a person (plans, diffs, summaries) to stderr; the document itself is written
last with `emit()`. A failure is the error object of `tsops.cli.app` instead.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any


def utc_time(moment: datetime.datetime) -> str:
    """An RFC 3339 UTC time to the second, like 2026-12-02T04:40:00Z (a naive time is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def reserved_stdout(json_mode: bool) -> Iterator[None]:
    """In JSON mode, what the command prints for people goes to stderr meanwhile."""
    if not json_mode:
        yield
        return
    with redirect_stdout(sys.stderr):
        yield


def emit(document: dict[str, Any]) -> None:
    """Write the command's one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()
