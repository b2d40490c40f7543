"""All terminal output goes through here: results on stdout, diagnostics on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    """Print an error for the operator (never interpreted as markup)."""
    err.print(Text(message, style="red" if err.is_terminal else ""))


def warning(message: str) -> None:
    """Print a warning line prefixed with 'warning:'."""
    err.print(Text(f"warning: {message}", style="yellow" if err.is_terminal else ""))


def line(message: str = "") -> None:
    """Print plain text on stdout (never interpreted as markup)."""
    out.print(Text(message))


def changes(name: str, problem: str | None, steps: list[tuple[str, list[str]]]) -> None:
    """Print one planned object: `name: cannot plan`, `name: no change`, or its `+` steps.

    Each step is its summary and the detail lines printed under it (API calls, a JSON diff).
    """
    if problem is not None:
        line(f"{name}: cannot plan: {problem}")
    elif not steps:
        line(f"{name}: no change")
    else:
        line(f"{name}:")
        for summary, details in steps:
            line(f"  + {summary}")
            for detail in details:
                line(f"      {detail}")


def is_interactive() -> bool:
    """Whether both ends are a terminal, so that prompting the operator makes sense."""
    return sys.stdin.isatty() and sys.stdout.isatty()


@contextmanager
def diverted(active: bool = True) -> Iterator[None]:
    """Send what would go to stdout to stderr (keeps stdout pure JSON in `--output json`)."""
    global out
    if not active:
        yield
        return
    saved, out = out, err
    try:
        yield
    finally:
        out = saved
