"""Fact parsing: captured probe outputs in tests/data/facts/ and the facts they must give."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tsops.servers.facts import ProbeError, parse_facts, parse_status

DATA = Path(__file__).resolve().parents[1] / "data" / "facts"
CASES = sorted(p.stem for p in DATA.glob("*.json"))


def test_every_capture_has_expected_facts() -> None:
    captures = {p.stem for p in DATA.glob("*.txt")} - {"truncated"}
    assert captures == set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_capture_parses_to_expected_facts(name: str) -> None:
    facts = parse_facts((DATA / f"{name}.txt").read_text())
    expected = json.loads((DATA / f"{name}.json").read_text())
    assert json.loads(json.dumps(asdict(facts))) == expected


def test_cut_off_output_is_an_error() -> None:
    with pytest.raises(ProbeError, match="cut off"):
        parse_facts((DATA / "truncated.txt").read_text())


def test_status_of_a_logged_out_node() -> None:
    status = parse_status('{"BackendState": "NeedsLogin", "Self": {"Online": false}}')
    assert status is not None
    assert (status.running, status.node_id, status.tags) == (False, None, ())


def test_status_garbage_means_no_status() -> None:
    assert parse_status("failed to connect to local tailscaled") is None
    assert parse_status("") is None
