"""Recordings on the recorder hosts: the listing script, its parser, and the merged store.

The parser is fed hostile bytes directly; the real listing and read scripts run here with
`sh` against directories of hostile files (`LocalRecorder`, a fake recorder connection that runs
each script on this machine, rooted at its own directory); the lab test
(tests/labtests/test_recordings_hosts.py) runs them over SSH on real recorders.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_recordings import DB, WEB, archive, write_archive
from tsops.cli import recordings as cli
from tsops.errors import TsopsError
from tsops.events import Recorded
from tsops.flows import recordings as flow
from tsops.flows.recordings import RecordersUnread, RecordingsLocation
from tsops.inventory.load import Target
from tsops.recordings.catalog import HEAD, TAIL, WHOLE, Filter, Recording, find, probe, scan
from tsops.recordings.integrity import KeySource, create_key_file
from tsops.recordings.remote_source import (
    MAGIC,
    Listed,
    ListingError,
    RecorderHostsStore,
    key_of,
    listing_script,
    parse_listing,
)
from tsops.recordings.store import RecordingMissing, StoreError
from tsops.remote import CommandFailed, HostUnreachable, RunResult

DIRECTORY = "/srv/recordings"
BOUNDARY = b"0123456789abcdef0123456789abcdef"
OLD = 1_700_000_000  # an mtime long past: the listing carries the file's bytes


def target(name: str) -> Target:
    """A recorder target as the inventory makes it."""
    return Target(name, "recorder", None, "192.0.2.1", (), "root", 22, None, False, None, 1)


class LocalRecorder:
    """A recorder connection that runs each script with sh here, in its own directory."""

    def __init__(self, name: str, root: Path, *, unreachable: str = "") -> None:
        self.target = target(name)
        self.root = root
        self.unreachable = unreachable
        self.scripts: list[str] = []
        self.closed = False

    @property
    def name(self) -> str:
        return self.target.name

    def stream(self, script: str, *, privileged: bool = True,
               what: str = "a command") -> Iterator[bytes]:
        if self.unreachable:
            raise HostUnreachable(self.name, self.unreachable)
        here = f"cd -- {shlex.quote(DIRECTORY)} "
        assert here in script
        self.scripts.append(script)
        result = subprocess.run(["sh", "-c", script.replace(
            here, f"cd -- {shlex.quote(str(self.root))} ")], capture_output=True, check=False)
        yield result.stdout
        if result.returncode:
            raise CommandFailed(self.name, what, RunResult(
                result.returncode, "", result.stderr.decode(errors="replace")))

    def close(self) -> None:
        self.closed = True


def age(root: Path, mtime: int = OLD) -> None:
    """Make every file below `root` look written long ago."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (mtime, mtime))


def records(*parts: bytes) -> bytes:
    return MAGIC + b"".join(parts) + b"E0\0"


def batch(kind: bytes, files: list[tuple[bytes, int]], heads: bytes, tails: bytes = b"",
          after: list[tuple[bytes, int]] | None = None) -> bytes:
    """One batch record as listing_script prints it."""
    def stats(tag: bytes, entries: list[tuple[bytes, int]]) -> bytes:
        return b"".join(tag + b"%d 1700000000.500000000 1700000000.500000000 " % size + name
                        + b"\0" for name, size in entries)
    return (b"B" + kind + b"\0" + stats(b"S", files) + b"H\0" + heads + BOUNDARY + b"T\0"
            + tails + BOUNDARY + stats(b"A", files if after is None else after))


# --- the parser, on hostile bytes ------------------------------------------------------------


def test_names_that_tsrecorder_never_writes_are_reported_not_listed() -> None:
    hostile = [b"./n1/new\nline.cast", b"./n1/esc\x1b]0;pwn\x07.cast", b"./n1/bad\xff.cast",
               b"./n1/rtl\xe2\x80\xaecod.cast", b"./-n/x.cast"]
    good = b"./n1/20261124T093005-a1.cast"
    files = [(name, 2) for name in [*hostile, good]]
    listing = parse_listing(records(batch(b"whole", files, b"ab" * len(files))), BOUNDARY,
                            "rec1")
    assert list(listing.entries) == ["n1/20261124T093005-a1.cast"]
    assert [(u.kind, u.key) for u in listing.unread] == [
        ("bad-name", "n1/new\nline.cast"), ("bad-name", "n1/esc\x1b]0;pwn\x07.cast"),
        ("bad-name", "n1/bad\\xff.cast"), ("bad-name", "n1/rtl\u202ecod.cast"),
        ("bad-name", "-n/x.cast")]
    assert all(u.recorder == "rec1" for u in listing.unread)
    assert listing.complete
    assert key_of(b"./n1/a b.cast") == "n1/a b.cast"  # a space is printable


def test_contents_that_look_like_records_do_not_break_the_framing() -> None:
    forged = MAGIC + b"E0\0Lx\0" + b"S1 2 3 ./n1/forged.cast\0"  # records inside a recording
    files = [(b"./n1/a.cast", len(forged)), (b"./n1/b.cast", 3)]
    listing = parse_listing(records(batch(b"whole", files, forged + b"xyz")), BOUNDARY, "rec1")
    assert sorted(listing.entries) == ["n1/a.cast", "n1/b.cast"]
    assert listing.entries["n1/a.cast"].head == forged
    assert listing.entries["n1/b.cast"].head == b"xyz"
    assert listing.unread == []


def test_a_file_that_changed_or_vanished_while_listed_is_read_on_demand() -> None:
    files = [(b"./n1/grew.cast", 2), (b"./n1/same.cast", 2), (b"./n1/gone.cast", 2)]
    after = [(b"./n1/grew.cast", 9), (b"./n1/same.cast", 2)]
    listing = parse_listing(records(batch(b"whole", files, b"aabbcc", after=after)), BOUNDARY,
                            "rec1")
    assert sorted(listing.entries) == ["n1/grew.cast", "n1/same.cast"]
    grew, same = listing.entries["n1/grew.cast"], listing.entries["n1/same.cast"]
    assert (grew.size, grew.head, grew.cached(0, 9)) == (9, b"", None)
    assert (same.head, same.cached(0, 2)) == (b"bb", b"bb")
    # Lengths that do not add up (a file gone between stat and read): no contents trusted.
    short = parse_listing(records(batch(b"whole", files[:2], b"aab")), BOUNDARY, "rec1")
    assert [e.head for e in short.entries.values()] == [b"", b""]


def test_a_large_file_carries_its_first_and_last_bytes_only() -> None:
    size = 10 * WHOLE
    head, tail = b"h" * HEAD, b"t" * TAIL
    listing = parse_listing(records(batch(b"ends", [(b"./n1/big.cast", size)], head, tail)),
                            BOUNDARY, "rec1")
    big = listing.entries["n1/big.cast"]
    assert big.cached(0, HEAD) == head and big.cached(size - 100, 100) == b"t" * 100
    assert big.cached(HEAD, 10) is None  # the middle is read when asked for
    assert big.stat == (size, 1_700_000_000_500_000_000, 1_700_000_000_500_000_000)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not the output"),
    (b"#!/bin/sh\nE0\0", "not the output"),
    (MAGIC + b"Lname-without-end", "cut off"),
    (MAGIC + b"Bwhole\0S1 2 3 ./n/a.cast\0H\0x" + BOUNDARY, "without its ends"),
    (MAGIC + b"Bwhole\0S1 2 3 ./n/a.cast\0H\0xxxxxxxx", "cut off"),
    (MAGIC + b"Bwhole\0Snot-a-size 2 3 ./n/a.cast\0H\0", "malformed stat"),
    (MAGIC + b"Q\0", "unknown record"),
    (MAGIC, "cut off"),
    (MAGIC + b"E0\0trailing", "after the end"),
])
def test_output_that_is_not_a_whole_listing_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ListingError, match=message):
        parse_listing(data, BOUNDARY, "rec1")


def test_an_error_of_find_marks_the_listing_incomplete() -> None:
    listing = parse_listing(MAGIC + b"E1\0", BOUNDARY, "rec1")
    assert not listing.complete


# --- the real scripts, run here on hostile directories ---------------------------------------


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A recorder directory with good recordings and everything that must not break a listing."""
    root = tmp_path / "rec1"
    write_archive(root, archive())
    node = root / WEB
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.cast").write_bytes(b"outside the directory\n")
    (node / "new\nline.cast").write_bytes(b"x")
    (node / "esc\x1b[2J.cast").write_bytes(b"x")
    (node / "link.cast").symlink_to("/etc/passwd")
    (root / "elsewhere").symlink_to(tmp_path / "outside")
    os.mkfifo(node / "fifo.cast")
    (node / "dir.cast").mkdir()
    with (node / "20261124T170000-huge.cast").open("wb") as big:
        big.write(b'{"version": 2, "title": "' + b"A" * (4 << 20) + b'"}\n[1.0, "o", "x"]\n')
    age(root)
    return root


def test_the_listing_script_on_a_hostile_directory(hostile: Path) -> None:
    out = subprocess.run(["sh", "-c", listing_script(str(hostile), BOUNDARY.decode())],
                         capture_output=True, check=True).stdout
    listing = parse_listing(out, BOUNDARY, "rec1")
    assert listing.complete
    assert sorted(listing.entries) == sorted([*archive(), f"{WEB}/20261124T170000-huge.cast"])
    assert sorted((u.kind, u.key) for u in listing.unread) == [
        ("bad-name", f"{WEB}/esc\x1b[2J.cast"), ("bad-name", f"{WEB}/new\nline.cast"),
        ("not-a-file", f"{WEB}/dir.cast"), ("not-a-file", f"{WEB}/fifo.cast"),
        ("not-a-file", f"{WEB}/link.cast"), ("symlink", "elsewhere")]
    assert b"outside the directory" not in out and b"root:" not in out  # no link followed
    huge = listing.entries[f"{WEB}/20261124T170000-huge.cast"]
    assert (len(huge.head), len(huge.tail)) == (HEAD, TAIL)  # the byte cap
    on_disk = {key: (hostile / key).read_bytes() for key in archive()}
    assert len(out) < sum(map(len, on_disk.values())) + 2 * (HEAD + TAIL) + 4096
    for key, data in on_disk.items():  # small files come whole, as `list` reads them
        assert len(data) <= WHOLE and listing.entries[key].head == data


def test_recent_files_are_listed_without_their_bytes(tmp_path: Path) -> None:
    root = tmp_path / "rec1"
    write_archive(root, archive())  # just written: a session may still be recording
    out = subprocess.run(["sh", "-c", listing_script(str(root), BOUNDARY.decode())],
                         capture_output=True, check=True).stdout
    listing = parse_listing(out, BOUNDARY, "rec1")
    assert sorted(listing.entries) == sorted(archive())
    assert all(e.head == e.tail == b"" for e in listing.entries.values())


def test_a_missing_directory_is_a_failed_listing(tmp_path: Path) -> None:
    result = subprocess.run(["sh", "-c", listing_script(str(tmp_path / "nothing"), "b")],
                            capture_output=True, check=False)
    assert result.returncode == 3 and result.stdout == b""


# --- the store: two recorders merged --------------------------------------------------------


@pytest.fixture
def recorders(tmp_path: Path, hostile: Path) -> tuple[LocalRecorder, LocalRecorder]:
    """rec1 holds the hostile directory; rec2 a recording of its own and a copy of one."""
    second = tmp_path / "rec2"
    files = archive()
    own = f"{DB}/20261201T080000-r2.cast"
    copy = f"{WEB}/20261124T093005-a1.cast"
    write_archive(second, {own: files[f"{DB}/20261124T103005-c1.cast"], copy: files[copy]})
    age(second)
    return LocalRecorder("rec1", hostile), LocalRecorder("rec2", second)


def test_two_recorders_merged_each_recording_naming_its_recorder(
        recorders: tuple[LocalRecorder, LocalRecorder]) -> None:
    rec1, rec2 = recorders
    store = RecorderHostsStore(DIRECTORY, [rec1, rec2])
    catalog = scan(store)
    by_key = {r.key: r.recorder for r in catalog.recordings}
    assert by_key[f"{DB}/20261201T080000-r2.cast"] == "rec2"
    assert by_key[f"{WEB}/20261124T093005-a1.cast"] == "rec1"  # the first recorder's copy
    problems = {(p.kind, p.key, p.recorder) for p in catalog.problems}
    assert ("duplicate", f"{WEB}/20261124T093005-a1.cast", "rec2") in problems
    assert ("not-a-file", f"{WEB}/link.cast", "rec1") in problems
    assert ("header-too-long", f"{WEB}/20261124T170000-huge.cast", "rec1") in problems
    assert ("empty", f"{WEB}/20261124T133005-empty.cast", "rec1") in problems
    # One command per recorder: every header and ending came with the listing, but for the
    # huge header, which is read further (by the catalog's own cap) on demand.
    assert len(rec2.scripts) == 1
    assert sum("tail -c +" in s for s in rec1.scripts) >= 1
    assert len([s for s in rec1.scripts if "TSOPS-LISTING" in s]) == 1
    assert store.description == f"{DIRECTORY} on rec1, rec2"
    store.close()
    assert rec1.closed and rec2.closed


def test_reads_stream_one_command_and_never_follow_a_link(
        recorders: tuple[LocalRecorder, LocalRecorder]) -> None:
    rec1, _ = recorders
    store = RecorderHostsStore(DIRECTORY, list(recorders))
    key = f"{DB}/20261125T093005-c2.cast"
    data = (rec1.root / key).read_bytes()
    assert len(data) <= WHOLE
    list(store.list())
    listed = len(rec1.scripts)
    assert store.read_range(key, 5, 10) == data[5:15]  # from the listing's bytes
    assert store.read_tail(key, 7) == data[-7:]
    assert len(rec1.scripts) == listed
    assert b"".join(store.chunks(key)) == data  # one command
    huge_key = f"{WEB}/20261124T170000-huge.cast"
    huge = (rec1.root / huge_key).read_bytes()
    assert store.read_tail(huge_key, 7) == huge[-7:]  # from the listing's last bytes
    assert store.read_range(huge_key, HEAD + 5, 10) == huge[HEAD + 5:HEAD + 15]  # one command
    assert len(rec1.scripts) == listed + 2
    assert store.bytes_read == 10 + 7 + len(data) + 7 + 10
    # A recording replaced by a link after it was listed is refused, not followed.
    (rec1.root / key).unlink()
    (rec1.root / key).symlink_to("/etc/passwd")
    with pytest.raises(StoreError, match="symbolic link"):
        b"".join(store.chunks(key))
    (rec1.root / key).unlink()
    with pytest.raises(RecordingMissing, match="any more"):
        b"".join(store.chunks(key))
    with pytest.raises(RecordingMissing):
        store.read_range(f"{DB}/nothing.cast", 0, 1)


def test_an_unreachable_recorder_is_one_problem_and_the_others_are_listed(
        recorders: tuple[LocalRecorder, LocalRecorder]) -> None:
    rec1, rec2 = recorders
    down = LocalRecorder("rec2", rec2.root, unreachable="connection refused")
    store = RecorderHostsStore(DIRECTORY, [rec1, down])
    catalog = scan(store)
    assert {r.recorder for r in catalog.recordings} == {"rec1"}
    failures = [p for p in catalog.problems if not p.key]
    assert [str(p) for p in failures] == ["unreachable: recorder rec2: connection refused"]
    with pytest.raises(StoreError, match="not read: unreachable: recorder rec2"):
        find(store, f"{DB}/20261201T080000-r2")
    info = find(store, f"{DB}/20261124T103005-c1")
    found = probe(store, info)
    assert isinstance(found, Recording) and found.recorder == "rec1"


def test_a_listing_that_fails_on_the_host_names_the_reason(tmp_path: Path) -> None:
    gone = LocalRecorder("rec1", tmp_path / "missing")
    store = RecorderHostsStore(DIRECTORY, [gone])
    assert list(store.list()) == []
    (failure,) = store.failures()
    assert failure.kind == "unreadable" and "exit 3" in failure.detail


def test_listed_bytes_answer_reads_inside_them() -> None:
    entry = Listed("n/a.cast", 100, None, (100, 0, 0), "rec1", b"h" * 10, b"t" * 10)
    assert entry.cached(0, 10) == b"h" * 10 and entry.cached(95, 50) == b"t" * 5
    assert entry.cached(5, 10) is None and entry.cached(100, 5) == b""
    whole = Listed("n/b.cast", 12, None, (12, 0, 0), "rec1", b"0123456789", b"89ab")
    assert whole.cached(0, 12) == b"0123456789ab"


# --- the commands, through an inventory -----------------------------------------------------


@pytest.fixture
def inventory(tmp_path: Path, recorders: tuple[LocalRecorder, LocalRecorder],
              monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inventory with a local destination and two recorders, read through LocalRecorder;
    the same path on this machine holds a decoy that must never be listed."""
    decoy = tmp_path / "decoy"
    write_archive(decoy, {"nDECOYCNTRL/20261124T000000-decoy.cast": archive()[
        f"{DB}/20261124T103005-c1.cast"]})
    path = tmp_path / "inv.yaml"
    path.write_text(
        "version: 1\ntailnet:\n  credentials:\n    api_token: {env: TS_API_KEY}\n"
        "servers:\n  hosts:\n    web1: {address: 192.0.2.10}\n"
        "recorders:\n  hosts:\n    rec1: {address: 192.0.2.21}\n    rec2: {address: 192.0.2.22}\n"
        f"storage:\n  destination: {DIRECTORY}\n")
    fakes = {r.name: r for r in recorders}
    monkeypatch.setattr(flow, "recorder_connector", lambda inv: lambda t: fakes[t.name])
    return path


def test_the_inventory_names_the_destination_on_its_recorder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dst"
    write_archive(root, archive())
    age(root)
    recorder = LocalRecorder("rec1", root)
    monkeypatch.setattr(flow, "recorder_connector", lambda inv: lambda t: recorder)
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        "version: 1\ntailnet:\n  credentials:\n    api_token: {env: TS_API_KEY}\n"
        "servers:\n  hosts:\n    web1: {address: 192.0.2.10}\n"
        "recorders:\n  hosts:\n    rec1: {address: 192.0.2.21}\n"
        f"storage:\n  destination: {DIRECTORY}\n")
    cli.run_list(RecordingsLocation(inventory=inventory), Filter(nodes=(WEB,)), "start", False,
                 "json")
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["recordings"]) == 3
    assert {r["recorder"] for r in listed["recordings"]} == {"rec1"}
    assert len(recorder.scripts) == 1  # one listing; every header and ending came with it


def test_list_show_and_search_through_the_inventory(
        inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = RecordingsLocation(inventory=inventory)
    cli.run_list(source, Filter(), "start", False, "json")
    listed = json.loads(capsys.readouterr().out)
    recorders = {r["id"]: r["recorder"] for r in listed["recordings"]}
    assert recorders[f"{DB}/20261201T080000-r2"] == "rec2"
    assert recorders[f"{WEB}/20261124T093005-a1"] == "rec1"
    assert not any("DECOY" in key for key in recorders)
    assert {"key": f"{WEB}/link.cast", "kind": "not-a-file", "recorder": "rec1",
            "detail": "a symbolic link named like a recording: not read"} in listed["problems"]
    cli.run_list(source, Filter(nodes=(DB,)), "start", False, "table")
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "NODE", "RECORDER"]
    assert any(line.startswith(f"{DB}/20261201T080000-r2 ") and " rec2 " in line
               for line in table)
    cli.run_show(source, f"{DB}/20261201T080000-r2", "json")
    assert json.loads(capsys.readouterr().out)["recorder"] == "rec2"
    cli.run_search(source, Filter(), "secret-token", False, 0, "json")
    (match,) = json.loads(capsys.readouterr().out)["matches"]
    assert (match["id"], match["recorder"]) == (f"{DB}/20261124T163005-utf8", "rec1")


def test_seal_and_verify_read_every_recorder_and_refuse_when_one_is_not_read(
        inventory: Path, recorders: tuple[LocalRecorder, LocalRecorder], tmp_path: Path) -> None:
    source = RecordingsLocation(inventory=inventory)
    create_key_file(tmp_path / "seal.key")
    key = KeySource(file=tmp_path / "seal.key")
    events = Recorded()
    sealed = flow.seal(source, tmp_path / "m1.json", key, events)
    assert sealed.store == f"{DIRECTORY} on rec1, rec2"
    assert sealed.count == len(archive()) + 2  # rec1's archive and huge file, rec2's own
    assert ("not-a-file", f"{WEB}/link.cast") in {(p.kind, p.key) for p in sealed.problems}
    checked = flow.verify(source, tmp_path / "m1.json", key, None, events)
    assert checked.findings.intact == sealed.count and not checked.findings.drift
    recorders[1].unreachable = "connection refused"
    with pytest.raises(RecordersUnread, match="cannot seal: unreachable: recorder rec2"):
        flow.seal(source, tmp_path / "m2.json", key, events)
    assert not (tmp_path / "m2.json").exists()
    with pytest.raises(RecordersUnread, match="cannot verify: unreachable: recorder rec2"):
        flow.verify(source, tmp_path / "m1.json", key, None, events)


def test_an_unreachable_recorder_fails_list_after_the_output(
        inventory: Path, recorders: tuple[LocalRecorder, LocalRecorder],
        capsys: pytest.CaptureFixture[str]) -> None:
    recorders[1].unreachable = "connection refused"
    source = RecordingsLocation(inventory=inventory)
    with pytest.raises(SystemExit) as ended:
        cli.run_list(source, Filter(), "start", False, "json")
    assert ended.value.code == 1
    out, err = capsys.readouterr()
    listed = json.loads(out)  # the one document, then one line on stderr
    assert listed["recordings"] and {r["recorder"] for r in listed["recordings"]} == {"rec1"}
    assert {"key": "", "kind": "unreachable", "detail": "connection refused",
            "recorder": "rec2"} in listed["problems"]
    assert "1 recorder(s) not read (rec2)" in err
    with pytest.raises(RecordersUnread, match="not read"):
        cli.run_list(source, Filter(), "start", False, "table")
    out, err = capsys.readouterr()
    assert "unreachable: recorder rec2: connection refused" in err
    assert f"{DB}/20261124T103005-c1" in out


def test_an_inventory_without_recorders_says_to_use_from(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("version: 1\ntailnet:\n  credentials:\n    api_token: {env: TS_API_KEY}\n"
                    "servers:\n  hosts:\n    web1: {address: 192.0.2.10}\n"
                    f"storage:\n  destination: {DIRECTORY}\n")
    with pytest.raises(TsopsError, match="no recorders; read a directory here with --from"):
        flow.open_store(RecordingsLocation(inventory=path))


# --- Remote.stream's channel, with a fake paramiko channel ----------------------------------


class FakeChannel:
    """An exec channel that gives scripted stdout chunks, stderr and an exit status."""

    def __init__(self, out: list[bytes], err: bytes = b"", status: int = 0,
                 cut_after: int | None = None) -> None:
        self.out, self.err, self.status, self.cut_after = list(out), err, status, cut_after
        self.command = ""
        self.closed = False
        self.given = 0

    def settimeout(self, timeout: float) -> None:
        assert timeout > 0

    def exec_command(self, command: str) -> None:
        self.command = command

    def shutdown_write(self) -> None:
        pass

    def recv(self, size: int) -> bytes:
        if self.cut_after is not None and self.given == self.cut_after:
            raise TimeoutError
        self.given += 1
        return self.out.pop(0) if self.out else b""

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_stderr(self, size: int) -> bytes:
        data, self.err = self.err, b""
        return data

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel

    def open_session(self, timeout: float) -> FakeChannel:
        return self.channel


def streamed(channel: FakeChannel) -> Iterator[bytes]:
    """Remote.stream's channel loop over a fake channel."""
    from tsops.remote import stream_channel

    transport: Any = FakeTransport(channel)
    return stream_channel("rec1", transport, "sh -c 'cat x'", "reading x", 15)


def test_a_streamed_command_gives_bytes_as_they_come_and_its_failure_after() -> None:
    ok = FakeChannel([b"\x00\xffbinary", b"\n more"])
    chunks = streamed(ok)
    assert ok.command == ""  # nothing runs before the first chunk is asked for
    assert list(chunks) == [b"\x00\xffbinary", b"\n more"] and ok.closed
    assert ok.command == "sh -c 'cat x'"
    failing = FakeChannel([b"partial"], err=b"sh: 1: cd: can't cd to /srv/recordings\n",
                          status=3)
    got: list[bytes] = []
    with pytest.raises(CommandFailed, match="reading x failed \\(exit 3\\): sh: 1: cd"):
        got.extend(streamed(failing))
    assert got == [b"partial"] and failing.closed
    silent = FakeChannel([b"a"], cut_after=1)
    with pytest.raises(HostUnreachable, match="sent nothing for"):
        list(streamed(silent))
    assert silent.closed
