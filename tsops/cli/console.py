"""All terminal output goes through here: results on stdout, diagnostics on stderr.

The library below tsops.cli never prints: it reports through `ConsoleEvents` and returns
reports that the command modules render with these functions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tsops.errors import UsageError
from tsops.events import Declined


class _Output(Console):
    """Standard output: a reader that went away raises BrokenPipeError (rich would exit 1).

    The command layer turns it into a quiet stop (exit 0), or an error where a partial output
    matters (`recordings export`, whose checkpoint then stays unchanged).
    """

    def print(self, *objects: Any, **options: Any) -> None:
        """Print; a table written to a pipe or a file comes without box-drawing characters."""
        if not self.is_terminal:
            for item in objects:
                if isinstance(item, Table):
                    item.box = None
                    item.show_edge = False
        super().print(*objects, **options)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError("standard output was closed")


out = _Output(highlight=False, soft_wrap=True)
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


@contextmanager
def working(message: str) -> Iterator[None]:
    """A spinner with the time elapsed on stderr while a long read runs (list, search, seal,
    verify, export of thousands of recordings), on a terminal only; gone when it ends.

    The commands that use it print their results after the work, so it never interleaves
    with them; it draws nothing when stderr is not a terminal (CI, a pipe, a file).
    """
    if not err.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as shown:
        shown.add_task(message, total=None)
        yield


def is_interactive() -> bool:
    """Whether both ends are a terminal, so that prompting the operator makes sense."""
    return sys.stdin.isatty() and sys.stdout.isatty()


class ConsoleEvents:
    """The library's Events, shown on the terminal: steps and warnings on stderr, results on
    stdout, confirmations and secrets asked at the terminal (never with --no-input)."""

    def __init__(self, *, no_input: bool = False, yes: bool = False,
                 progress: Callable[[str, str], None] | None = None,
                 stdout_reserved: bool = False) -> None:
        self.no_input = no_input
        self.yes = yes
        self.live = progress
        # JSON output: stdout holds the report alone, so results and diffs go to stderr.
        self.stdout_reserved = stdout_reserved

    def progress(self, subject: str, message: str) -> None:
        """Shown in the live table when there is one (a terminal, table output)."""
        if self.live is not None:
            self.live(subject, message)

    def step(self, message: str) -> None:
        """A line on stderr."""
        err.print(Text(message))

    def info(self, message: str) -> None:
        """A line on stdout (stderr when stdout is reserved for JSON)."""
        if self.stdout_reserved:
            err.print(Text(message))
        else:
            line(message)

    def warning(self, message: str) -> None:
        """`warning: ...` on stderr."""
        warning(message)

    def diff(self, text: str) -> None:
        """A unified diff on stdout, as it is (stderr when stdout is reserved for JSON)."""
        write(text, err if self.stdout_reserved else out)

    def confirm(self, question: str, refused: str) -> None:
        """Yes with --yes; else ask at the terminal; refuse when there is none."""
        if self.yes:
            return
        if self.no_input or not is_interactive():
            raise UsageError(refused)
        if self.stdout_reserved:  # a prompt would land in the JSON document on stdout
            raise UsageError(f"{refused} (-o json never prompts)")
        import typer

        if not typer.confirm(question, default=False):
            raise Declined()

    def unable_to_ask(self) -> str | None:
        """Why no secret can be asked for: --no-input, or no terminal."""
        if self.no_input:
            return "input is disabled"
        if not is_interactive():
            return "there is no terminal to ask on"
        return None

    def ask_secret(self, label: str, found: str) -> str:
        """A hidden prompt, after saying why it is asked."""
        import getpass

        warning(f"{label}: {found}; asking for it (input hidden)")
        try:
            return getpass.getpass(f"{label}: ")
        except EOFError:
            return ""


def write(text: str, to: Console | None = None) -> None:
    """Text as it is (a diff: tabs kept, so that it can be piped to patch), ending with a
    newline, on stdout or `to`."""
    target = to or out
    if text:
        target.file.write(text if text.endswith("\n") else text + "\n")
        target.file.flush()
