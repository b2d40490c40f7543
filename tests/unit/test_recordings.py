"""Recordings: parsing, list, show, cat, search, export, seal and verify on a local directory.

`archive()` builds recordings with real-shaped headers (tests.sim.recorder.cast), damaged ones
included; the lab tests and bench/recordings.py reuse it for S3.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import sys
from pathlib import Path

import keyring.core
import pytest

from tests.sim.recorder.cast import (
    OutputChunk,
    SourceNode,
    cast_header,
    render_cast,
    shell_output,
)
from tests.unit.test_secrets import MemoryKeyring
from tsops.cli import recordings as cli
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.recordings import catalog
from tsops.recordings.cast import BlockReport, CastError, decode_block, parse_header
from tsops.recordings.catalog import Filter, parse_when, probe, scan
from tsops.recordings.export import Checkpoint
from tsops.recordings.reader import LineAssembler, Stream
from tsops.recordings.search import compile_pattern, search
from tsops.recordings.store import CHUNK, LocalStore, ObjectInfo, RecordingMissing

REPO = Path(__file__).resolve().parents[2]
ALICE = SourceNode("alice-laptop.tail1234.ts.net", "nAL1CE5CNTRL", login="alice@example.com",
                   user_id=4401)
CI = SourceNode("ci-runner.tail1234.ts.net", "nC1RUNNERCNTRL", tags=("tag:ci",))
WEB = "nWEB1CNTRL"
DB = "nDB2CNTRL"
START = datetime.datetime(2026, 11, 24, 9, 30, 5, tzinfo=datetime.UTC)
PROMPT = "\x1b[1;32malice@web1\x1b[0m:~$ "


def at(hours: float) -> datetime.datetime:
    """A start time some hours after START."""
    return START + datetime.timedelta(hours=hours)


def archive() -> dict[str, bytes]:
    """Recordings as tsrecorder files them: good ones of several kinds, and damaged ones."""
    shell = shell_output(PROMPT, [
        ("ls", "notes.txt  \x1b[01;34mbin\x1b[0m\n"),
        ("sudo systemctl restart nginx", ""),
        ("cat /etc/hostname", "web1\n"),
        ("exit", "logout\n"),
    ])
    late = [OutputChunk(c.at + (30.0 if i > 3 else 0.0), c.text) for i, c in enumerate(shell)]
    files = {
        f"{WEB}/20261124T093005-a1.cast": render_cast(
            cast_header(source=ALICE, ssh_user="alice", started=at(0)), shell),
        f"{WEB}/20261124T113005-a2.cast": render_cast(
            cast_header(source=ALICE, ssh_user="alice", local_user="root", started=at(2)),
            late),
        f"{DB}/20261124T103005-c1.cast": render_cast(
            cast_header(source=CI, ssh_user="deploy", started=at(1), command="uptime",
                        width=0, height=0),
            [OutputChunk(0.05, " 10:30:05 up 3 days,  load average: 0.00\n")]),
        f"{DB}/20261125T093005-c2.cast": render_cast(
            cast_header(source=CI, ssh_user="deploy", started=at(24), command="pg_dump app"),
            [OutputChunk(0.1 * i, f"COPY row {i} \u2028<&>\n") for i in range(1, 400)]),
        f"{WEB}/20261124T123005-cut.cast": render_cast(
            cast_header(source=ALICE, ssh_user="alice", started=at(3)), shell, cut_at=900),
        f"{WEB}/20261124T133005-empty.cast": b"",
        f"{WEB}/20261124T143005-garbage.cast": b"this is not a recording\n[1.0,\"o\",\"x\"]\n",
        f"{WEB}/20261124T153005-v3.cast": render_cast(
            {**cast_header(source=ALICE, ssh_user="alice", started=at(6)), "version": 3}, []),
        f"{DB}/20261124T163005-utf8.cast": render_cast(
            cast_header(source=CI, ssh_user="deploy", started=at(7)),
            [OutputChunk(0.5, "before\n")]) + b'[1.0,"o","bad \xff byte\\n"]\n'
            + b'not json at all\n[2.0,"o","after secret-token\\n"]\n',
    }
    return files


def write_archive(root: Path, files: dict[str, bytes]) -> None:
    """Write recordings under a local directory as tsrecorder's --dst does."""
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    """A local destination holding archive()."""
    write_archive(tmp_path / "dst", archive())
    return LocalStore(tmp_path / "dst")


# --- parsing -------------------------------------------------------------------------------


def test_header_fields_of_a_user_session() -> None:
    header = parse_header(json.dumps(cast_header(
        source=ALICE, ssh_user="alice", local_user="root", started=START,
        connection="ssh-conn-20261124T093005-00aa11bb22")).encode())
    assert (header.ssh_user, header.local_user, header.src_node_user) == (
        "alice", "root", "alice@example.com")
    assert header.started == START
    assert header.connection_id == "ssh-conn-20261124T093005-00aa11bb22"
    assert header.term == "xterm-256color"
    assert header.source == "alice@example.com"


@pytest.mark.parametrize(("line", "kind"), [
    (b"not json", "bad-header"),
    (b"[2]", "bad-header"),
    (b'{"version": 3, "timestamp": 1}', "bad-header"),
    (b'{"version": 2, "timestamp": "yesterday"}', "bad-header"),
    (b'{"version": 2, "timestamp": 1e300}', "bad-header"),
    (b'{"version": 2, "timestamp": NaN}', "bad-header"),
    (b'{"version": 2, "timestamp": 1, "sshUser": 5}', "bad-header"),
    (b'{"version": 2, "timestamp": 1, "sshUser": "\xff"}', "invalid-utf8"),
])
def test_bad_headers_name_their_kind(line: bytes, kind: str) -> None:
    with pytest.raises(CastError) as raised:
        parse_header(line)
    assert raised.value.kind == kind


def test_a_block_with_one_bad_line_keeps_the_others() -> None:
    report = BlockReport()
    block = b'[0.5,"o","a"]\n[0.6,"r","80x24"]\nnope\n[0.7,"o","\xffb"]\n[0.8,"o","c"]\n'
    assert decode_block(block, report) == [(0.5, "a"), (0.7, "\ufffdb"), (0.8, "c")]
    assert (report.bad_lines, report.invalid_utf8) == (1, 1)


def test_lines_keep_the_time_of_their_first_write_across_batches() -> None:
    assembler = LineAssembler()
    first = assembler.feed([(0.5, "$ "), (0.6, "l"), (0.7, "s")])
    second = assembler.feed([(0.8, "\r\n"), (0.9, "\x1b[34mbin\x1b[0m  x\r\n"), (1.5, "$ ")])
    last = assembler.finish()
    assert first.split() == []
    assert second.split() == ["$ ls", "bin  x"]
    assert [second.time_of(0), second.time_of(1)] == [0.5, 0.9]
    assert (last.split(), last.time_of(0)) == (["$ "], 1.5)


# --- list ----------------------------------------------------------------------------------


def test_scan_lists_good_recordings_and_reports_each_bad_one(local: LocalStore) -> None:
    found = scan(local)
    ids = sorted(r.id for r in found.recordings)
    assert ids == sorted([
        f"{DB}/20261124T103005-c1", f"{DB}/20261125T093005-c2", f"{DB}/20261124T163005-utf8",
        f"{WEB}/20261124T093005-a1", f"{WEB}/20261124T113005-a2", f"{WEB}/20261124T123005-cut",
    ])
    problems = {(p.kind, p.key.split("-", 1)[1]) for p in found.problems}
    assert problems == {("truncated", "cut.cast"), ("empty", "empty.cast"),
                        ("bad-header", "garbage.cast"), ("bad-header", "v3.cast")}


def test_list_reads_the_same_few_bytes_whatever_the_size(tmp_path: Path) -> None:
    header = cast_header(source=ALICE, ssh_user="alice", started=START)
    sizes = {}
    for count in (100, 10_000, 100_000):
        root = tmp_path / str(count)
        events = [OutputChunk(i * 0.01, f"line {i} of output\r\n") for i in range(count)]
        write_archive(root, {f"{WEB}/x.cast": render_cast(header, events)})
        store = LocalStore(root)
        (recording,) = scan(store).recordings
        assert recording.duration == pytest.approx((count - 1) * 0.01)
        assert not recording.truncated
        sizes[count] = ((root / WEB / "x.cast").stat().st_size, store.bytes_read)
    assert sizes[100_000][0] > 100 * sizes[100][0] // 2
    assert max(read for _, read in sizes.values()) <= 64 << 10
    assert sizes[100_000][1] == sizes[10_000][1]


def test_a_header_longer_than_the_first_range_is_read_by_growing_it(tmp_path: Path) -> None:
    header = {**cast_header(source=ALICE, ssh_user="alice", started=START,
                            command="echo " + "x" * 40_000)}
    events = [OutputChunk(i * 0.5, "y" * 100 + "\n") for i in range(1000)]
    write_archive(tmp_path, {f"{WEB}/long.cast": render_cast(header, events)})
    size = (tmp_path / WEB / "long.cast").stat().st_size
    recording = probe(LocalStore(tmp_path), ObjectInfo(f"{WEB}/long.cast", size))
    assert not isinstance(recording, catalog.Problem)
    assert recording.header.command.startswith("echo xxx")
    assert recording.duration == 499.5


def test_filters_by_node_user_time_and_command(local: LocalStore) -> None:
    recordings = scan(local).recordings

    def ids(chosen: Filter) -> set[str]:
        return {r.id.rsplit("-", 1)[1] for r in recordings if chosen.keeps(r)}

    assert ids(Filter(nodes=(DB,))) == {"c1", "c2", "utf8"}
    assert ids(Filter(users=("root",))) == {"a2"}
    assert ids(Filter(users=("alice@example.com",))) == {"a1", "a2", "cut"}
    assert ids(Filter(since=at(1), until=at(3))) == {"c1", "a2"}
    assert ids(Filter(command="pg_dump")) == {"c2"}


def test_times_are_iso_or_ages() -> None:
    now = datetime.datetime(2026, 11, 25, 12, tzinfo=datetime.UTC)
    assert parse_when("24h", "--since", now) == now - datetime.timedelta(days=1)
    assert parse_when("2026-11-24", "--since") == datetime.datetime(2026, 11, 24,
                                                                     tzinfo=datetime.UTC)
    assert parse_when("2026-11-24T10:00:00+01:00", "--since").hour == 10
    with pytest.raises(UsageError, match="--since 'yesterday'"):
        parse_when("yesterday", "--since")


def test_list_json_and_table(local: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    cli.run_list(source, Filter(), "start", False, "json")
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert [r["id"].rsplit("-", 1)[1] for r in listed["recordings"]] == [
        "a1", "c1", "a2", "cut", "utf8", "c2"]
    first = listed["recordings"][0]
    assert first["duration"] == pytest.approx(shell_output(PROMPT, [
        ("ls", "notes.txt  \x1b[01;34mbin\x1b[0m\n"), ("sudo systemctl restart nginx", ""),
        ("cat /etc/hostname", "web1\n"), ("exit", "logout\n")])[-1].at)
    assert first["src_node_user"] == "alice@example.com"
    assert len(err.strip().splitlines()) == 4
    assert f"warning: empty: {WEB}/20261124T133005-empty.cast: the file is empty" in err
    cli.run_list(source, Filter(users=("deploy",)), "size", True, "table")
    out, _ = capsys.readouterr()
    assert out.index("c2") < out.index("c1")
    assert "pg_dump app" in out
    assert "3 recording(s) of 6" in out


def test_bad_sort_and_missing_source_are_bad_input(local: LocalStore) -> None:
    with pytest.raises(UsageError, match="--sort"):
        cli.run_list(RecordingsLocation(str(local.root)), Filter(), "colour", False, "table")
    with pytest.raises(UsageError, match="exactly one of --from"):
        cli.run_list(RecordingsLocation(), Filter(), "start", False, "table")
    with pytest.raises(UsageError, match="not a directory"):
        cli.run_list(RecordingsLocation(str(local.root / "nope")), Filter(), "start", False,
                     "table")


# --- show, cat -----------------------------------------------------------------------------


def test_show_and_unknown_ids(local: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    cli.run_show(source, f"{DB}/20261124T103005-c1", "json")
    shown = json.loads(capsys.readouterr().out)
    assert (shown["command"], shown["width"], shown["duration"]) == ("uptime", 0, 0.05)
    with pytest.raises(RecordingMissing):
        cli.run_show(source, f"{DB}/nothing", "table")
    with pytest.raises(TsopsError, match="empty"):
        cli.run_show(source, f"{WEB}/20261124T133005-empty", "table")


def test_cat_plain_and_raw(local: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    cli.run_cat(source, f"{WEB}/20261124T093005-a1.cast", plain=True)
    plain = capsys.readouterr().out
    assert plain.startswith("alice@web1:~$ ls\nnotes.txt  bin\nalice@web1:~$ sudo systemctl")
    assert "\x1b" not in plain and "\r" not in plain
    cli.run_cat(source, f"{WEB}/20261124T093005-a1", plain=False)
    assert "\x1b[1;32malice@web1\x1b[0m:~$ " in capsys.readouterr().out


def test_cat_goes_on_past_damage_and_says_so(local: LocalStore,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cli.run_cat(RecordingsLocation(str(local.root)), f"{DB}/20261124T163005-utf8", plain=True)
    out, err = capsys.readouterr()
    assert out == "before\nbad \ufffd byte\nafter secret-token\n"
    assert "bad-event" in err and "invalid-utf8" in err
    cli.run_cat(RecordingsLocation(str(local.root)), f"{WEB}/20261124T123005-cut", plain=True)
    out, err = capsys.readouterr()
    assert out.startswith("alice@web1:~$ l")
    assert "truncated" in err


# --- search --------------------------------------------------------------------------------


def test_search_reports_session_line_time_and_context(local: LocalStore) -> None:
    recordings = sorted(scan(local).recordings, key=lambda r: r.key)
    pattern = compile_pattern(r"systemctl \w+ nginx", ignore_case=False)
    results = list(search(local, recordings, pattern, context=1))
    matches = [m for result in results for m in result.matches]
    assert sorted(m.key.removesuffix(".cast").rsplit("-", 1)[1] for m in matches) == [
        "a1", "a2"]
    a2 = next(m for m in matches if m.key.removesuffix(".cast").endswith("a2"))
    assert a2.line == "alice@web1:~$ sudo systemctl restart nginx"
    assert a2.line_number == 3
    assert a2.before == ["notes.txt  bin"]
    assert a2.after == ["alice@web1:~$ cat /etc/hostname"]
    assert 30 < a2.offset < 40  # the second command came after a 30 s pause
    a1 = next(m for m in matches if m.key.removesuffix(".cast").endswith("a1"))
    assert a1.offset < 5


def test_search_context_spans_blocks(tmp_path: Path) -> None:
    header = cast_header(source=ALICE, ssh_user="alice", started=START)
    events = [OutputChunk(i * 0.001, f"row {i:07d} " + "." * 60 + "\n") for i in range(40_000)]
    write_archive(tmp_path, {f"{WEB}/big.cast": render_cast(header, events)})
    store = LocalStore(tmp_path)
    (recording,) = scan(store).recordings
    pattern = compile_pattern(r"^row (0000000|0017476|0039999) ", ignore_case=False)
    (result,) = search(store, [recording], pattern, context=2)
    assert [m.line_number for m in result.matches] == [1, 17477, 40000]
    # The first line of the second 1 MiB block: its context comes from both blocks.
    data = (tmp_path / WEB / "big.cast").read_bytes()
    first = data[:CHUNK].count(b"\n") - 1  # event index of the first line of block two
    edge = compile_pattern(rf"^row {first:07d} ", ignore_case=False)
    (at_edge,) = search(store, [recording], edge, context=2)
    (match,) = at_edge.matches
    assert [line[:11] for line in match.before] == [f"row {first - 2:07d}", f"row {first - 1:07d}"]
    assert [line[:11] for line in match.after] == [f"row {first + 1:07d}", f"row {first + 2:07d}"]
    middle = result.matches[1]
    assert [line[:11] for line in middle.before] == ["row 0017474", "row 0017475"]
    assert [line[:11] for line in middle.after] == ["row 0017477", "row 0017478"]
    assert middle.offset == pytest.approx(17.476)
    assert result.matches[0].before == [] and result.matches[2].after == []


def test_search_cli_reads_damaged_files_and_rejects_bad_patterns(
        local: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    cli.run_search(source, Filter(), "secret-token", False, 0, "json")
    out, err = capsys.readouterr()
    (match,) = json.loads(out)["matches"]
    assert match["id"] == f"{DB}/20261124T163005-utf8"
    assert (match["line"], match["offset"]) == (3, 2.0)
    assert "1 matching line(s) in 1 of 6 recording(s)" in err
    with pytest.raises(UsageError, match="bad regular expression"):
        cli.run_search(source, Filter(), "(", False, 0, "table")


# --- export --------------------------------------------------------------------------------


def test_export_ecs_with_text_and_a_checkpoint(local: LocalStore, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    checkpoint = tmp_path / "state" / "checkpoint.json"
    cli.run_export(source, Filter(since=at(0.5)), "ecs", True, checkpoint)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["file"]["path"].rsplit("-", 1)[1] for e in events] == [
        "c1.cast", "a2.cast", "cut.cast", "utf8.cast", "c2.cast"]
    c1 = events[0]
    assert c1["@timestamp"] == "2026-11-24T10:30:05.000Z"
    assert c1["event"]["category"] == ["session"]
    assert c1["event"]["duration"] == 50_000_000
    assert c1["user"] == {"name": "deploy", "target": {"name": "deploy"}}
    assert c1["host"] == {"id": DB}
    assert c1["process"]["command_line"] == "uptime"
    assert c1["source"] == {"address": CI.name, "domain": CI.name}
    assert c1["tsops"]["text"].startswith(" 10:30:05 up 3 days")
    c2 = events[-1]
    assert c2["tsops"]["text"].count("\n") == 399 and "\u2028<&>" in c2["tsops"]["text"]
    assert sorted(json.loads(checkpoint.read_text())["exported"]) == sorted(
        e["file"]["path"] for e in events)
    cli.run_export(source, Filter(), "jsonl", False, checkpoint)
    (only,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert only["id"] == f"{WEB}/20261124T093005-a1"
    assert only["src_node_user"] == "alice@example.com" and "text" not in only
    cli.run_export(source, Filter(), "jsonl", False, checkpoint)
    assert capsys.readouterr().out == ""


def test_a_damaged_checkpoint_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text("{}")
    with pytest.raises(UsageError, match="not a tsops export checkpoint"):
        Checkpoint(path)


def test_export_streams_text_in_pieces(local: LocalStore) -> None:
    stream = Stream(local, f"{DB}/20261125T093005-c2.cast")
    batches = list(stream.batches())
    assert sum(len(b) for b in batches) == 399
    assert stream.problems() == []


# --- seal, verify --------------------------------------------------------------------------


@pytest.fixture
def ring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    """An empty in-memory keyring as the current backend."""
    backend = MemoryKeyring()
    monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
    return backend


def test_seal_then_verify_finds_missing_altered_unexpected(
        local: LocalStore, tmp_path: Path, ring: MemoryKeyring,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    manifest = tmp_path / "seal.json"
    cli.run_seal(source, manifest, "tsops/seal")
    out, err = capsys.readouterr()
    assert "sealed 9 recording(s)" in out
    assert "created a new sealing key" in err and "empty" in err
    stored = ring.values[("tsops", "seal")]
    assert len(base64.b64decode(stored)) == 32 and stored not in manifest.read_text()
    cli.run_verify(source, manifest, "tsops/seal", None, "table")
    assert "9 intact, 0 missing, 0 altered, 0 unexpected" in capsys.readouterr().out
    (local.root / WEB / "20261124T093005-a1.cast").unlink()
    altered = local.root / DB / "20261124T103005-c1.cast"
    altered.write_bytes(altered.read_bytes().replace(b"3 days", b"4 days"))
    (local.root / DB / "20261126T000000-new.cast").write_bytes(b"{}\n")
    with pytest.raises(DriftFound) as raised:
        cli.run_verify(source, manifest, "tsops/seal", None, "json")
    assert raised.value.exit_code == ExitCode.DRIFT
    findings = json.loads(capsys.readouterr().out)
    assert findings == {"intact": 7, "missing": [f"{WEB}/20261124T093005-a1.cast"],
                        "altered": [f"{DB}/20261124T103005-c1.cast"],
                        "unexpected": [f"{DB}/20261126T000000-new.cast"],
                        "between_manifests": [], "chain": [str(manifest)],
                        "tampered": []}  # a local folder keeps no versions


def test_a_changed_or_foreign_manifest_fails_its_signature(
        local: LocalStore, tmp_path: Path, ring: MemoryKeyring,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(str(local.root))
    manifest = tmp_path / "seal.json"
    cli.run_seal(source, manifest, "tsops/seal")
    public = capsys.readouterr().out.split("public key: ")[1].strip()
    document = json.loads(manifest.read_text())
    document["manifest"]["recordings"].popitem()
    manifest.write_text(json.dumps(document))
    with pytest.raises(TsopsError, match="signature does not verify") as raised:
        cli.run_verify(source, manifest, "tsops/seal", public, "table")
    assert raised.value.exit_code == ExitCode.DRIFT
    cli.run_seal(source, tmp_path / "other.json", "tsops/other")
    with pytest.raises(TsopsError, match="sealed with another key"):
        cli.run_verify(source, tmp_path / "other.json", "tsops/seal", None, "table")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(UsageError, match="not a tsops recordings manifest"):
        cli.run_verify(source, tmp_path / "bad.json", "tsops/seal", None, "table")
    with pytest.raises(TsopsError, match="no sealing key"):
        cli.run_verify(source, manifest, "tsops/none", None, "table")


# --- the command line ----------------------------------------------------------------------


def tsops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way an operator does."""
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, cwd=REPO)


def test_cli_exit_codes(local: LocalStore) -> None:
    listed = tsops("recordings", "list", "--from", str(local.root), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["recordings"]) == 6
    assert len(listed.stderr.splitlines()) == 4
    bad = tsops("recordings", "list", "--from", str(local.root), "--since", "soon")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    missing = tsops("recordings", "cat", "--from", str(local.root), f"{WEB}/none")
    assert missing.returncode == 2 and "no recording" in missing.stderr
    neither = tsops("recordings", "search", "x")
    assert neither.returncode == 2 and "exactly one of --from" in neither.stderr


def test_names_come_from_the_tailnet_api(local: LocalStore, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_recordings_hosts import DIRECTORY, LocalRecorder, age
    from tsops.flows import recordings as flow
    from tsops.tailscale_api import Device, TailscaleApi

    inventory = tmp_path / "inv.yaml"
    inventory.write_text(  # the recordings are on rec1 (read here by LocalRecorder)
        "version: 1\ntailnet:\n  credentials:\n    api_token: {env: TS_TEST_RECORDINGS}\n"
        "servers:\n  hosts:\n    web1: {address: 192.0.2.10}\n"
        "recorders:\n  hosts:\n    rec1: {address: 192.0.2.21}\n"
        f"storage:\n  destination: {DIRECTORY}\n")
    age(local.root)
    recorder = LocalRecorder("rec1", local.root)
    monkeypatch.setattr(flow, "recorder_connector", lambda inv: lambda t: recorder)
    monkeypatch.delenv("TS_TEST_RECORDINGS", raising=False)
    source = RecordingsLocation(inventory=inventory)
    cli.run_list(source, Filter(), "start", False, "json", names=True)
    out, err = capsys.readouterr()
    assert "showing node IDs, not names" in err
    assert {r["hostname"] for r in json.loads(out)["recordings"]} == {None}

    devices = [Device("1", WEB, "web1.tail1234.ts.net", "web1", (), (), True)]
    monkeypatch.setenv("TS_TEST_RECORDINGS", "tskey-api-test")
    monkeypatch.setattr(TailscaleApi, "list_devices", lambda self: devices)
    cli.run_list(source, Filter(nodes=("web1",)), "start", False, "table", names=True)
    out, _ = capsys.readouterr()
    assert out.count(" web1 ") == 3 and DB not in out
    cli.run_export(source, Filter(nodes=("web1",)), "ecs", False, None, names=True)
    hosts = [json.loads(line)["host"] for line in capsys.readouterr().out.splitlines()]
    assert hosts == [{"id": WEB, "hostname": "web1"}] * 3
    with pytest.raises(UsageError, match="--names needs --inventory"):
        cli.run_list(RecordingsLocation(str(local.root)), Filter(), "start", False, "table",
                     names=True)


def test_probe_edge_cases(tmp_path: Path) -> None:
    header = cast_header(source=ALICE, ssh_user="alice", started=START)
    long_last = render_cast(header, [OutputChunk(0.5, "a\n"), OutputChunk(9.0, "z" * 50_000)])
    huge_header = b'{"version": 2, "timestamp": 1, "command": "' + b"x" * (2 << 20) + b'"}\n'
    files = {
        f"{WEB}/long-last.cast": long_last,
        f"{WEB}/long-last-cut.cast": long_last[:-5],
        f"{WEB}/header-only.cast": render_cast(header, []),
        f"{WEB}/unterminated.cast": render_cast(header, [])[:-1],
        f"{WEB}/huge-header.cast": huge_header,
    }
    write_archive(tmp_path, files)
    found = scan(LocalStore(tmp_path))
    by_name = {r.key.split("/")[1]: (r.duration, r.truncated) for r in found.recordings}
    # A last write longer than the tail read is found by reading further back: the duration
    # is what the bytes say (the time of the last complete event), as `cat` and `search` see.
    assert by_name == {"long-last.cast": (9.0, False), "long-last-cut.cast": (0.5, True),
                       "header-only.cast": (None, False), "unterminated.cast": (None, True)}
    assert [(p.kind, p.key) for p in found.problems if p.kind != "truncated"] == [
        ("header-too-long", f"{WEB}/huge-header.cast")]


def test_export_and_search_of_a_large_recording_use_constant_memory(tmp_path: Path) -> None:
    import io
    import tracemalloc

    from tsops.recordings.export import write_event

    header = cast_header(source=ALICE, ssh_user="alice", started=START)
    line = ("\x1b[33mWARN\x1b[0m " + "x" * 90 + "\r\n") * 40
    events = [OutputChunk(i * 0.01, line if i % 1000 else "needle\r\n") for i in range(4_000)]
    write_archive(tmp_path, {f"{WEB}/large.cast": render_cast(header, events)})
    size = (tmp_path / WEB / "large.cast").stat().st_size
    assert size > 16 << 20
    store = LocalStore(tmp_path)
    (recording,) = scan(store).recordings

    class Sink(io.StringIO):
        """Counts what is written, keeps nothing."""

        written = 0

        def write(self, text: str) -> int:
            self.written += len(text)
            return len(text)

    sink = Sink()
    tracemalloc.start()
    try:
        assert write_event(sink, store, recording, "ecs", {}, with_text=True) == []
        (result,) = search(store, [recording], compile_pattern("^needle$", False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.written > 14 << 20
    assert [m.offset for m in result.matches] == [0.0, 10.0, 20.0, 30.0]
    assert peak < 12 << 20 < size, f"peak {peak >> 20} MiB for a {size >> 20} MiB recording"


def test_export_to_a_full_disk_fails_and_keeps_the_checkpoint(local: LocalStore,
                                                              tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp.json"
    with Path("/dev/full").open("w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "tsops", "recordings", "export", "--text", "--from",
             str(local.root), "--checkpoint", str(checkpoint)],
            stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO, check=False)
    assert result.returncode == 1
    assert "cannot write to standard output: No space left on device" in result.stderr
    assert not checkpoint.exists()


def test_a_write_longer_than_a_chunk_is_read_whole(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    header = cast_header(source=ALICE, ssh_user="alice", started=START)
    huge = "y" * (3 * CHUNK) + "\n"
    write_archive(tmp_path, {f"{WEB}/huge.cast": render_cast(
        header, [OutputChunk(0.5, "start\n"), OutputChunk(1.0, huge), OutputChunk(2.0, "end\n")])})
    cli.run_cat(RecordingsLocation(str(tmp_path)), f"{WEB}/huge", plain=True)
    out, err = capsys.readouterr()
    assert out == "start\n" + huge + "end\n"
    assert err == ""
    (result,) = search(LocalStore(tmp_path), scan(LocalStore(tmp_path)).recordings,
                       compile_pattern("^end$", False))
    assert [(m.line_number, m.offset) for m in result.matches] == [(3, 2.0)]
