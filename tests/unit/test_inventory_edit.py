"""Adding and removing a server edits only its own lines: golden files, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tsops.cli import servers
from tsops.errors import UsageError
from tsops.inventory.edit import Edit, NewHost, add_host, remove_host
from tsops.remote import HostUnreachable, RunResult
from tsops.tailscale_api import Device

GOLDEN = Path(__file__).parent.parent / "golden" / "inventory_edit"
WEB3 = NewHost("web3", tags=("tag:web",), user="u", port=2200, address="10.0.0.3")

CASES: list[tuple[str, str, NewHost | str]] = [
    ("inventory.yaml", "add-web3.yaml", WEB3),
    ("inventory.yaml", "add-edge3-to-group.yaml", NewHost("edge3", group="edge")),
    ("inventory.yaml", "remove-db1.yaml", "db1"),
    ("inventory.yaml", "remove-web2.yaml", "web2"),
    ("inventory.yaml", "remove-edge2.yaml", "edge2"),
    ("block-tags.yaml", "block-tags-add-app3.yaml", NewHost("app3", tags=("tag:app", "tag:web"))),
    ("block-tags.yaml", "block-tags-remove-app1.yaml", "app1"),
    ("groups-only.yaml", "groups-only-add-solo.yaml", NewHost("solo", tags=("tag:x",))),
]


def _edit(source: str, change: NewHost | str) -> Edit:
    text = (GOLDEN / source).read_text()
    return add_host(text, change) if isinstance(change, NewHost) else remove_host(text, change)


@pytest.mark.parametrize(("source", "expected", "change"), CASES, ids=[c[1] for c in CASES])
def test_edit_matches_golden(source: str, expected: str, change: NewHost | str) -> None:
    assert _edit(source, change).text == (GOLDEN / f"expected-{expected}").read_text()


@pytest.mark.parametrize(("source", "expected", "change"), CASES, ids=[c[1] for c in CASES])
def test_everything_outside_the_edit_is_byte_identical(
    source: str, expected: str, change: NewHost | str
) -> None:
    before = (GOLDEN / source).read_text().splitlines(keepends=True)
    edit = _edit(source, change)
    after = edit.text.splitlines(keepends=True)
    if isinstance(change, NewHost):
        assert after[:edit.first] + after[edit.last:] == before
    else:
        assert before[:edit.first] + before[edit.last:] == after


def test_added_host_lines_are_exactly_its_fields() -> None:
    edit = _edit("inventory.yaml", WEB3)
    added = edit.text.splitlines()[edit.first:edit.last]
    assert added == ["    web3:", "      address: 10.0.0.3", "      user: u", "      port: 2200",
                     "      tags: [tag:web]"]


def test_removing_a_host_takes_its_inline_and_nested_comments() -> None:
    text = _edit("inventory.yaml", "db1").text
    assert "the database, inline comment" not in text and "notes for db1" not in text
    assert "# groups come after the hosts" in text


def test_removing_the_only_host_drops_the_empty_hosts_key() -> None:
    text = "version: 1\nservers:\n  hosts:\n    only:  # bye\n  groups:\n    g:\n      hosts:\n"
    expected = "version: 1\nservers:\n  groups:\n    g:\n      hosts:\n"
    assert remove_host(text, "only").text == expected


def test_duplicate_unknown_and_bad_group_are_refused() -> None:
    text = (GOLDEN / "inventory.yaml").read_text()
    with pytest.raises(UsageError, match="already in the inventory"):
        add_host(text, NewHost("db1"))
    with pytest.raises(UsageError, match="already in the inventory"):
        add_host(text, NewHost("batch1", group="edge"))
    with pytest.raises(UsageError, match="no server group 'nope'"):
        add_host(text, NewHost("x1", group="nope"))
    with pytest.raises(UsageError, match="not a server"):
        remove_host(text, "nothere")


def test_values_that_yaml_would_misread_are_quoted() -> None:
    edit = add_host((GOLDEN / "groups-only.yaml").read_text(), NewHost("n1", user="yes"))
    assert '\n  hosts:\n    n1:\n      user: "yes"\n' in edit.text


def _tsops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["web9", "--tag", "web"], 'expected a tag like "tag:server"'),
    (["Web_9"], "expected a host name of lowercase letters"),
    (["db1"], "'db1' is already in the inventory"),
    (["edge9", "--group", "nope"], "no server group 'nope'"),
])
def test_add_server_refuses_bad_input_and_leaves_the_file_alone(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "inventory.yaml"
    shutil.copy(GOLDEN / "inventory.yaml", path)
    before = path.read_bytes()
    result = _tsops("add-server", "--yes", "--no-input", str(path), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml"]  # no temp left


def test_a_bad_tag_is_reported_at_the_real_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    shutil.copy(GOLDEN / "inventory.yaml", path)
    result = _tsops("add-server", "--yes", "--no-input", str(path), "web9", "--tag", "web")
    # The line is the one the new host's tag would have had in the edited file.
    assert f"{path}:24:14: servers.hosts.web9.tags[0]" in result.stderr
    assert ".tmp" not in result.stderr


@pytest.mark.parametrize(("name", "message"), [
    ("nothere", "not a server of this inventory"), ("rec1", "a recorder, not a server")])
def test_remove_server_refuses_an_unknown_host(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    shutil.copy(GOLDEN / "inventory.yaml", path)
    before = path.read_bytes()
    result = _tsops("remove-server", "--yes", "--no-input", str(path), name)
    assert result.returncode == 2 and message in result.stderr
    assert path.read_bytes() == before


class _Unreachable:
    """A host that cannot be reached over SSH."""

    def run(self, script: str, **_: object) -> RunResult:
        raise HostUnreachable("web2", "connection refused")

    def close(self) -> None:
        """Nothing to close."""


class _Api:
    """A tailnet with web2's device in it; records deletions."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def list_devices(self) -> list[Device]:
        return [Device("d7", "n7", "web2.example.ts.net", "web2", ("tag:server",), (), True)]

    def delete_device(self, device_id: str) -> None:
        self.deleted.append(device_id)

    def close(self) -> None:
        """Nothing to close."""


def test_remove_with_logout_of_an_unreachable_host_is_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "inventory.yaml"
    shutil.copy(GOLDEN / "inventory.yaml", path)
    api = _Api()
    monkeypatch.setattr("tsops.context.connect_api", lambda context: api)
    monkeypatch.setattr("tsops.context.ssh_connector",
                        lambda inventory: lambda target: _Unreachable())
    code = servers.run_remove_server(path, "web2", logout=True, uninstall=False, dry_run=False,
                                     yes=True, no_input=True)
    assert code == 1
    assert api.deleted == ["d7"]
    assert path.read_text() == (GOLDEN / "expected-remove-web2.yaml").read_text()


def test_remove_dry_run_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "inventory.yaml"
    shutil.copy(GOLDEN / "inventory.yaml", path)
    api = _Api()
    monkeypatch.setattr("tsops.context.connect_api", lambda context: api)
    monkeypatch.setattr("tsops.context.ssh_connector",
                        lambda inventory: lambda target: _Unreachable())
    servers.run_remove_server(path, "web2", logout=False, uninstall=False, dry_run=True,
                              yes=False, no_input=True)
    assert api.deleted == []
    assert path.read_bytes() == (GOLDEN / "inventory.yaml").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml"]


def test_an_edit_is_validated_on_a_private_copy_that_keeps_the_files_mode(
        tmp_path: Path) -> None:
    from tsops.errors import InventoryError
    from tsops.inventory.file import candidate

    path = tmp_path / "inventory.yaml"
    text = "version: 1\ntailnet:\n  credentials: {api_token: {env: TS_API_KEY}}\n"
    path.write_text(text)
    path.chmod(0o640)
    with candidate(path, text + "servers:\n  hosts: {web1: }\n", "nothing was changed") as (
            written, loaded):
        assert written.parent == path.parent and written.stat().st_mode & 0o777 == 0o640
        assert loaded.path == path and [t.name for t in loaded.servers] == ["web1"]
    assert not written.exists() and path.read_text() == text
    with pytest.raises(InventoryError) as caught, \
            candidate(path, text + "servers: {tags: [server]}\n", "nothing was changed"):
        pass
    assert caught.value.problems[-1] == "nothing was changed"
    assert caught.value.problems[0].startswith(f"{path}:4:")
    assert [p.name for p in tmp_path.iterdir()] == ["inventory.yaml"]
