"""Recordings read straight from the lab's S3 server (moto), damaged ones included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import keyring.core
import pytest

from tests.lab.s3 import S3Server
from tests.sim.recorder.cast import OutputChunk, cast_header, render_cast
from tests.unit.test_recordings import ALICE, DB, START, WEB, archive
from tests.unit.test_secrets import MemoryKeyring
from tsops.cli import recordings as cli
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.recordings.catalog import Filter, Problem, find, probe, scan
from tsops.recordings.search import compile_pattern, search
from tsops.recordings.store import RecordingMissing, S3Store, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
BUCKET = "recordings-lab"


@pytest.fixture
def bucket(s3: S3Client) -> S3Client:
    """A bucket holding archive() below the prefix `rec/`, plus a file that is no recording."""
    s3.create_bucket(Bucket=BUCKET)
    for key, data in archive().items():
        s3.put_object(Bucket=BUCKET, Key=f"rec/{key}", Body=data)
    s3.put_object(Bucket=BUCKET, Key="rec/README.txt", Body=b"not a recording")
    s3.put_object(Bucket=BUCKET, Key=f"other/{WEB}/x.cast", Body=b"outside the prefix")
    return s3


def test_scan_in_s3_lists_good_and_reports_bad(bucket: S3Client) -> None:
    found = scan(S3Store(bucket, BUCKET, "rec"))
    assert len(found.recordings) == 6
    assert sorted(p.kind for p in found.problems) == ["bad-header", "bad-header", "empty",
                                                      "truncated"]
    a2 = next(r for r in found.recordings if r.id.endswith("a2"))
    assert (a2.header.local_user, a2.duration is not None and a2.duration > 30) == ("root", True)


def test_listing_reads_a_few_kib_per_recording_even_when_huge(s3: S3Client) -> None:
    s3.create_bucket(Bucket=BUCKET)
    header = cast_header(source=ALICE, ssh_user="alice", started=START)
    line = "x" * 200 + "\r\n"
    for name, count in (("small", 20), ("large", 50_000)):
        events = [OutputChunk(i * 0.01, line) for i in range(count)]
        s3.put_object(Bucket=BUCKET, Key=f"{WEB}/{name}.cast", Body=render_cast(header, events))
    reads = {}
    for name in ("small", "large"):
        store = S3Store(s3, BUCKET)
        info = next(i for i in store.list() if i.key.endswith(f"{name}.cast"))
        recording = probe(store, info)
        assert not isinstance(recording, Problem)
        reads[name] = (info.size, store.bytes_read, recording.duration)
    assert reads["large"][0] > 10 << 20
    assert reads["large"][1] <= 64 << 10
    assert reads["large"][2] == pytest.approx(499.99)
    assert reads["small"][1] == reads["small"][0]


def test_search_and_missing_ids_in_s3(bucket: S3Client) -> None:
    store = S3Store(bucket, BUCKET, "rec/")
    recordings = [r for r in scan(store).recordings if Filter(nodes=(DB,)).keeps(r)]
    results = list(search(store, recordings, compile_pattern("secret-TOKEN", True)))
    matches = [m for r in results for m in r.matches]
    assert [(m.key.removesuffix(".cast"), m.line_number) for m in matches] == [
        (f"{DB}/20261124T163005-utf8", 3)]
    assert {p.kind for r in results for p in r.problems} == {"bad-event", "invalid-utf8"}
    with pytest.raises(RecordingMissing):
        find(store, f"{DB}/nope")
    with pytest.raises(StoreError, match="cannot list"):
        list(S3Store(bucket, "no-such-bucket").list())


def test_seal_and_verify_in_s3(bucket: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str], s3_server: S3Server) -> None:
    monkeypatch.setattr(keyring.core, "_keyring_backend", MemoryKeyring())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    source = RecordingsLocation(f"s3://{BUCKET}/rec", endpoint=s3_server.endpoint,
                                region="us-east-1")
    manifest = tmp_path / "manifest.json"
    cli.run_seal(source, manifest, "tsops/seal")
    assert "sealed 9 recording(s) of s3://recordings-lab/rec" in capsys.readouterr().out
    cli.run_verify(source, manifest, "tsops/seal", None, "table")
    assert "9 intact, 0 missing" in capsys.readouterr().out
    bucket.put_object(Bucket=BUCKET, Key=f"rec/{WEB}/20261124T093005-a1.cast", Body=b"{}\n")
    with pytest.raises(DriftFound):
        cli.run_verify(source, manifest, "tsops/seal", None, "json")
    assert json.loads(capsys.readouterr().out)["altered"] == [f"{WEB}/20261124T093005-a1.cast"]


def test_cli_against_s3(bucket: S3Client, s3_server: S3Server, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}

    def tsops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tsops", "recordings", *args, "--from", f"s3://{BUCKET}/rec",
             "--endpoint", s3_server.endpoint], capture_output=True, text=True, env=env,
            cwd=REPO, check=False)

    listed = tsops("list", "-o", "json", "--user", "deploy")
    assert listed.returncode == 0, listed.stderr
    assert [r["command"] for r in json.loads(listed.stdout)["recordings"]] == [
        "uptime", "", "pg_dump app"]
    assert listed.stderr.count("warning: ") == 4
    checkpoint = tmp_path / "cp.json"
    first = tsops("export", "--format", "ecs", "--checkpoint", str(checkpoint))
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 6
    assert tsops("export", "--checkpoint", str(checkpoint)).stdout == ""
    shown = tsops("cat", "--plain", f"{DB}/20261124T103005-c1")
    assert shown.stdout == " 10:30:05 up 3 days,  load average: 0.00\n"
    played = tsops("play", "--speed", "50", f"{DB}/20261124T103005-c1")
    assert played.returncode == 0 and "load average" in played.stdout
    found = tsops("search", "-C", "1", "restart nginx")
    assert found.stdout.count("restart nginx") == 2 and "+0:00:31" in found.stdout


def test_the_corpus_reads_the_same_from_s3_as_from_a_directory(s3: S3Client,
                                                               tmp_path: Path) -> None:
    """Ranged GETs (head, tail, reading further back) give the same verdicts as local reads."""
    from tests.unit.test_recordings_corpus import NODE, corpus
    from tsops.recordings.store import LocalStore

    s3.create_bucket(Bucket=BUCKET)
    (tmp_path / NODE).mkdir()
    for name, data in corpus().items():
        s3.put_object(Bucket=BUCKET, Key=f"{NODE}/{name}.cast", Body=data)
        (tmp_path / NODE / f"{name}.cast").write_bytes(data)
    remote, local = S3Store(s3, BUCKET), LocalStore(tmp_path)

    def verdicts(store: S3Store | LocalStore) -> tuple[dict[str, object],
                                                      list[tuple[str, str, str]]]:
        found = scan(store)
        return ({r.id: (r.header, r.duration, r.ending) for r in found.recordings},
                sorted((p.key, p.kind, p.detail) for p in found.problems))

    from_s3 = verdicts(remote)
    assert from_s3 == verdicts(local)
    assert len(from_s3[0]) > 50
    pattern = compile_pattern(r"\S", False)
    for remote_result, local_result in zip(
            search(remote, list(remote.list()), pattern), search(local, list(local.list()),
                                                                 pattern), strict=True):
        assert [m.line for m in remote_result.matches] == [m.line for m in local_result.matches]
        assert remote_result.problems == local_result.problems
        assert (remote_result.recording is None) == (local_result.recording is None)
        if remote_result.recording and local_result.recording:
            assert (remote_result.recording.duration, remote_result.recording.ending) == (
                local_result.recording.duration, local_result.recording.ending)
