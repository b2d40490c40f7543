"""Sealing for auditors: key files and variables, the public key, no silent overwrite, chained
manifests; and export's checkpoint keyed by version, so a rewritten recording is sent again.

Bad input is checked the way an operator meets it: one line on standard error, exit 2 (or 3 for
tampering), and the files on disk as they were.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import keyring.core
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.unit.test_recordings import DB, WEB, archive, write_archive
from tests.unit.test_secrets import MemoryKeyring
from tsops.cli import recordings as cli
from tsops.cli.console import ConsoleEvents
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.flows import recordings as flow
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.recordings.catalog import Filter
from tsops.recordings.export import Checkpoint
from tsops.recordings.integrity import (
    FORMATS,
    ChainBroken,
    KeySource,
    KeySourceError,
    ManifestError,
    ManifestExists,
    SignatureMismatch,
    canonical,
    private_key_text,
    public_key_text,
    read_key_file,
)

REPO = Path(__file__).resolve().parents[2]
DAY = datetime.datetime(2026, 12, 1, 3, 15, tzinfo=datetime.UTC)
A1 = f"{WEB}/20261124T093005-a1.cast"
C1 = f"{DB}/20261124T103005-c1.cast"


@pytest.fixture(autouse=True)
def ring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    """An empty in-memory keyring, so no test reaches the machine's own."""
    backend = MemoryKeyring()
    monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
    return backend


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    """A local destination holding archive()."""
    write_archive(tmp_path / "dst", archive())
    return tmp_path / "dst"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A sealing key made by `new-key` into a file."""
    path = tmp_path / "keys" / "seal.key"
    path.parent.mkdir()
    cli.run_new_key(KeySource.chosen(file=path))
    return path


def tsops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way an operator does (no keyring: a backend that has none)."""
    environment = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
                   **(env or {})}
    return subprocess.run([sys.executable, "-m", "tsops", "recordings", *args],
                          capture_output=True, text=True, check=False, cwd=REPO,
                          env=environment)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    """The command failed with `code` and exactly one line on stderr holding every part."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


def at(days: int) -> datetime.datetime:
    """A nightly seal's time."""
    return DAY + datetime.timedelta(days=days)


# --- key sources ---------------------------------------------------------------------------


def test_new_key_writes_a_0600_file_and_never_overwrites_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "seal.key"
    cli.run_new_key(KeySource.chosen(file=path))
    public = capsys.readouterr().out.strip()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    key = read_key_file(path)
    assert public == public_key_text(key.public_key())
    before = path.read_bytes()
    result = tsops("new-key", "--key-file", str(path))
    one_line_error(result, 2, str(path), "never overwritten")
    assert path.read_bytes() == before


def test_seal_with_a_key_file_and_verify_with_the_public_key_an_auditor_keeps(
        dst: Path, key_file: Path, tmp_path: Path, ring: MemoryKeyring) -> None:
    shown = tsops("public-key", "--key-file", str(key_file))
    assert shown.returncode == 0, shown.stderr
    public = shown.stdout.strip()
    assert len(shown.stdout.splitlines()) == 1
    assert len(base64.b64decode(public)) == 32
    assert public == public_key_text(read_key_file(key_file).public_key())
    auditor = tmp_path / "seal.pub"
    auditor.write_text(shown.stdout)
    manifest = tmp_path / "m.json"
    sealed = tsops("seal", "--from", str(dst), "--key-file", str(key_file), "-m", str(manifest))
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(manifest.read_text())["manifest"]["public_key"] == public
    checked = tsops("verify", "--from", str(dst), "-m", str(manifest), "--public-key",
                    str(auditor))
    assert checked.returncode == 0, checked.stderr
    assert "9 intact, 0 missing" in checked.stdout
    derived = tsops("verify", "--from", str(dst), "-m", str(manifest), "--key-file",
                    str(key_file))
    assert derived.returncode == 0, derived.stderr
    assert ring.values == {}
    other = tmp_path / "other.pub"
    other.write_text(public_key_text(Ed25519PrivateKey.generate().public_key()) + "\n")
    forged = tsops("verify", "--from", str(dst), "-m", str(manifest), "--public-key", str(other))
    one_line_error(forged, 3, str(manifest), "sealed with another key")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o660])
def test_a_key_file_with_loose_permissions_is_refused_and_nothing_is_written(
        dst: Path, key_file: Path, tmp_path: Path, mode: int) -> None:
    key_file.chmod(mode)
    manifest = tmp_path / "m.json"
    result = tsops("seal", "--from", str(dst), "--key-file", str(key_file), "-m", str(manifest))
    one_line_error(result, 2, str(key_file), f"mode {mode:04o}", "0600 or stricter")
    assert not manifest.exists()
    for command in (["public-key"], ["verify", "--from", str(dst), "-m", str(manifest)]):
        one_line_error(tsops(*command, "--key-file", str(key_file)), 2, f"mode {mode:04o}")


def test_a_read_only_key_file_is_strict_enough(key_file: Path) -> None:
    key_file.chmod(0o400)
    assert read_key_file(key_file).public_key() is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_key_file_of_another_user_is_refused(key_file: Path) -> None:
    os.chown(key_file, 4242, 4242)
    with pytest.raises(KeySourceError, match="owned by uid 4242, not by this user") as raised:
        read_key_file(key_file)
    assert raised.value.exit_code == ExitCode.BAD_INPUT


def test_a_symlinked_missing_or_foreign_key_file_is_refused(tmp_path: Path,
                                                            key_file: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(key_file)
    with pytest.raises(KeySourceError, match="a symbolic link; give the key file itself"):
        read_key_file(link)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeySourceError, match="not a regular file"):
        read_key_file(fifo)
    with pytest.raises(KeySourceError, match="no such key file; create one with"):
        read_key_file(tmp_path / "nope.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    with pytest.raises(KeySourceError, match="not a sealing key"):
        read_key_file(garbage)


def test_a_key_in_an_environment_variable_base64_or_pem(dst: Path, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public = public_key_text(key.public_key())
    for value in (private_key_text(key), pem):
        shown = tsops("public-key", "--key-env", "SEAL_KEY", env={"SEAL_KEY": value})
        assert (shown.returncode, shown.stdout.strip()) == (0, public), shown.stderr
        assert value.strip() not in shown.stdout + shown.stderr
    manifest = tmp_path / "m.json"
    sealed = tsops("seal", "--from", str(dst), "-m", str(manifest), "--key-env", "SEAL_KEY",
                   env={"SEAL_KEY": private_key_text(key)})
    assert sealed.returncode == 0, sealed.stderr
    one_line_error(tsops("public-key", "--key-env", "UNSET_SEAL_KEY"), 2,
                   "UNSET_SEAL_KEY", "not set")
    one_line_error(tsops("public-key", "--key-env", "SEAL_KEY", env={"SEAL_KEY": "abc"}), 2,
                   "not a sealing key")


def test_one_key_source_at_a_time(key_file: Path, tmp_path: Path) -> None:
    one_line_error(tsops("public-key", "--key", "tsops/x", "--key-file", str(key_file)), 2,
                   "at most one of --key, --key-file, --key-env")
    one_line_error(tsops("verify", "--from", str(tmp_path), "-m", "m.json", "--key-file",
                         str(key_file), "--public-key", "abc"), 2, "--public-key", "excludes")
    one_line_error(tsops("new-key"), 1, "no secure keyring")


def test_new_key_in_the_keyring_never_replaces_one(ring: MemoryKeyring,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cli.run_new_key(KeySource.chosen("tsops/seal"))
    public = capsys.readouterr().out.strip()
    stored = ring.values[("tsops", "seal")]
    with pytest.raises(UsageError, match="already holds a key"):
        cli.run_new_key(KeySource.chosen("tsops/seal"))
    assert ring.values[("tsops", "seal")] == stored
    cli.run_public_key(KeySource.chosen("tsops/seal"))
    assert capsys.readouterr().out.strip() == public


# --- no silent overwrite -------------------------------------------------------------------


def test_seal_refuses_to_replace_a_manifest_without_force(
        dst: Path, key_file: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text("the auditor's copy\n")
    result = tsops("seal", "--from", str(dst), "--key-file", str(key_file), "-m", str(manifest))
    one_line_error(result, 2, str(manifest), "--force")
    assert manifest.read_text() == "the auditor's copy\n"
    forced = tsops("seal", "--from", str(dst), "--key-file", str(key_file), "-m", str(manifest),
                   "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(manifest.read_text())["manifest"]["format"] == FORMATS[-1]


def test_a_manifest_that_appears_while_sealing_is_not_replaced(
        dst: Path, key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "m.json"
    real = flow.open_store

    def open_then_race(where: RecordingsLocation) -> object:
        manifest.write_text("written meanwhile\n")
        return real(where)

    monkeypatch.setattr(flow, "open_store", open_then_race)
    with pytest.raises(ManifestExists):
        flow.seal(RecordingsLocation(str(dst)), manifest, KeySource(file=key_file),
                  ConsoleEvents())
    assert manifest.read_text() == "written meanwhile\n"


# --- chained manifests ---------------------------------------------------------------------


def seal_into(directory: Path, dst: Path, key_file: Path, day: int) -> Path:
    """One nightly seal into a manifest directory; the manifest it wrote."""
    sealed = flow.seal(RecordingsLocation(str(dst)), None, KeySource(file=key_file),
                       ConsoleEvents(), directory=directory, now=at(day))
    assert sealed.path is not None
    return sealed.path


def test_a_recording_deleted_between_two_seals_is_tampering(
        dst: Path, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seals = tmp_path / "seals"
    first = seal_into(seals, dst, key_file, 0)
    assert first.name == "20261201T031500Z.json"
    assert json.loads(first.read_text())["manifest"]["previous"] is None
    (dst / A1).unlink()
    with pytest.raises(DriftFound) as raised:
        cli.run_seal(RecordingsLocation(str(dst)), None, KeySource(file=key_file),
                     directory=seals)
    assert raised.value.exit_code == ExitCode.DRIFT
    assert A1 in raised.value.message and str(first) in raised.value.message
    out = capsys.readouterr().out
    second = seals / out.split(" in ", 1)[1].split("\n", 1)[0]
    assert second.exists() and f"previous manifest: {first}" in out
    assert f"deleted     {A1}  (sealed in {first}, missing from {second})" in out
    link = json.loads(second.read_text())["manifest"]["previous"]
    assert link["name"] == first.name and len(link["sha256"]) == 64
    with pytest.raises(DriftFound) as raised:
        cli.run_verify(RecordingsLocation(str(dst)), None, KeySource(file=key_file), None,
                       "json", directory=seals)
    assert raised.value.exit_code == ExitCode.DRIFT
    assert A1 in raised.value.message
    found = json.loads(capsys.readouterr().out)
    assert found["between_manifests"] == [{"key": A1, "kind": "deleted",
                                           "sealed_in": str(first), "then": str(second)}]
    assert found["chain"] == [str(first), str(second)]
    assert (found["missing"], found["intact"]) == ([], 8)


def test_an_intact_chain_verifies(dst: Path, key_file: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    seals = tmp_path / "seals"
    for day in range(3):
        seal_into(seals, dst, key_file, day)
    (dst / DB / "20261202T000000-new.cast").write_bytes((dst / C1).read_bytes())
    seal_into(seals, dst, key_file, 3)
    cli.run_verify(RecordingsLocation(str(dst)), None, KeySource(file=key_file), None,
                   "table", directory=seals)
    out = capsys.readouterr().out
    assert "chain of 4 manifest(s) from " in out
    assert ": signatures and links good; 0 recording(s) deleted or changed between them" in out
    assert "10 intact, 0 missing, 0 altered, 0 unexpected" in out


@pytest.mark.parametrize("which", ["middle", "first"])
def test_a_chain_with_a_missing_link_is_tampering(dst: Path, key_file: Path, tmp_path: Path,
                                                  which: str) -> None:
    seals = tmp_path / "seals"
    made = [seal_into(seals, dst, key_file, day) for day in range(3)]
    (made[1] if which == "middle" else made[0]).unlink()
    result = tsops("verify", "--from", str(dst), "--manifest-dir", str(seals), "--key-file",
                   str(key_file))
    missing = made[1].name if which == "middle" else made[0].name
    one_line_error(result, 3, missing, "link of the chain is missing")


def test_a_manifest_altered_and_signed_again_breaks_the_next_link(
        dst: Path, key_file: Path, tmp_path: Path) -> None:
    seals = tmp_path / "seals"
    made = [seal_into(seals, dst, key_file, day) for day in range(3)]
    document = json.loads(made[1].read_text())
    del document["manifest"]["recordings"][A1]  # hide a recording that was there that night
    key = read_key_file(key_file)
    document["signature"] = base64.b64encode(key.sign(canonical(document["manifest"]))).decode()
    made[1].write_text(json.dumps(document))
    with pytest.raises(ChainBroken, match="missing or was altered") as raised:
        flow.verify(RecordingsLocation(str(dst)), None, KeySource(file=key_file), None,
                    ConsoleEvents(), directory=seals)
    assert raised.value.exit_code == ExitCode.DRIFT
    assert str(made[2]) in raised.value.message and str(made[1]) in raised.value.message


def test_a_manifest_that_is_not_ours_is_bad_input_and_nothing_is_written(
        dst: Path, key_file: Path, tmp_path: Path) -> None:
    seals = tmp_path / "seals"
    first = seal_into(seals, dst, key_file, 0)
    foreign = seals / "20261202T031500Z.json"
    foreign.write_text('{"manifest": {"format": "someone-else/1"}, "signature": ""}')
    before = sorted(p.name for p in seals.iterdir())
    sealed = tsops("seal", "--from", str(dst), "--key-file", str(key_file), "--manifest-dir",
                   str(seals))
    one_line_error(sealed, 2, str(foreign), "not a tsops recordings manifest")
    assert sorted(p.name for p in seals.iterdir()) == before
    checked = tsops("verify", "--from", str(dst), "--key-file", str(key_file),
                    "--manifest-dir", str(seals))
    one_line_error(checked, 2, str(foreign), "not a tsops recordings manifest")
    explicit = tmp_path / "next.json"
    chained = tsops("seal", "--from", str(dst), "--key-file", str(key_file), "-m",
                    str(explicit), "--previous", str(foreign))
    one_line_error(chained, 2, str(foreign), "not a tsops recordings manifest")
    assert not explicit.exists()
    assert first.exists()


def test_seal_never_chains_onto_a_manifest_of_another_key(
        dst: Path, key_file: Path, tmp_path: Path) -> None:
    seals = tmp_path / "seals"
    other = tmp_path / "other.key"
    cli.run_new_key(KeySource(file=other))
    seal_into(seals, dst, other, 0)
    before = sorted(p.name for p in seals.iterdir())
    with pytest.raises(SignatureMismatch, match="sealed with another key"):
        seal_into(seals, dst, key_file, 1)
    assert sorted(p.name for p in seals.iterdir()) == before


def test_explicit_previous_and_format_1_manifests(
        dst: Path, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = RecordingsLocation(str(dst))
    source = KeySource(file=key_file)
    old = tmp_path / "old.json"
    cli.run_seal(where, old, source)
    document = json.loads(old.read_text())  # as an older tsops wrote it: format /1, no link
    del document["manifest"]["previous"]
    document["manifest"]["format"] = FORMATS[0]
    key = read_key_file(key_file)
    document["signature"] = base64.b64encode(key.sign(canonical(document["manifest"]))).decode()
    old.write_text(json.dumps(document))
    new = tmp_path / "new.json"
    (dst / C1).write_bytes((dst / C1).read_bytes().replace(b"3 days", b"4 days"))
    with pytest.raises(DriftFound, match="altered between"):
        cli.run_seal(where, new, source, previous=old)
    assert f"altered     {C1}  (sealed in {old}, changed in {new})" in capsys.readouterr().out
    with pytest.raises(DriftFound, match="altered between"):
        cli.run_verify(where, new, source, None, "table", previous=old)
    with pytest.raises(UsageError, match="it is the manifest being written"):
        cli.run_seal(where, new, source, previous=new, force=True)
    with pytest.raises(UsageError, match="exactly one of --manifest FILE or --manifest-dir"):
        cli.run_seal(where, None, source)
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        cli.run_verify(where, new, source, None, "table", previous=tmp_path / "none.json")


def test_seal_refuses_a_previous_manifest_of_another_destination(
        dst: Path, key_file: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    elsewhere = tmp_path / "elsewhere"
    write_archive(elsewhere, archive())
    cli.run_seal(RecordingsLocation(str(elsewhere)), old, KeySource(file=key_file))
    with pytest.raises(UsageError, match="chain manifests of one destination only"):
        cli.run_seal(RecordingsLocation(str(dst)), tmp_path / "new.json",
                     KeySource(file=key_file), previous=old)
    assert not (tmp_path / "new.json").exists()


# --- export: the checkpoint keyed by version ------------------------------------------------


def export(dst: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str],
           form: str = "jsonl") -> tuple[list[dict[str, object]], str]:
    """Run one export; its events and standard error."""
    cli.run_export(RecordingsLocation(str(dst)), Filter(), form, False,  # type: ignore[arg-type]
                   checkpoint)
    out, err = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()], err


def test_a_rewritten_recording_is_exported_again_and_flagged(
        dst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "cp.json"
    events, _ = export(dst, checkpoint, capsys)
    assert len(events) == 6 and not any(e["rewritten"] for e in events)
    first = next(e for e in events if e["id"] == C1.removesuffix(".cast"))
    assert str(first["version"]).startswith("sha256:")
    path = dst / C1
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b"3 days", b"4 days"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the mtime set back
    (dst / WEB / "20261124T093005-a1.cast").chmod(0o600)  # metadata only: not a rewrite
    events, err = export(dst, checkpoint, capsys)
    (event,) = events
    assert event["id"] == C1.removesuffix(".cast")
    assert event["rewritten"] is True
    assert event["previous_version"] == first["version"]
    assert event["version"] != first["version"]
    assert f"warning: rewritten: {C1}: exported before as version {first['version']}" in err
    assert "exported 1 session(s)" in err and "1 of them rewritten" in err
    assert export(dst, checkpoint, capsys)[0] == []
    path.write_bytes(path.read_bytes().replace(b"4 days", b"5 days"))
    (ecs,), _ = export(dst, checkpoint, capsys, "ecs")
    assert ecs["labels"]["rewritten"] == "true"  # type: ignore[index]
    assert ecs["labels"]["previous_version"] == event["version"]  # type: ignore[index]
    assert ecs["event"]["kind"] == "alert"  # type: ignore[index]
    assert ecs["event"]["action"] == "ssh-session-recording-rewritten"  # type: ignore[index]


def test_a_version_1_checkpoint_is_read_and_upgraded(
        dst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "cp.json"
    old_keys = sorted([A1, C1])
    checkpoint.write_text(json.dumps({"version": 1, "source": str(dst), "saved": "x",
                                      "exported": old_keys}))
    events, err = export(dst, checkpoint, capsys)
    assert len(events) == 4 and {A1, C1}.isdisjoint(f"{e['id']}.cast" for e in events)
    assert "2 session(s) exported by an older checkpoint" in err
    saved = json.loads(checkpoint.read_text())
    assert saved["version"] == 2 and saved["exported"][C1]["version"].startswith("sha256:")
    (dst / C1).write_bytes((dst / C1).read_bytes().replace(b"3 days", b"4 days"))
    (event,), _ = export(dst, checkpoint, capsys)
    assert (event["id"], event["rewritten"]) == (C1.removesuffix(".cast"), True)


def test_a_version_1_checkpoint_keeps_recordings_outside_the_filter(
        dst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text(json.dumps({"version": 1, "exported": [A1, C1]}))
    cli.run_export(RecordingsLocation(str(dst)), Filter(nodes=(DB,)), "jsonl", False,
                   checkpoint)
    capsys.readouterr()
    assert json.loads(checkpoint.read_text())["exported"][A1] == {"version": None,
                                                                  "stat": None}
    events, _ = export(dst, checkpoint, capsys)
    assert A1.removesuffix(".cast") not in [e["id"] for e in events]


@pytest.mark.parametrize("content", [
    '{"version": 2, "exported": ["a"]}',
    '{"version": 2, "exported": {"a": {"version": 5}}}',
    '{"version": 3, "exported": {}}',
    '{"version": 2, "exported": {"a": "s3:x"}}',
])
def test_a_damaged_checkpoint_is_refused_and_kept(tmp_path: Path, dst: Path,
                                                  content: str) -> None:
    path = tmp_path / "cp.json"
    path.write_text(content)
    with pytest.raises(UsageError, match="not a tsops export checkpoint"):
        Checkpoint(path)
    result = tsops("export", "--from", str(dst), "--checkpoint", str(path))
    one_line_error(result, 2, str(path), "not a tsops export checkpoint")
    assert path.read_text() == content


def test_errors_of_the_seal_family_exit_as_documented() -> None:
    assert KeySourceError("x").exit_code == ExitCode.BAD_INPUT
    assert ManifestError("x").exit_code == ExitCode.BAD_INPUT
    assert ManifestExists("x").exit_code == ExitCode.BAD_INPUT
    assert ChainBroken("x").exit_code == ExitCode.DRIFT
    assert SignatureMismatch("x").exit_code == ExitCode.DRIFT
    assert isinstance(ChainBroken("x"), TsopsError)


class NoVersionListing:
    """An S3 client whose credentials may read objects but not list their versions."""

    def __init__(self) -> None:
        self.heads: list[str] = []

    def get_paginator(self, name: str) -> object:
        from botocore.exceptions import ClientError

        assert name == "list_object_versions"

        class Refusing:
            def paginate(self, **_: object) -> object:
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}},
                                  "ListObjectVersions")

        return Refusing()

    def head_object(self, Bucket: str, Key: str) -> dict[str, str]:
        self.heads.append(Key)
        return {"VersionId": f"v-{Key}", "ETag": '"e"'} if "a1" in Key else {"ETag": '"e2"'}


def test_s3_versions_come_from_a_head_per_key_when_listing_versions_is_denied() -> None:
    from tsops.recordings.export import versions
    from tsops.recordings.store import S3Store

    client = NoVersionListing()
    store = S3Store(client, "bucket", "rec")  # type: ignore[arg-type]
    found = versions(store, [A1, C1], {})
    assert {key: v.token for key, v in found.items()} == {A1: f"s3:v-rec/{A1}", C1: "etag:e2"}
    assert client.heads == sorted([f"rec/{A1}", f"rec/{C1}"])


def test_a_seal_not_after_the_newest_manifest_is_refused(dst: Path, key_file: Path,
                                                         tmp_path: Path) -> None:
    seals = tmp_path / "seals"
    newest = seal_into(seals, dst, key_file, 1)
    for day in (1, 0):  # the same second, and a clock set back
        with pytest.raises(UsageError, match=f"not after the newest manifest {newest.name}"):
            seal_into(seals, dst, key_file, day)
    assert [p.name for p in seals.iterdir()] == [newest.name]
