"""The one family of errors tsops raises on purpose, and the exit code each maps to.

Every error carries a sentence for the operator. The CLI turns them into exit codes in one
place (tsops.cli.app); any other exception is a bug and shows a traceback only with --debug.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every tsops command."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    DRIFT = 3


class TsopsError(Exception):
    """Base of every error an operator may see; `exit_code` says how the CLI exits."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(TsopsError):
    """A command was called with arguments that cannot work."""

    exit_code = ExitCode.BAD_INPUT


class InventoryError(TsopsError):
    """The inventory file is unreadable or invalid; `problems` lists every finding."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
