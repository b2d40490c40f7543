"""Every probe's parser against captured command output: tests/data/probes/<probe>/<case>.txt,
with the parser's arguments and the expected result in <case>.json.

The captures were made by running each probe's own command (on a lab host, or on a directory
of recordings for the migration and canary searches); a parser change that reads them
differently fails here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tsops.canary import found_probe, parse_found
from tsops.probe import Probe, ProbeFailed
from tsops.recorders.host import parse_probe
from tsops.remote import RunResult
from tsops.rotation.migrate import parse_listing, parse_read
from tsops.servers.facts import FACTS, NODE_STATUS, parse_status

DATA = Path(__file__).resolve().parents[1] / "data" / "probes"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: dataclasses.asdict(v)))


PARSERS: dict[str, Callable[..., Any]] = {
    "node-status": lambda output: parse_status(output),
    "canary-search": lambda output, root, wanted: parse_found(output, root, wanted),
    "migration-listing": lambda output, host: parse_listing(host, output),
    "migration-read": lambda output: {k: v.decode() for k, v in parse_read(output).items()},
    "recorder-facts": lambda output: parse_probe(output),
}
CASES = sorted((p.parent.name, p.stem) for p in DATA.glob("*/*.txt"))


def test_every_probe_has_captures_and_every_capture_a_parser() -> None:
    assert {probe for probe, _ in CASES} == set(PARSERS)
    assert {p.stem for p in DATA.glob("*/*.json")} == {case for _, case in CASES}


@pytest.mark.parametrize(("probe", "case"), CASES)
def test_captured_output_parses_to_what_was_expected(probe: str, case: str) -> None:
    output = (DATA / probe / f"{case}.txt").read_text()
    spec = json.loads((DATA / probe / f"{case}.json").read_text())
    assert _plain(PARSERS[probe](output, **spec["args"])) == spec["expected"]


class Host:
    """A host that answers one command with a scripted result, and nothing else."""

    name = "rec1"
    round_trips = 0

    def __init__(self, command: str, result: RunResult) -> None:
        self.command, self.result = command, result

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        assert script == self.command, f"unscripted command: {script!r}"
        return self.result

    def put(self, local: Path, remote: str) -> None:
        raise AssertionError("no upload expected")

    def close(self) -> None:
        """Nothing to close."""


def test_a_probe_runs_its_command_once_and_parses_the_output() -> None:
    output = (DATA / "canary-search" / "right-node-only.txt").read_text()
    wanted = {"tsops-canary-0123456789abcdef": "nodeA1CNTRL"}
    probe = found_probe("/srv/recordings", wanted, 0)
    assert probe.run(Host(probe.command, RunResult(0, output, ""))) == {
        "tsops-canary-0123456789abcdef": "nodeA1CNTRL/20261201T101500-1a2b.cast"}
    assert NODE_STATUS.run(Host(NODE_STATUS.command, RunResult(0, "", ""))) is None


def test_a_cut_off_output_is_one_line_naming_the_host() -> None:
    with pytest.raises(ProbeFailed) as caught:
        FACTS.run(Host(FACTS.command, RunResult(0, "@@tsops:os\nID=debian\n", "")))
    assert caught.value.message == "rec1: the fact probe's output was cut off"


def test_a_probe_that_must_succeed_names_its_exit_and_last_line() -> None:
    probe = Probe("reading /srv/recordings", "ls", str.split, must_succeed=True)
    failed = RunResult(2, "", "ls: cannot open directory\nls: permission denied\n")
    with pytest.raises(ProbeFailed) as caught:
        probe.run(Host("ls", failed))
    assert caught.value.message == (
        "rec1: reading /srv/recordings failed (exit 2): ls: permission denied")
