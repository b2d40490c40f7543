"""Realistic policy files patched for one inventory: golden outputs, and nothing else touched.

Each file in tests/data/policies/ is patched for tests/data/policies/inventory.yaml. Outside
the edited spans the output is byte-identical; an edited span is an insertion or exactly one
tsops-managed rule; the operator's comments and rules survive in order; the result passes the
control simulator's validator (syntax, references, the policy's own tests); patching again
changes nothing. Set TSOPS_UPDATE_GOLDEN=1 to rewrite tests/golden/policies/.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.sim.control import policy as simulator
from tsops.inventory.load import LoadedInventory, load_inventory
from tsops.policy import hujson
from tsops.policy.apply import plan_for
from tsops.policy.plan import PolicyPlan, marker_of

DATA = Path(__file__).resolve().parents[1] / "data" / "policies"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policies"
CORPUS = sorted(p.name for p in DATA.glob("*.hujson"))


@pytest.fixture(scope="module")
def inventory() -> LoadedInventory:
    """The inventory every corpus file is patched for."""
    return load_inventory(DATA / "inventory.yaml")


def _read(name: str) -> str:
    return (DATA / name).read_bytes().decode("utf-8")


def _plan(inventory: LoadedInventory, name: str) -> PolicyPlan:
    return plan_for(inventory, _read(name), name)


def test_the_corpus_is_large_and_valid() -> None:
    assert len(CORPUS) >= 15
    for name in CORPUS:
        _, invalid = simulator.check(_read(name))
        assert invalid is None, (name, invalid and invalid.message)


@pytest.mark.parametrize("name", CORPUS)
def test_patched_file_matches_golden(inventory: LoadedInventory, name: str) -> None:
    after = _plan(inventory, name).after
    golden = GOLDEN / name
    if os.environ.get("TSOPS_UPDATE_GOLDEN"):
        golden.write_bytes(after.encode("utf-8"))
    assert after == golden.read_bytes().decode("utf-8")


def _managed_spans(text: str) -> list[tuple[int, int]]:
    """Where the managed rules are in the original text (value start to end)."""
    top = hujson.parse(text).value
    assert isinstance(top, hujson.Object)
    ssh = top.get("ssh")
    if ssh is None or not isinstance(ssh.value, hujson.Array):
        return []
    return [(e.value.start, e.value.end) for e in ssh.value.elements if marker_of(e.value)]


@pytest.mark.parametrize("name", CORPUS)
def test_only_the_edited_spans_change(inventory: LoadedInventory, name: str) -> None:
    before = _read(name)
    plan = _plan(inventory, name)
    managed = _managed_spans(before)
    cursor_before = cursor_after = 0
    for splice in sorted(plan.splices, key=lambda s: (s.start, s.end)):
        untouched = before[cursor_before:splice.start]
        assert plan.after[cursor_after:cursor_after + len(untouched)] == untouched
        cursor_after += len(untouched)
        if splice.start != splice.end and before[splice.start:splice.end].strip() != ",":
            removed = before[splice.start:splice.end]
            assert any(start >= splice.start and end <= splice.end for start, end in managed)
            assert any(removed.strip().rstrip(",").strip() == before[start:end]
                       for start, end in managed), removed
        assert plan.after[cursor_after:cursor_after + len(splice.text)] == splice.text
        cursor_after += len(splice.text)
        cursor_before = splice.end
    assert plan.after[cursor_after:] == before[cursor_before:]


def _operator_rules(text: str) -> list[Any]:
    top = hujson.parse(text).value
    assert isinstance(top, hujson.Object)
    ssh = top.get("ssh")
    if ssh is None or not isinstance(ssh.value, hujson.Array):
        return []
    return [hujson.to_python(e.value) for e in ssh.value.elements if not marker_of(e.value)]


def _comments_outside_managed(text: str) -> list[str]:
    found = hujson.all_comments(hujson.parse(text))
    inside = [c for start, end in _managed_spans(text)
              for c in hujson.all_comments(hujson.parse(text[start:end]))]
    for comment in inside:
        found.remove(comment)
    return found


@pytest.mark.parametrize("name", CORPUS)
def test_operator_content_survives_and_the_result_is_valid(
    inventory: LoadedInventory, name: str
) -> None:
    before = _read(name)
    plan = _plan(inventory, name)
    assert _operator_rules(plan.after) == _operator_rules(before)
    assert _comments_outside_managed(plan.after) == _comments_outside_managed(before)
    owners_before = hujson.loads(before).get("tagOwners", {})
    owners_after = hujson.loads(plan.after)["tagOwners"]
    assert {t: owners_after[t] for t in owners_before} == owners_before
    _, invalid = simulator.check(plan.after)
    assert invalid is None, (invalid and invalid.message, invalid and invalid.data)
    again = plan_for(inventory, plan.after, name)
    assert not again.changed
    assert again.splices == ()


def test_outdated_and_stale_rules_are_rewritten_and_removed(inventory: LoadedInventory) -> None:
    outdated = _plan(inventory, "10-managed-outdated.hujson")
    assert outdated.changed_rules == ("sre-to-servers",)
    assert outdated.added_rules == ("devs-to-web",)
    assert "// A note after the managed rule, kept." in outdated.after
    stale = _plan(inventory, "11-managed-stale.hujson")
    assert stale.removed_rules == ("old-rule",)
    assert "tsops: old-rule" not in stale.after
    assert '"tag:old": [], // no longer used by tsops' in stale.after


def test_a_moved_and_reformatted_rule_is_recognised(inventory: LoadedInventory) -> None:
    plan = _plan(inventory, "18-managed-moved-and-reformatted.hujson")
    assert not plan.changed
    # The operator moved devs-to-web (not enforced) above sre-to-servers (enforced): alice,
    # in group:sre, reaches web1 as a non-root user through the rule that does not enforce.
    [gap] = plan.coverage.gaps
    assert (gap.rule.managed, gap.reason, gap.intended) == (
        "devs-to-web", "not-enforced", "sre-to-servers")


def test_an_earlier_rule_without_recorder_is_a_coverage_gap(
    inventory: LoadedInventory,
) -> None:
    plan = _plan(inventory, "12-conflict-earlier-rule.hujson")
    [gap] = plan.coverage.gaps
    assert gap.line().startswith("coverage gap: web1, db1: ssh[0] (line 7): src [group:sre]")
    assert "no recorder; ahead of tsops rule 'sre-to-servers'" in gap.line()
    clean = [name for name in CORPUS if not _plan(inventory, name).coverage.gaps]
    assert len(clean) == len(CORPUS) - 4


def test_missing_port_22_is_warned(inventory: LoadedInventory) -> None:
    plan = _plan(inventory, "14-grants-without-22.hujson")
    assert len(plan.warnings) == 2
    assert "group:sre to reach tag:server on port 22" in plan.warnings[0]
    assert "autogroup:member to reach tag:web on port 22" in plan.warnings[1]
    for name in ("01-default-tabs.hujson", "02-no-ssh-key.hujson", "09-four-spaces-json.hujson",
                 "17-tests-and-sshtests.hujson"):
        assert _plan(inventory, name).warnings == (), name


def test_existing_owners_are_kept(inventory: LoadedInventory) -> None:
    plan = _plan(inventory, "13-tagowners-kept.hujson")
    owners = hujson.loads(plan.after)["tagOwners"]
    assert owners["tag:server"] == ["group:platform"]
    assert owners["tag:recorder"] == ["group:platform", "group:sre"]
    assert owners["tag:web"] == []
    assert plan.added_tags == ("tag:web",)


def test_line_endings_and_non_ascii_are_kept(inventory: LoadedInventory) -> None:
    crlf = _plan(inventory, "05-crlf.hujson").after
    assert "\n" not in crlf.replace("\r\n", "")
    accents = _plan(inventory, "06-non-ascii.hujson").after
    assert "« Plateforme » 🛡️" in accents and "zoë@example.com" in accents
