"""Rewriting the operator's files: exclusive temporary file, symlinks kept, concurrent edits
refused, private history."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tsops.files import FileChangedMeanwhile, replace_file, write_private
from tsops.policy.store import FileSource, History, PolicyChangedMeanwhile, Snapshot


def test_a_symlinked_file_stays_a_symlink_and_keeps_its_mode(tmp_path: Path) -> None:
    real = tmp_path / "repo" / "policy.hujson"
    real.parent.mkdir()
    real.write_bytes(b"old\n")
    real.chmod(0o640)
    link = tmp_path / "policy.hujson"
    link.symlink_to(real)
    replace_file(link, b"new\n", expected=b"old\n")
    assert link.is_symlink() and link.resolve() == real
    assert real.read_bytes() == b"new\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["policy.hujson"]


def test_a_file_changed_since_it_was_read_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_bytes(b"edited by someone else\n")
    with pytest.raises(FileChangedMeanwhile, match="changed since tsops read it"):
        replace_file(path, b"ours\n", expected=b"what tsops read\n")
    assert path.read_bytes() == b"edited by someone else\n"
    assert [p.name for p in tmp_path.iterdir()] == ["inventory.yaml"]


def test_a_planted_temporary_name_is_never_written_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.hujson"
    path.write_bytes(b"old\n")
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched\n")
    names = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr("tsops.files.secrets.token_hex", lambda n: next(names))
    (tmp_path / ".policy.hujson.tsops-aaaaaaaa.tmp").symlink_to(victim)
    replace_file(path, b"new\n", expected=b"old\n")
    assert path.read_bytes() == b"new\n" and victim.read_bytes() == b"untouched\n"


def test_write_private_creates_an_owner_only_file_and_never_reuses_one(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    write_private(path, b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private(path, b"again")


def test_policy_file_source_keeps_a_symlink_and_refuses_a_concurrent_edit(tmp_path: Path) -> None:
    real = tmp_path / "policy.hujson"
    real.write_text("{}\n")
    link = tmp_path / "link.hujson"
    link.symlink_to(real)
    source = FileSource(link, None)
    snapshot = source.read()
    source.write('{"ssh": []}\n', snapshot.etag)
    assert link.is_symlink() and real.read_text() == '{"ssh": []}\n'
    with pytest.raises(PolicyChangedMeanwhile):
        source.write("{}\n", snapshot.etag)


def test_policy_history_is_private(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    history.add(Snapshot("{}\n", "a"), Snapshot('{"ssh": []}\n', "b"), "apply")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in history.directory.iterdir()}
    assert modes == {"0001.json": 0o600, "0001.before.hujson": 0o600,
                     "0001.after.hujson": 0o600}
    assert stat.S_IMODE(history.directory.stat().st_mode) & 0o077 == 0
    assert os.access(history.directory / "0001.json", os.R_OK)


def test_an_inventory_edit_keeps_a_symlink_and_refuses_a_concurrent_edit(tmp_path: Path) -> None:
    from tsops.inventory.file import candidate, commit

    text = "version: 1\ntailnet:\n  credentials: {api_token: {env: TS_API_KEY}}\n"
    real = tmp_path / "real.yaml"
    real.write_text(text)
    link = tmp_path / "inventory.yaml"
    link.symlink_to(real)
    edited = text + "servers:\n  hosts: {web1: }\n"
    with candidate(link, edited, "nothing was changed") as (_, loaded):
        assert [t.name for t in loaded.servers] == ["web1"]
        commit(link, text, edited)
    assert link.is_symlink() and real.read_text() == edited
    with pytest.raises(FileChangedMeanwhile, match="changed since tsops read it"):
        commit(link, text, text + "# ours\n")
    assert real.read_text() == edited
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "real.yaml"]


def test_a_damaged_policy_history_record_is_one_line_naming_it(tmp_path: Path) -> None:
    from tsops.errors import TsopsError

    history = History(tmp_path / "state")
    history.add(Snapshot("{}\n", "a"), Snapshot('{"ssh": []}\n', "b"), "apply")
    (history.directory / "0001.json").write_text('{"number": ')
    with pytest.raises(TsopsError, match=r"0001.json: not a readable record of a policy write"):
        history.last()
