"""Every reader agrees with the others and with the bytes, on real recordings from other tools.

The corpus is tests/data/recordings-corpus (asciinema's own fixtures, see its README), the
damaged variants derived from it here (no final newline, trailing blank lines, cut mid-line),
tsrecorder-shaped SSH and kubectl recordings, and files larger than `list`'s whole-file read so
its head-and-tail path is checked too. `truth()` reads each file whole, by the rules in
docs/recordings.md, independently of tsops; then `list`, `show`, `export`, `cat`, `play` and
`search` must each say the same: what the file is, its header, event count, duration, whether
it is truncated, and the text.
"""

from __future__ import annotations

import datetime
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.sim.recorder.cast import (
    OutputChunk,
    SourceNode,
    cast_header,
    go_json,
    header_line,
    render_cast,
)
from tsops.cli import recordings as cli
from tsops.errors import TsopsError
from tsops.flows.recordings import RecordingsLocation
from tsops.recordings import catalog
from tsops.recordings.catalog import Filter, Problem, scan
from tsops.recordings.export import write_event
from tsops.recordings.integrity import Digest, digest
from tsops.recordings.reader import Stream
from tsops.recordings.search import compile_pattern, search_one
from tsops.recordings.store import LocalStore, ObjectInfo

CORPUS = Path(__file__).resolve().parents[1] / "data" / "recordings-corpus"
NODE = "nCORPUSCNTRL"
START = datetime.datetime(2026, 11, 30, 8, 0, tzinfo=datetime.UTC)
ALICE = SourceNode("alice-laptop.tail1234.ts.net", "nAL1CE5CNTRL", login="alice@example.com",
                   user_id=4401)


# --- the bytes, read whole and by the documented rules alone -------------------------------


@dataclass(frozen=True)
class Truth:
    """What a file is, read whole: its kind, header, events, duration, truncation and text."""

    kind: str  # "recording", or the problem every reader must name
    header: dict[str, Any] | None = None
    events: int = 0  # complete event lines, of every kind
    outputs: int = 0  # output events given to cat, play and search (a last one unterminated too)
    bad_lines: int = 0  # terminated lines, not blank, that are not events
    duration: float | None = None
    truncated: bool = False
    text: str = ""  # the output events' text, a complete last event without newline included


def _event(line: bytes) -> list[Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if (isinstance(value, list) and len(value) == 3 and type(value[0]) in (int, float)
            and isinstance(value[1], str) and isinstance(value[2], str)):
        return value
    return None


def truth(data: bytes) -> Truth:
    """The facts of one file, worked out from its bytes whole."""
    if not data:
        return Truth("empty")
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("version") == 1:
        return Truth("asciicast-v1")
    if re.match(rb'\s*\{\s*"version"\s*:\s*1\s*,', data):  # a v1 document, damaged
        return Truth("asciicast-v1")
    first, newline, rest = data.partition(b"\n")
    try:
        header = json.loads(first)
    except ValueError:
        return Truth("bad-header")
    if not isinstance(header, dict) or header.get("version") != 2:
        return Truth("bad-header")
    if not newline:
        return Truth("recording", header, truncated=True)
    lines = rest.split(b"\n")
    after_last_newline = lines.pop()
    events = [e for e in map(_event, lines) if e is not None]
    text = "".join(e[2] for e in events if e[1] == "o")
    last = _event(after_last_newline)
    if last is not None and last[1] == "o":
        text += last[2]
    truncated = bool(after_last_newline) or (bool(lines) and (
        not lines[-1].strip() or _event(lines[-1]) is None))
    outputs = sum(e[1] == "o" for e in events) + (last is not None and last[1] == "o")
    bad_lines = sum(1 for line in lines if line.strip() and _event(line) is None)
    return Truth("recording", header, events=len(events),
                 duration=float(events[-1][0]) if events else None, truncated=truncated,
                 text=text, outputs=outputs, bad_lines=bad_lines)


# --- the corpus ----------------------------------------------------------------------------


def tsrecorder_ssh(count: int) -> bytes:
    """An SSH session as tsrecorder stores it (header from the simulator, Go's encoding)."""
    header = cast_header(source=ALICE, ssh_user="alice", local_user="root", started=START)
    return render_cast(header, [OutputChunk(0.25 * i, f"line {i}: \x1b[32mok\x1b[0m\r\n")
                                for i in range(1, count + 1)])


def tsrecorder_kubectl() -> bytes:
    """A `kubectl exec` session as Tailscale's Kubernetes API server proxy sends it: its header
    has no SSH fields (sshUser, localUser, connectionID empty, env null) and a `kubernetes`
    object with the Go field names; resize events follow the terminal."""
    header = {
        "version": 2, "width": 120, "height": 40, "timestamp": int(START.timestamp()),
        "command": "/bin/sh -c psql", "srcNode": "alice-laptop.tail1234.ts.net",
        "srcNodeID": "nAL1CE5CNTRL", "srcNodeUserID": 4401, "srcNodeUser": "alice@example.com",
        "env": None, "sshUser": "", "localUser": "", "connectionID": "",
        "kubernetes": {"PodName": "db-0", "Namespace": "prod", "Container": "postgres",
                       "SessionType": "exec"},
    }
    body = b"".join([
        b'[0.1,"o",' + go_json("psql (16.1)\r\n").encode() + b"]\n",
        b'[0.5,"r","100x30"]\n',
        b'[1.5,"o",' + go_json("app=# select 1;\r\n").encode() + b"]\n",
    ])
    return header_line(header) + body


def variants(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """A complete recording and the damage an upload or an editor can do to its end."""
    yield name, data
    if data.endswith(b"\n") and data.count(b"\n") > 1:
        yield f"{name}-no-final-newline", data[:-1]
        yield f"{name}-trailing-blank-lines", data + b"\n\n"
        yield f"{name}-trailing-spaces", data + b"  "
        yield f"{name}-cut-mid-line", data[:-6]
        yield f"{name}-last-line-not-an-event", data + b"Connection to web1 closed.\n"


def corpus() -> dict[str, bytes]:
    """Every file of the corpus, by the recording name it gets in the store."""
    files: dict[str, bytes] = {}
    for path in sorted(CORPUS.iterdir()):
        if path.name != "README.md":
            files.update(variants(path.stem, path.read_bytes()))
    files.update(variants("tsrecorder-ssh", tsrecorder_ssh(5)))
    files.update(variants("tsrecorder-kubectl", tsrecorder_kubectl()))
    big = tsrecorder_ssh(1500)  # larger than what `list` reads whole: head and tail only
    assert len(big) > catalog.WHOLE
    files.update(variants("tsrecorder-big", big))
    long_last = big + b'[999.5,"o","' + b"y" * (3 * catalog.TAIL) + b'\\r\\n"]\n'
    files.update(variants("tsrecorder-long-last-write", long_last))
    files["tsrecorder-header-only"] = header_line(cast_header(
        source=ALICE, ssh_user="alice", started=START))
    files["tsrecorder-header-unterminated"] = files["tsrecorder-header-only"][:-1]
    files["tsrecorder-blank-middle-line"] = tsrecorder_ssh(2).replace(b"]\n", b"]\n\n", 1)
    files["tsrecorder-bad-middle-line"] = tsrecorder_ssh(3).replace(b"]\n", b"]\n{oops\n", 2)
    files["empty"] = b""
    files["v1-one-line"] = (b'{"version": 1, "width": 80, "height": 24, "duration": 1.5, '
                            b'"stdout": [[0.5, "a"], [1.0, "b"]]}')
    return files


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """The corpus as a tsrecorder destination directory."""
    root = tmp_path_factory.mktemp("corpus")
    (root / NODE).mkdir()
    for name, data in corpus().items():
        (root / NODE / f"{name}.cast").write_bytes(data)
    return LocalStore(root)


CASES = sorted(corpus())


def test_the_corpus_holds_every_shape_the_docs_name() -> None:
    facts = {name: truth(data) for name, data in corpus().items()}
    kinds = {fact.kind for fact in facts.values()}
    assert kinds == {"recording", "asciicast-v1", "bad-header", "empty"}
    assert facts["server-v2-minimal"].truncated  # published without a final newline
    assert facts["server-v2-blank-lines"].truncated
    assert not facts["server-v2-full"].truncated
    # the reference counts every kind of event (output, resize, input) for the duration
    full = facts["server-v2-full"]
    assert (full.events, full.outputs, full.duration) == (5, 3, 8.456789)
    assert facts["server-v1-full"].kind == "asciicast-v1"
    assert facts["server-v3-minimal"].kind == "bad-header"
    assert sum(f.truncated for f in facts.values()) > 20


# --- every reader over every file ----------------------------------------------------------


def _id(name: str) -> str:
    return f"{NODE}/{name}"


def _listed(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    cli.run_list(RecordingsLocation(str(store.root)), Filter(), "start", False, "json")
    listed = json.loads(capsys.readouterr().out)
    return {"recordings": {r["id"]: r for r in listed["recordings"]},
            "problems": {(p["key"], p["kind"]) for p in listed["problems"]}}


@pytest.fixture(scope="module")
def listed(store: LocalStore) -> dict[str, Any]:
    """`list -o json` over the whole corpus, once."""
    found = scan(store)
    return {"recordings": {r.id: r for r in found.recordings},
            "problems": {(p.key, p.kind) for p in found.problems}}


@pytest.mark.parametrize("name", CASES)
def test_every_reader_agrees_with_the_bytes(name: str, store: LocalStore,
                                            listed: dict[str, Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = (store.root / NODE / f"{name}.cast").read_bytes()
    fact = truth(data)
    key = f"{NODE}/{name}.cast"
    source = RecordingsLocation(str(store.root))
    info = ObjectInfo(key, len(data))
    pattern = compile_pattern(r"\S", False)
    if fact.kind != "recording":
        # list, show, cat, play, search and export all name the same problem
        assert (key, fact.kind) in listed["problems"]
        assert _id(name) not in listed["recordings"]
        refused = f"cannot read recording .*: {fact.kind}: "
        with pytest.raises(TsopsError, match=refused):
            cli.run_show(source, _id(name), "json")
        with pytest.raises(TsopsError, match=refused):
            cli.run_cat(source, _id(name), plain=False)
        with pytest.raises(TsopsError, match=refused):
            cli.run_play(source, _id(name), 1e9, None)
        result = search_one(store, info, pattern, 0)
        assert result.recording is None
        assert [p.kind for p in result.problems] == [fact.kind]
        return

    # list (the catalog reads the head and the tail only)
    recording = listed["recordings"][_id(name)]
    assert (recording.duration, recording.truncated) == (fact.duration, fact.truncated)
    assert ((key, "truncated") in listed["problems"]) == fact.truncated
    assert fact.header is not None
    assert recording.header.timestamp == fact.header.get("timestamp")
    assert recording.header.width == fact.header.get("width", 0)
    assert recording.header.command == (fact.header.get("command") or "")
    kubernetes = fact.header.get("kubernetes") or {}
    assert recording.header.pod == kubernetes.get("PodName", "")

    # show -o json
    cli.run_show(source, _id(name), "json")
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert (shown["duration"], shown["truncated"]) == (fact.duration, fact.truncated)
    assert ("warning: truncated:" in err) == fact.truncated
    assert (shown["pod"], shown["namespace"]) == (kubernetes.get("PodName"),
                                                  kubernetes.get("Namespace"))

    # export --format jsonl --text (one event, with the text)
    sink = io.StringIO()
    problems = write_event(sink, store, recording, "jsonl", {}, with_text=True)
    exported = json.loads(sink.getvalue())
    assert (exported["duration"], exported["truncated"]) == (fact.duration, fact.truncated)
    assert all(p.kind != "truncated" for p in problems)  # already reported by the listing
    assert exported["text"] == re.sub(r"\x1b\[[0-9;]*m", "", fact.text).replace("\r", "")

    # cat --raw: exactly the output events' text, the complete last event included
    cli.run_cat(source, _id(name), plain=False, raw=True)
    out, err = capsys.readouterr()
    assert out == fact.text
    assert ("warning: truncated:" in err) == fact.truncated

    # play --raw at full speed: the same text, then a newline
    cli.run_play(source, _id(name), 1e9, None, raw=True)
    out, err = capsys.readouterr()
    assert out == fact.text + "\n"
    assert ("warning: truncated:" in err) == fact.truncated

    # the stream under cat, play, search and export: event counts and damage
    stream = Stream(store, key)
    assert sum(map(len, stream.batches())) == fact.outputs
    assert (stream.last_time, stream.truncated) == (fact.duration, fact.truncated)
    assert stream.report.bad_lines == fact.bad_lines

    # seal hashes the file and judges its end the same way
    digested = digest(store, info)
    assert isinstance(digested, Digest)
    assert any(p.kind == "truncated" for p in digested.problems) == fact.truncated
    assert {p.detail for p in digested.problems} <= {recording.ending}

    # search, reading the whole file once (no filter): the same recording facts
    result = search_one(store, info, pattern, 0)
    assert result.recording is not None
    assert (result.recording.duration, result.recording.truncated) == (fact.duration,
                                                                       fact.truncated)
    assert (result.recording.ending, result.recording.header) == (recording.ending,
                                                                  recording.header)
    assert any(p.kind == "truncated" for p in result.problems) == fact.truncated
    shown_lines = [m.line for m in result.matches]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", fact.text).replace("\r", "")
    assert shown_lines == [line for line in plain.split("\n") if line.strip()]


def test_list_json_agrees_with_the_catalog(store: LocalStore, listed: dict[str, Any],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cli_listed = _listed(store, capsys)
    assert cli_listed["problems"] == listed["problems"]
    assert {i: (r["duration"], r["truncated"]) for i, r in cli_listed["recordings"].items()} == {
        i: (r.duration, r.truncated) for i, r in listed["recordings"].items()}


def test_a_last_event_without_newline_is_truncated_with_the_event_before_it(
        store: LocalStore, listed: dict[str, Any]) -> None:
    recording = listed["recordings"][_id("server-v2-minimal")]
    assert (recording.duration, recording.truncated) == (5.678987, True)
    assert recording.ending == "the last event has no final newline"
    result = search_one(store, recording, compile_pattern("jaźń", False), 0)
    assert [(m.line, m.offset) for m in result.matches] == [("foo barbaz quxżółć jaźń", 1.234567)]
    blank = listed["recordings"][_id("server-v2-blank-lines")]
    assert (blank.duration, blank.ending) == (8.456789, "the file ends with blank lines")


def test_damage_kinds_are_named_the_same_by_every_reader(store: LocalStore,
                                                         listed: dict[str, Any]) -> None:
    problems = {(key.split("/")[1], kind) for key, kind in listed["problems"]
                if kind != "truncated"}
    assert problems == {
        ("empty.cast", "empty"), ("server-v1-full.cast", "asciicast-v1"),
        ("server-v1-minimal.cast", "asciicast-v1"), ("v1-one-line.cast", "asciicast-v1"),
        ("server-v3-minimal.cast", "bad-header"),
        # the damaged variants of v1 and v3 files are no better
        *{(f"{stem}-{damage}.cast", kind)
          for stem, kind in (("server-v1-full", "asciicast-v1"),
                             ("server-v1-minimal", "asciicast-v1"),
                             ("server-v3-minimal", "bad-header"))
          for damage in ("no-final-newline", "trailing-blank-lines", "trailing-spaces",
                         "cut-mid-line", "last-line-not-an-event")},
    }
    broken = search_one(store, listed["recordings"][_id("server-v2-broken")],
                        compile_pattern("x", False), 0)
    assert [(p.kind, p.detail) for p in broken.problems] == [
        ("bad-event", "1 line(s) are not events")]


def test_kubectl_sessions_are_shown_filtered_and_exported(
        store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(store.root))
    kubectl = Filter(pods=("prod/db-0",), namespaces=("prod",), containers=("postgres",),
                     session_types=("exec",))
    cli.run_list(source, kubectl, "start", False, "table")
    out, _ = capsys.readouterr()
    rows = out.splitlines()
    assert rows[0].split()[:6] == ["ID", "NODE", "START", "(UTC)", "DURATION", "SESSION"]
    assert len(rows) == 1 + 6 + 1  # the recording and its five damaged variants, a summary
    assert all("kubectl-exec prod/db-0/postgres" in r for r in rows[1:7])
    for other in (Filter(pods=("db-1",)), Filter(namespaces=("staging",)),
                  Filter(session_types=("attach",))):
        kept = [r for r in scan(store).recordings if other.keeps(r)]
        assert kept == []
    ssh = [r.id for r in scan(store).recordings if Filter(session_types=("ssh",)).keeps(r)]
    assert ssh and not any("kubectl" in i for i in ssh)
    cli.run_export(source, kubectl, "ecs", False, None)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(events) == 6
    event = next(e for e in events if e["file"]["path"].endswith("tsrecorder-kubectl.cast"))
    assert event["orchestrator"] == {"type": "kubernetes", "namespace": "prod",
                                     "resource": {"type": "pod", "name": "db-0"}}
    assert event["container"] == {"name": "postgres"}
    assert event["event"]["action"] == "kubectl-session-recorded"
    assert event["labels"]["session_type"] == "exec"
    assert event["user"] == {"name": "alice@example.com"}
    assert event["event"]["duration"] == 1_500_000_000  # the resize event is not the last
    cli.run_export(source, Filter(session_types=("exec",)), "jsonl", False, None)
    flat = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {k: flat[k] for k in ("session", "pod", "namespace", "container")} == {
        "session": "kubectl-exec", "pod": "db-0", "namespace": "prod", "container": "postgres"}


def test_an_unknown_session_type_is_bad_input() -> None:
    from tsops.errors import UsageError

    with pytest.raises(UsageError, match="--session-type shell: expected one of ssh, exec"):
        cli.make_filter([], [], None, None, None, session_types=["shell"])


def test_problems_carry_the_reason(listed: dict[str, Any]) -> None:
    reasons = {r.id.split("/")[1]: r.ending for r in listed["recordings"].values()
               if r.id.startswith(f"{NODE}/tsrecorder-big")}
    assert reasons == {
        "tsrecorder-big": "",
        "tsrecorder-big-no-final-newline": "the last event has no final newline",
        "tsrecorder-big-trailing-blank-lines": "the file ends with blank lines",
        "tsrecorder-big-trailing-spaces": "the file ends with blank lines",
        "tsrecorder-big-cut-mid-line": "the last line is incomplete",
        "tsrecorder-big-last-line-not-an-event": "the last line is not an event",
    }
    problem = catalog.truncation(listed["recordings"][f"{NODE}/tsrecorder-big-cut-mid-line"])
    assert isinstance(problem, Problem)
    assert str(problem) == (f"truncated: {NODE}/tsrecorder-big-cut-mid-line.cast: "
                            "the last line is incomplete")


# --- the parser's rules, one by one --------------------------------------------------------


def test_kubernetes_header_fields_and_their_errors() -> None:
    from tsops.recordings.cast import CastError, parse_header

    line = (b'{"version":2,"width":0,"height":0,"timestamp":1,"srcNode":"a","srcNodeID":"n",'
            b'"env":null,"sshUser":"","localUser":"","connectionID":"",'
            b'"kubernetes":{"PodName":"web-0","Namespace":"shop","Container":"",'
            b'"SessionType":"attach"}}')
    header = parse_header(line)
    assert (header.pod, header.namespace, header.container, header.kind) == (
        "web-0", "shop", "", "kubectl-attach")
    # Go's decoder matches field names without regard to case; so does tsops
    assert parse_header(line.replace(b"PodName", b"podName")).pod == "web-0"
    assert parse_header(b'{"version":2,"timestamp":1}').kind == "ssh"
    for bad, detail in ((b'"kubernetes":[1]', "kubernetes is not an object"),
                        (b'"kubernetes":{"PodName":3}', "kubernetes.PodName is not a string")):
        with pytest.raises(CastError, match=detail) as raised:
            parse_header(b'{"version":2,"timestamp":1,' + bad + b"}")
        assert raised.value.kind == "bad-header"


def test_v1_is_named_only_for_a_v1_document() -> None:
    from tsops.recordings.cast import looks_v1

    assert looks_v1((CORPUS / "server-v1-full.json").read_bytes())
    assert looks_v1(b'  {"version": 1,\n  "width": 80,')  # cut short, still v1
    # a v2 header or event that mentions "version": 1 in a string is v2
    assert not looks_v1(b'{"version":2,"timestamp":1,"command":"echo \\"version\\": 1,"}\n')
    assert not looks_v1(b'{"version":2,"timestamp":1,"env":{"version": 1, "TERM":"xterm"}}\n')
    assert not looks_v1(b'[1.0, "o", "{\\"version\\": 1, "]\n')


def test_event_times_must_be_json_numbers() -> None:
    from tsops.recordings.cast import BlockReport, decode_block, event_time

    report = BlockReport()
    events = decode_block(b'[0.5,"o","a"]\n[NaN,"o","b"]\n[true,"o","c"]\n[1,"o","d"]\n',
                          report)
    assert events == [(0.5, "a"), (1.0, "d")]
    assert (report.bad_lines, report.last_time) == (2, 1.0)
    assert event_time(b'[Infinity,"o","x"]') is None
    assert event_time(b'[2,"r","80x24"]') == 2.0


def test_the_header_limit_is_the_same_for_list_and_the_stream(tmp_path: Path) -> None:
    from tsops.recordings.cast import HEADER_MAX, CastError

    (tmp_path / NODE).mkdir()
    for name, length in (("fits", HEADER_MAX - 40), ("too-long", HEADER_MAX + 1)):
        line = b'{"version":2,"timestamp":1,"command":"' + b"x" * length + b'"}'
        (tmp_path / NODE / f"{name}.cast").write_bytes(line + b'\n[1.5,"o","hi"]\n')
    store = LocalStore(tmp_path)
    found = scan(store)
    assert [r.id for r in found.recordings] == [f"{NODE}/fits"]
    assert [(p.key, p.kind) for p in found.problems] == [(f"{NODE}/too-long.cast",
                                                         "header-too-long")]
    assert sum(map(len, Stream(store, f"{NODE}/fits.cast").batches())) == 1
    with pytest.raises(CastError, match="header-too-long"):
        list(Stream(store, f"{NODE}/too-long.cast").batches())


def test_a_large_header_only_recording_is_complete_without_an_empty_read(tmp_path: Path) -> None:
    (tmp_path / NODE).mkdir()
    line = b'{"version":2,"timestamp":1,"command":"' + b"x" * (2 * catalog.WHOLE) + b'"}\n'
    (tmp_path / NODE / "quiet.cast").write_bytes(line)
    (tmp_path / NODE / "quiet-blank.cast").write_bytes(line + b"\n")
    found = {r.id: (r.duration, r.ending) for r in scan(LocalStore(tmp_path)).recordings}
    assert found == {f"{NODE}/quiet": (None, ""),
                     f"{NODE}/quiet-blank": (None, "the file ends with blank lines")}


def test_kubernetes_fields_are_inert_in_tables(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The kubernetes fields come from whoever wrote the header: shown visibly, like the rest."""
    (tmp_path / NODE).mkdir()
    header = {"version": 2, "timestamp": 1, "kubernetes": {
        "PodName": "db\x1b]0;owned\x07-0", "Namespace": "prod\x1b[2K", "Container": "c\u202e",
        "SessionType": "exec\x1b[8m"}}
    (tmp_path / NODE / "k.cast").write_bytes(header_line(header) + b'[1,"o","x"]\n')
    source = RecordingsLocation(str(tmp_path))
    cli.run_list(source, Filter(), "start", False, "table")
    listed = capsys.readouterr().out
    cli.run_show(source, f"{NODE}/k", "table")
    shown = capsys.readouterr().out
    for out in (listed, shown):
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "kubectl-exec^[[8m prod^[[2K/db^[]0;owned^G-0/c<U+202E>" in listed
    assert "db^[]0;owned^G-0" in shown
