"""How the library tells the operator what is happening, without printing.

Flows return reports; while they run, what an operator should see at once (a host's progress, a
warning, a step of a long operation) goes to an `Events` sink, and a question goes to its
`confirm`. The CLI passes one that writes to the terminal (tsops.cli.render.ConsoleEvents); tests
pass `Recorded`, which keeps everything for assertions. Nothing below tsops.cli prints, prompts or
exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tsops.errors import TsopsError, UsageError


class Declined(TsopsError):
    """The operator answered no: nothing was changed (exit 1)."""

    def __init__(self) -> None:
        super().__init__("nothing was changed")


class Events(Protocol):
    """Where a running flow reports what the operator should see now."""

    def progress(self, subject: str, message: str) -> None:
        """A host's (or the storage's) latest activity; shown live, then gone."""

    def step(self, message: str) -> None:
        """A step of a long operation (stderr in the CLI)."""

    def info(self, message: str) -> None:
        """A result line the operator reads (stdout in the CLI)."""

    def warning(self, message: str) -> None:
        """Something worth reading that does not stop the flow."""

    def diff(self, text: str) -> None:
        """A unified diff (of the policy file or the inventory)."""

    def confirm(self, question: str, refused: str) -> None:
        """Ask before changing anything; raise Declined on no, UsageError(refused) when there
        is nobody to ask."""

    def unable_to_ask(self) -> str | None:
        """Why nobody can be asked for input ("input is disabled"), or None when one can."""

    def ask_secret(self, label: str, found: str) -> str:
        """A secret typed at a hidden prompt ("" when nothing was typed); `found` says why it
        is asked for."""


@dataclass
class Recorded:
    """An Events sink that keeps everything (tests, and callers that want no output).

    `answer` is what confirm answers: True yes, False no, None nobody to ask.
    """

    answer: bool | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)

    def progress(self, subject: str, message: str) -> None:
        """Kept as ("progress", "subject: message")."""
        self.lines.append(("progress", f"{subject}: {message}"))

    def step(self, message: str) -> None:
        """Kept as ("step", message)."""
        self.lines.append(("step", message))

    def info(self, message: str) -> None:
        """Kept as ("info", message)."""
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        """Kept as ("warning", message)."""
        self.lines.append(("warning", message))

    def diff(self, text: str) -> None:
        """Kept as ("diff", text)."""
        self.lines.append(("diff", text))

    def confirm(self, question: str, refused: str) -> None:
        """Answer with `answer`."""
        self.lines.append(("confirm", question))
        if self.answer is None:
            raise UsageError(refused)
        if not self.answer:
            raise Declined()

    def unable_to_ask(self) -> str | None:
        """Nobody to ask unless a secret or an answer was given."""
        return None if self.secrets or self.answer is not None else "input is disabled"

    def ask_secret(self, label: str, found: str) -> str:
        """The secret kept under `label` ("" when none)."""
        self.lines.append(("secret", label))
        return self.secrets.get(label, "")

    def of(self, kind: str) -> list[str]:
        """The messages of one kind, in order."""
        return [text for k, text in self.lines if k == kind]


class Forwarding:
    """Passes everything on to the run's events; subclasses change one answer."""

    def __init__(self, events: Events) -> None:
        self.events = events

    def progress(self, subject: str, message: str) -> None:
        """Passed on."""
        self.events.progress(subject, message)

    def step(self, message: str) -> None:
        """Passed on."""
        self.events.step(message)

    def info(self, message: str) -> None:
        """Passed on."""
        self.events.info(message)

    def warning(self, message: str) -> None:
        """Passed on."""
        self.events.warning(message)

    def diff(self, text: str) -> None:
        """Passed on."""
        self.events.diff(text)

    def confirm(self, question: str, refused: str) -> None:
        """Passed on."""
        self.events.confirm(question, refused)

    def unable_to_ask(self) -> str | None:
        """Passed on."""
        return self.events.unable_to_ask()

    def ask_secret(self, label: str, found: str) -> str:
        """Passed on."""
        return self.events.ask_secret(label, found)


class Confirmed(Forwarding):
    """The run's events with every question answered yes (asked once, before the whole change)."""

    def confirm(self, question: str, refused: str) -> None:
        """Yes: the operator confirmed the whole change."""


class Unattended(Forwarding):
    """The run's events where nobody may be asked for a secret (credentials that only help)."""

    def unable_to_ask(self) -> str | None:
        """Input is disabled."""
        return "input is disabled"
