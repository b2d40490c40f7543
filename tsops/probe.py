"""Probes: a read-only shell command and the pure function that parses its output.

Everything tsops learns from a host comes through a Probe, in the spirit of pyinfra's facts:
the command runs in one SSH round trip, the parser is a pure function tested with captured
outputs (tests/data/probes/<probe>/<case>.txt beside the expected <case>.json, read by
tests/unit/test_probes.py), and a failure becomes one operator's line naming the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from tsops.errors import TsopsError

if TYPE_CHECKING:
    from tsops.remote import RemoteLike

T = TypeVar("T")


class ProbeError(ValueError):
    """A probe's output is not what its command prints (cut off, or not our command)."""


class ProbeFailed(TsopsError):
    """A probe that must succeed exited non-zero, or its output could not be parsed."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.reason = message


@dataclass(frozen=True)
class Probe(Generic[T]):
    """A command and the parser of its output.

    `what` names the probe in messages ("reading /srv/recordings"); with `must_succeed`, a
    non-zero exit is a failure (otherwise the parser judges the output alone).
    """

    what: str
    command: str
    parse: Callable[[str], T]
    must_succeed: bool = False

    def run(self, remote: RemoteLike) -> T:
        """Run the command on the host (one round trip) and parse what it printed."""
        result = remote.run(self.command)
        if self.must_succeed and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise ProbeFailed(remote.name, f"{self.what} failed (exit {result.exited}): "
                                           f"{detail[-1] if detail else 'no output'}")
        try:
            return self.parse(result.stdout)
        except ProbeError as error:
            raise ProbeFailed(remote.name, str(error)) from error
