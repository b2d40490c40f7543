"""The HuJSON tree: printing a parsed text is the identity, values are right, errors locate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsops.errors import ExitCode
from tsops.policy import hujson
from tsops.policy.hujson import HuJSONError
from tsops.policy.plan import DesiredRule, plan_policy

Drawn = tuple[str, Any]

comment_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12
)
block_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12).filter(
    lambda t: "*/" not in t and not t.endswith("*")
)
trivia_piece = st.one_of(
    st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\n\n"]),
    comment_text.map(lambda t: f"//{t}\n"),
    block_text.map(lambda t: f"/*{t}*/"),
)
trivia = st.lists(trivia_piece, max_size=3).map("".join)

scalars: st.SearchStrategy[Drawn] = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=10).flatmap(
        lambda s: st.sampled_from([(json.dumps(s), s), (json.dumps(s, ensure_ascii=False), s)])
    ),
    st.integers(-(10**12), 10**12).map(lambda n: (str(n), n)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (json.dumps(f), f)),
    st.sampled_from([("true", True), ("false", False), ("null", None)]),
)


@st.composite
def _array(draw: st.DrawFn, children: st.SearchStrategy[Drawn]) -> Drawn:
    items = draw(st.lists(children, max_size=4))
    text = "["
    for index, (item_text, _) in enumerate(items):
        text += draw(trivia) + item_text + draw(trivia)
        if index < len(items) - 1 or draw(st.booleans()):
            text += ","
    return text + draw(trivia) + "]", [value for _, value in items]


@st.composite
def _object(draw: st.DrawFn, children: st.SearchStrategy[Drawn]) -> Drawn:
    keys = draw(st.lists(st.text(max_size=6), max_size=4, unique=True))
    text, value = "{", {}
    for index, key in enumerate(keys):
        item_text, item = draw(children)
        text += (draw(trivia) + json.dumps(key, ensure_ascii=draw(st.booleans())) + draw(trivia)
                 + ":" + draw(trivia) + item_text + draw(trivia))
        if index < len(keys) - 1 or draw(st.booleans()):
            text += ","
        value[key] = item
    return text + draw(trivia) + "}", value


values: st.SearchStrategy[Drawn] = st.recursive(
    scalars, lambda children: st.one_of(_array(children), _object(children)), max_leaves=12
)


@st.composite
def documents(draw: st.DrawFn) -> Drawn:
    """A HuJSON text with trivia everywhere, and the value it stands for."""
    text, value = draw(values)
    return draw(trivia) + text + draw(trivia), value


@given(documents())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_print_of_parse_is_the_identity(drawn: Drawn) -> None:
    text, value = drawn
    document = hujson.parse(text)
    assert hujson.print_tree(document) == text
    assert hujson.to_python(document.value) == value


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, list[str], list[Any]]:
    """A policy with operator ssh rules and a unique comment in many trivia slots."""
    counter = iter(range(1000))

    def note() -> str:
        kind = draw(st.sampled_from(["line", "block", "none"]))
        number = next(counter)
        if kind == "line":
            return f" // note {number}\n" + draw(st.sampled_from(["", "  ", "\t"]))
        if kind == "block":
            return f" /* note {number} */ "
        return draw(st.sampled_from(["", " ", "\n  "]))

    rules = draw(st.lists(st.fixed_dictionaries({
        "action": st.sampled_from(["accept", "check"]),
        "src": st.sampled_from([["autogroup:member"], ["group:sre"], ["*"]]),
        "dst": st.sampled_from([["autogroup:self"], ["tag:web"]]),
        "users": st.sampled_from([["root"], ["autogroup:nonroot"]]),
    }), max_size=3))
    rule_texts = [note() + json.dumps(rule) + note() for rule in rules]
    trailing = draw(st.booleans())
    ssh = "[" + ",".join(rule_texts) + ("," if trailing and rules else "") + note() + "]"
    members = [
        f'"groups"{note()}:{note()}{{"group:sre": ["a@example.com"]}}',
        f'"acls": [{note()}{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}{note()}]',
    ]
    if draw(st.booleans()):
        members.append(f'"tagOwners": {{{note()}"tag:web": []{note()}}}')
    if draw(st.booleans()):
        members.append(f'"ssh":{note()}{ssh}')
    else:
        rules = []
    order = draw(st.permutations(members))
    text = "{" + ",".join(note() + member for member in order) + note() + "}\n"
    return text, hujson.all_comments(hujson.parse(text)), rules


RULE = DesiredRule("sre", {"action": "accept", "src": ["group:sre"], "dst": ["tag:server"],
                           "users": ["root"], "recorder": ["tag:recorder"],
                           "enforceRecorder": True}, "tag:recorder", True)


@given(policies())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_patch_keeps_every_comment_and_operator_rule(drawn: tuple[str, list[str], Any]) -> None:
    text, notes, rules = drawn
    plan = plan_policy(text, [RULE], ["tag:server", "tag:recorder"])
    after = hujson.parse(plan.after)
    kept = [c for c in hujson.all_comments(after) if "tsops:" not in c]
    assert kept == notes
    ssh = hujson.to_python(after.value)["ssh"]
    assert ssh[: len(rules)] == rules
    assert ssh[len(rules):] == [RULE.body]
    assert not plan_policy(plan.after, [RULE], ["tag:server", "tag:recorder"]).changed


@pytest.mark.parametrize(("text", "where"), [
    ("", "1:1"),
    ("{\n  \"a\": 1,,\n}", "2:10"),
    ("{\n  'a': 1\n}", "2:3"),
    ("{\"a\": [1, 2,]\n \"b\": 2}", "2:2"),
    ("{\n\ta: 1}", "2:2"),
    ("[1, 2] extra", "1:8"),
    ("{\"a\": 0x10}", "1:7"),
    ("{\"a\": NaN}", "1:7"),
    ("{\"a\": 1} /* open", "1:10"),
    ("{\"a\": \"line\nbreak\"}", "1:12"),
    ("# hash comment\n{}", "1:1"),
    ("[,]", "1:2"),
    ("\ufeff{}", "1:1"),
    ("{\"a\": tru}", "1:7"),
])
def test_bad_hujson_names_line_and_column(text: str, where: str) -> None:
    with pytest.raises(HuJSONError) as caught:
        hujson.parse(text)
    assert caught.value.message.startswith(f"{where}: ")
    assert caught.value.exit_code == ExitCode.BAD_INPUT


@st.composite
def managed_policies(draw: st.DrawFn) -> tuple[str, list[Any]]:
    """An ssh array mixing operator rules and tsops rules (current, outdated or stale)."""
    counter = iter(range(1000))

    def note() -> str:
        number = next(counter)
        return draw(st.sampled_from([f" // op {number}\n\t\t", f" /* op {number} */ ", "\n\t\t"]))

    operator = {"action": "accept", "src": ["*"], "dst": ["autogroup:self"], "users": ["root"]}
    entries: list[str] = []
    operator_rules: list[Any] = []
    has_sre = False
    for index in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["operator", "current", "outdated", "stale"]))
        if kind == "operator":
            rule = dict(operator, users=[f"user{index}"])
            operator_rules.append(rule)
            entries.append(note() + json.dumps(rule) + note())
            continue
        if kind != "stale" and has_sre:
            kind = "stale"  # a second copy of one marker is left alone by design (and warned)
        has_sre = has_sre or kind != "stale"
        name = {"current": "sre", "outdated": "sre", "stale": f"gone{index}"}[kind]
        body = dict(RULE.body) if kind == "current" else dict(RULE.body, users=["old"])
        inner = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in body.items())
        entries.append(note() + "{\n\t\t\t// tsops: " + name + "\n\t\t\t" + inner + "\n\t\t}"
                       + note())
    trailing = "," if draw(st.booleans()) and entries else ""
    text = ('{\n\t"groups": {"group:sre": ["a@example.com"]}, // groups\n'
            '\t"ssh": [' + ",".join(entries) + trailing + note() + "],\n}\n")
    return text, operator_rules


@given(managed_policies())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_managed_rules_converge_and_operator_comments_stay(drawn: tuple[str, Any]) -> None:
    text, operator_rules = drawn
    before = hujson.all_comments(hujson.parse(text))
    plan = plan_policy(text, [RULE], ["tag:server"])
    after = hujson.parse(plan.after)
    ssh = hujson.to_python(after.value)["ssh"]
    assert [r for r in ssh if r != RULE.body] == operator_rules
    assert RULE.body in ssh
    operator_notes = [c for c in before if "tsops:" not in c]
    assert [c for c in hujson.all_comments(after) if "tsops:" not in c] == operator_notes
    assert not plan_policy(plan.after, [RULE], ["tag:server"]).changed


@pytest.mark.parametrize(("text", "where"), [
    ("[" * 5000 + "]" * 5000, "1:65"),
    ('{"a":' * 500 + "1" + "}" * 500, "1:321"),
    ("{\n" + '"a": {' * 70 + "}" * 70 + "}", "2:384"),
])
def test_deep_nesting_is_refused_before_the_recursion_limit(text: str, where: str) -> None:
    with pytest.raises(HuJSONError) as caught:
        hujson.parse(text)
    assert caught.value.message == f"{where}: nested more than {hujson.MAX_DEPTH} levels deep"
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_nesting_up_to_the_limit_parses() -> None:
    depth = hujson.MAX_DEPTH
    assert hujson.loads("[" * depth + "]" * depth) is not None


LF_POLICY = '{\n\t"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],\n\t"ssh": [],\n}\n'


def _inserted_lines(before: str, after: str) -> list[str]:
    """The lines of `after` that are not lines of `before`, with their line endings."""
    kept = set(before.splitlines(keepends=True))
    return [line for line in after.splitlines(keepends=True) if line not in kept]


def test_one_stray_crlf_line_does_not_make_inserted_lines_crlf() -> None:
    text = LF_POLICY.replace("\n", "\r\n", 1)
    after = plan_policy(text, [RULE], ["tag:server", "tag:recorder"]).after
    inserted = _inserted_lines(text, after)
    assert len(inserted) > 5
    assert all(line.endswith("\n") and not line.endswith("\r\n") for line in inserted), inserted
    assert after.count("\r\n") == 1


def test_a_crlf_file_with_one_stray_lf_line_gets_crlf_lines() -> None:
    text = LF_POLICY.replace("\n", "\r\n").replace("\r\n", "\n", 1)
    after = plan_policy(text, [RULE], ["tag:server", "tag:recorder"]).after
    inserted = _inserted_lines(text, after)
    assert len(inserted) > 5
    assert all(line.endswith("\r\n") for line in inserted), inserted
    assert after.count("\n") - after.count("\r\n") == 1


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n"])
@pytest.mark.parametrize("ssh", ['"ssh":[]', '"ssh":[{"action":"accept","src":["*"],'
                                 '"dst":["autogroup:self"],"users":["root"]}]', None])
def test_a_policy_written_on_one_line_stays_on_one_line(ending: str, ssh: str | None) -> None:
    members = ['"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]'] + ([ssh] if ssh else [])
    text = "{" + ",".join(members) + "}" + ending
    plan = plan_policy(text, [RULE], ["tag:server", "tag:recorder"])
    assert plan.changed
    assert plan.after.endswith("}" + ending)
    assert "\n" not in plan.after.removesuffix(ending)
    assert RULE.body in hujson.loads(plan.after)["ssh"]
    assert not plan_policy(plan.after, [RULE], ["tag:server", "tag:recorder"]).changed
