"""Policy coverage: Tailscale SSH's first match over every ssh rule, per inventory server.

Each case is a policy file patched by tsops for one managed rule (group:ops to tag:server as
root or any non-root user, recorded to tag:recorder and enforced), and the gaps the patched
file leaves for two servers: web1 (tag:server, tag:web) and db1 (tag:server, tag:db).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tsops.inventory.load import load_inventory
from tsops.policy import hujson
from tsops.policy.apply import plan_for
from tsops.policy.coverage import Coverage, Gap, Server
from tsops.policy.plan import DesiredRule, Placement, plan_policy, policy_coverage

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "coverage"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "policies"
SERVERS = (Server("web1", ("tag:server", "tag:web")), Server("db1", ("tag:server", "tag:db")))
OPS = DesiredRule("ops", {
    "action": "accept", "src": ["group:ops"], "dst": ["tag:server"],
    "users": ["root", "autogroup:nonroot"], "recorder": ["tag:recorder"],
    "enforceRecorder": True}, "tag:recorder", True)
HEAD = """{
  "groups": {"group:ops": ["alice@example.com", "bob@example.com"],
             "group:dev": ["carol@example.com", "alice@example.com"]},
  "tagOwners": {"tag:server": [], "tag:web": [], "tag:db": [], "tag:recorder": [],
                "tag:ci": []},
  "ssh": [
"""


def policy(*rules: str) -> str:
    """A policy whose ssh list holds these rules (one per line, from line 7 on)."""
    return HEAD + "".join(f"    {rule},\n" for rule in rules) + "  ],\n}\n"


def coverage(text: str, rules: tuple[DesiredRule, ...] = (OPS,),
             placement: Placement = "last") -> Coverage:
    """The coverage of `text` once tsops patched it for `rules`."""
    return plan_policy(text, rules, (), (), SERVERS, placement).coverage


def only(result: Coverage) -> Gap:
    """The one gap found."""
    assert len(result.gaps) == 1, result.lines()
    return result.gaps[0]


def rule(src: str, dst: str, users: str, extra: str = "", action: str = "accept") -> str:
    """One hand-written rule, on one line."""
    return (f'{{"action": "{action}", "src": [{src}], "dst": [{dst}], "users": [{users}]'
            f'{extra}}}')


RECORDED = ', "recorder": ["tag:recorder"], "enforceRecorder": true'
UNENFORCED = ', "recorder": ["tag:recorder"], "enforceRecorder": false'


def test_the_managed_rule_alone_is_clean() -> None:
    result = coverage(policy())
    assert result.clean and result.servers == ("web1", "db1")
    assert result.lines() == []


def test_an_earlier_rule_without_recorder_for_the_same_tag_is_a_gap_naming_rule_and_line() -> (
        None):
    gap = only(coverage(policy(rule('"group:ops"', '"tag:server"', '"root"'))))
    assert (gap.rule.index, gap.rule.line, gap.reason, gap.certain) == (0, 7, "no-recorder", True)
    assert gap.servers == ("web1", "db1")
    assert gap.sources == ("alice@example.com", "bob@example.com")
    assert gap.users == ("root",)
    assert gap.intended == "ops"
    assert gap.line() == (
        "coverage gap: web1, db1: ssh[0] (line 7): src [group:ops] dst [tag:server] users "
        "[root] matches first for alice@example.com, bob@example.com as root: no recorder; "
        "ahead of tsops rule 'ops'")


def test_a_group_holding_the_operator_captures_only_its_members_sessions() -> None:
    # alice is also in group:ops (tsops's rule would record her); carol is in no managed rule.
    ahead, alone = coverage(policy(rule('"group:dev"', '"tag:web"',
                                        '"autogroup:nonroot"'))).gaps
    assert (ahead.sources, ahead.intended) == (("alice@example.com",), "ops")
    assert (alone.sources, alone.intended) == (("carol@example.com",), None)
    for gap in (ahead, alone):
        assert (gap.rule.index, gap.servers, gap.users) == (0, ("web1",), ("\x00other",))
    assert ahead.line().endswith("as any other non-root user: no recorder; ahead of tsops "
                                 "rule 'ops'")
    assert alone.line().endswith("as any other non-root user: no recorder")


def test_autogroup_member_captures_every_member() -> None:
    ahead, alone = coverage(policy(rule('"autogroup:member"', '"tag:server"', '"root"'))).gaps
    assert ahead.sources == ("alice@example.com", "bob@example.com")
    assert alone.sources == ("carol@example.com", "other members")
    assert ahead.users == alone.users == ("root",)


def test_a_later_rule_for_the_same_sessions_is_not_shadowing() -> None:
    text = policy(rule('"group:ops"', '"tag:server"', '"root"'))
    assert coverage(text, placement="first").clean
    # Already after the managed rule in the file: never reached by those sessions.
    patched = plan_policy(policy(), (OPS,), ()).after
    later = patched.replace("  ],\n}", "    " + rule('"group:ops"', '"tag:server"', '"root"')
                            + ",\n  ],\n}")
    assert coverage(later).clean


def test_a_rule_for_sessions_tsops_does_not_manage_is_still_a_gap() -> None:
    gap = only(coverage(policy(rule('"tag:ci"', '"tag:db"', '"deploy"'))))
    assert (gap.servers, gap.sources, gap.users) == (("db1",), ("tag:ci",), ("deploy",))
    assert gap.intended is None
    assert gap.line().endswith("as deploy: no recorder")


def test_check_rules_grant_sessions_too() -> None:
    gap = only(coverage(policy(rule('"group:ops"', '"tag:server"', '"root"',
                                    ', "checkPeriod": "12h"', action="check"))))
    assert gap.reason == "no-recorder"
    assert coverage(policy(rule('"group:ops"', '"tag:server"', '"root"', RECORDED,
                                action="check"))).clean


def test_an_earlier_rule_recording_without_enforcement_is_a_gap_where_tsops_enforces() -> None:
    gap = only(coverage(policy(rule('"group:ops"', '"tag:server"', '"root"', UNENFORCED))))
    assert (gap.reason, gap.certain) == ("not-enforced", True)
    assert gap.line().endswith(
        "as root: recorder tag:recorder without enforceRecorder, which tsops rule 'ops' "
        "enforces; ahead of tsops rule 'ops'")
    relaxed = DesiredRule("ops", {**OPS.body, "enforceRecorder": False}, "tag:recorder", False)
    assert coverage(policy(rule('"group:ops"', '"tag:server"', '"root"', UNENFORCED)),
                    (relaxed,)).clean


def test_a_partial_users_overlap_names_only_the_users_captured() -> None:
    gap = only(coverage(policy(rule('"group:ops"', '"tag:server"', '"deploy", "backup"'))))
    assert gap.users == ("deploy", "backup")
    assert "as deploy, backup:" in gap.line()


def test_a_rule_for_another_tag_names_only_the_servers_it_reaches() -> None:
    gap = only(coverage(policy(rule('"group:ops"', '"tag:db"', '"root"'))))
    assert gap.servers == ("db1",)
    assert coverage(policy(rule('"group:ops"', '"tag:other"', '"root"'))).clean


def test_autogroup_self_and_logins_never_reach_tagged_servers() -> None:
    assert coverage(policy(rule('"autogroup:member"', '"autogroup:self"', '"root"'),
                           rule('"group:ops"', '"alice@example.com"', '"root"'))).clean


def test_localpart_maps_each_member_to_a_user_of_their_name() -> None:
    result = coverage(policy(rule('"autogroup:member"', '"tag:server"',
                                  '"localpart:*@example.com"')))
    assert {g.rule.index for g in result.gaps} == {0}
    assert [s for g in result.gaps for s in g.sources] == [
        "alice@example.com", "bob@example.com", "carol@example.com",
        "other members at example.com"]
    assert {u for g in result.gaps for u in g.users} == {"alice", "bob", "carol", "\x00other"}


def test_a_wildcard_and_a_tag_source() -> None:
    result = coverage(policy(rule('"*"', '"tag:web"', '"*"')))
    assert {g.servers for g in result.gaps} == {("web1",)}
    sources = [s for g in result.gaps for s in g.sources]
    assert "any tagged node" in sources and "other members" in sources
    assert all(g.users[0] == "root" for g in result.gaps)


def test_a_selector_that_cannot_be_evaluated_is_a_possible_gap() -> None:
    result = coverage(policy(rule('"autogroup:admin"', '"tag:server"', '"root"')))
    assert result.gaps and all(not g.certain for g in result.gaps)
    gap = result.gaps[0]
    assert gap.unknown == ("autogroup:admin",)
    assert gap.line().startswith("possible coverage gap: web1, db1: ssh[0] (line 7)")
    assert gap.line().endswith("(cannot evaluate autogroup:admin)")
    # Tagged nodes are never admins: no possible gap names them.
    assert "any tagged node" not in [s for g in result.gaps for s in g.sources]


def test_a_group_not_in_the_file_may_hold_anyone() -> None:
    # A group synced from the identity provider is not in `groups`.
    result = coverage(policy(rule('"group:eng@example.com"', '"tag:server"', '"root"')))
    assert result.gaps and all(not g.certain for g in result.gaps)
    assert all(g.unknown == ("group:eng@example.com",) for g in result.gaps)


def test_a_recording_rule_that_may_match_hides_nothing_behind_it() -> None:
    result = coverage(policy(rule('"autogroup:admin"', '"tag:server"', '"root"', RECORDED),
                             rule('"group:ops"', '"tag:server"', '"root"')))
    gap = only(result)
    assert (gap.rule.index, gap.certain) == (1, False)
    assert gap.unknown == ("autogroup:admin",)


def test_a_malformed_rule_is_a_possible_gap() -> None:
    result = coverage(policy('"not a rule"'))
    assert result.gaps and all(not g.certain for g in result.gaps)
    assert result.gaps[0].rule.describe() == "ssh[0] (line 7): not a well-formed rule"


def test_managed_first_puts_the_rules_ahead_and_the_coverage_is_clean() -> None:
    text = policy("// the break-glass rule, unrecorded\n    "
                  + rule('"group:ops"', '"tag:server"', '"root"'))
    assert not coverage(text).clean
    plan = plan_policy(text, (OPS,), (), (), SERVERS, "first")
    assert plan.coverage.clean
    rules = hujson.loads(plan.after)["ssh"]
    assert [r.get("recorder") for r in rules] == [["tag:recorder"], None]
    assert plan.after.index("tsops: ops") < plan.after.index("the break-glass rule")
    assert plan.added_rules == ("ops",)
    again = plan_policy(plan.after, (OPS,), (), (), SERVERS, "first")
    assert not again.changed


def test_managed_first_moves_a_rule_found_after_the_operators() -> None:
    text = policy(rule('"group:ops"', '"tag:server"', '"root"'))
    last = plan_policy(text, (OPS,), (), (), SERVERS, "last")
    assert [r.get("recorder") for r in hujson.loads(last.after)["ssh"]] == [
        None, ["tag:recorder"]]
    moved = plan_policy(last.after, (OPS,), (), (), SERVERS, "first")
    assert moved.changed_rules == ("ops",) and moved.added_rules == ()
    assert [r.get("recorder") for r in hujson.loads(moved.after)["ssh"]] == [
        ["tag:recorder"], None]
    assert moved.coverage.clean
    assert hujson.loads(moved.after) == hujson.loads(plan_policy(text, (OPS,), (), (), SERVERS,
                                                                 "first").after)


def test_managed_first_in_a_one_line_policy() -> None:
    text = ('{"groups": {"group:ops": ["alice@example.com"]}, "ssh": ['
            + rule('"group:ops"', '"tag:server"', '"root"') + "]}")
    plan = plan_policy(text, (OPS,), (), (), SERVERS, "first")
    assert plan.coverage.clean
    assert [r.get("recorder") for r in hujson.loads(plan.after)["ssh"]] == [
        ["tag:recorder"], None]


def test_the_line_named_is_the_line_in_the_file_as_it_is() -> None:
    # tsops declares new tags above the ssh list: the rule moves down in the patched text, but
    # the operator finds it where it is now.
    text = ('{\n  "groups": {"group:ops": ["alice@example.com"]},\n  "tagOwners": {\n'
            '    "tag:ci": [],\n  },\n  "ssh": [\n    '
            + rule('"group:ops"', '"tag:server"', '"root"') + ",\n  ],\n}\n")
    plan = plan_policy(text, (OPS,), ("tag:server", "tag:recorder"), (), SERVERS)
    gap = only(plan.coverage)
    assert text.splitlines()[gap.rule.line - 1].lstrip().startswith('{"action"')
    assert plan.after.splitlines()[gap.rule.line - 1].strip() != text.splitlines()[
        gap.rule.line - 1].strip()


def test_without_a_recording_managed_rule_nothing_is_checked() -> None:
    bare = DesiredRule("ops", {k: v for k, v in OPS.body.items()
                               if k not in ("recorder", "enforceRecorder")}, None, False)
    result = coverage(policy(rule('"group:ops"', '"tag:server"', '"root"')), (bare,))
    assert result.clean and result.servers == ()


def test_json_of_a_gap() -> None:
    gap = only(coverage(policy(rule('"group:ops"', '"tag:server"', '"root"'))))
    data: dict[str, Any] = gap.as_dict()
    assert data == {
        "servers": ["web1", "db1"], "rule": 0, "line": 7,
        "rule_text": "ssh[0] (line 7): src [group:ops] dst [tag:server] users [root]",
        "managed": None, "reason": "no-recorder", "certain": True,
        "sources": ["alice@example.com", "bob@example.com"], "users": ["root"],
        "intended": "ops", "unknown_selectors": [], "message": gap.line()}
    json.dumps(data)


def test_status_of_the_current_text_names_the_rules_lines_there() -> None:
    text = plan_policy(policy(rule('"group:ops"', '"tag:server"', '"root"')), (OPS,), ()).after
    result = policy_coverage(hujson.parse(text), (OPS,), SERVERS)
    assert [(g.rule.index, g.rule.line) for g in result.gaps] == [(0, 7)]


def test_the_corpus_gaps_match_golden() -> None:
    inventory = load_inventory(CORPUS / "inventory.yaml")
    lines = []
    for path in sorted(CORPUS.glob("*.hujson")):
        plan = plan_for(inventory, path.read_bytes().decode("utf-8"), path.name)
        lines += [f"{path.name}: {line}" for line in plan.coverage.lines()]
    text = "\n".join(lines) + "\n"
    golden = GOLDEN / "corpus.txt"
    if os.environ.get("TSOPS_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("count", [40])
def test_a_large_policy_is_evaluated(count: int) -> None:
    rules = [rule(f'"user{i}@example.com"', f'"tag:t{i}"', f'"u{i}"') for i in range(count)]
    result = coverage(policy(*rules, rule('"group:ops"', '"tag:web"', '"root"')))
    assert [g.rule.index for g in result.gaps] == [count]
