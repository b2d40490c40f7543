"""`tsops verify`: run the verify flow (tsops.flows.verify) and render its report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tsops.cli import console
from tsops.context import RunContext
from tsops.errors import UsageError
from tsops.flows import verify as flow

if TYPE_CHECKING:
    from tsops.canary import CanaryResult

OutputFormat = Literal["table", "json"]
WORDS = {"recorded": "recorded", "not-recorded": "NOT RECORDED", "refused": "REFUSED",
         "error": "error"}


def run_verify(path: Path, limits: list[str], user: str | None, timeout: float,
               concurrency: int, no_input: bool, output: OutputFormat) -> int:
    """Plan a canary per server, run them, report; exit 0, 3 or 1 as tsops.flows.verify says."""
    if timeout <= 0:
        raise UsageError("--canary-timeout must be more than 0 seconds")
    with RunContext.open(path, limits, events=console.ConsoleEvents(no_input=no_input),
                         concurrency=concurrency) as context:
        report = flow.verify(context, user, timeout)
    if output == "json":
        console.line(json.dumps(report.as_dict(), indent=2))
    else:
        print_results(report.results)
        for alarm in report.alarms():
            console.error(alarm)
    return report.exit_code


def print_results(results: Sequence[CanaryResult]) -> None:
    """One line per server, then a summary line."""
    for r in results:
        where = f": {r.key}" if r.key else ""
        took = f" after {r.seconds:.1f} s" if r.seconds is not None else ""
        console.line(f"{r.host}: {WORDS[r.state]}{took} - {r.detail}{where}")
    recorded = sum(r.state == "recorded" for r in results)
    console.line(f"{recorded} of {len(results)} servers proved recorded")
