"""`tsops inventory import ansible`: Ansible INI and YAML inventories as tsops servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tsops.errors import InventoryError
from tsops.inventory import ansible
from tsops.inventory.load import load_inventory

DATA = Path(__file__).resolve().parents[1] / "data" / "ansible"


def tsops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, cwd=cwd)


def imported_servers(source: Path) -> dict:  # type: ignore[type-arg]
    result = tsops("inventory", "import", "ansible", str(source))
    assert result.returncode == 0, result.stderr
    return dict(YAML(typ="safe").load(result.stdout)["servers"])


def test_an_ini_fleet_maps_groups_ranges_vars_and_jump_hosts() -> None:
    servers = imported_servers(DATA / "fleet.ini")
    assert servers["hosts"] == {"jump": {"address": "jump.example.com", "user": "ops"}}
    web, db = servers["groups"]["web"], servers["groups"]["db"]
    # A child group's vars beat its parent's ([db:vars] over [prod:vars]).
    assert web["user"] == "deploy" and db["user"] == "dba"
    assert list(web["hosts"]) == ["web01", "web02", "web03", "web04", "www"]
    assert web["hosts"]["www"] == {"address": "198.51.100.7", "port": 2222}
    assert db == {"user": "dba", "identity_file": "~/.ssh/db_ed25519", "sudo": True,
                  "jump_host": "ops@jump.example.com",
                  "hosts": {f"db-{c}": {"address": f"db-{c}.example.com"} for c in "abc"}}


def test_a_yaml_fleet_maps_nested_children_and_addresses() -> None:
    servers = imported_servers(DATA / "fleet.yaml")
    assert servers["hosts"] == {"monitor": {"address": "monitor.example.com", "user": "admin"}}
    groups = servers["groups"]
    assert list(groups) == ["k8s-nodes", "edge-eu", "edge-us"]
    assert groups["k8s-nodes"] == {"user": "admin", "sudo": True,
                                   "hosts": {"node1": None, "node2": None, "node3": None}}
    assert groups["edge-eu"]["hosts"]["edge-eu-2"] == {"address": "192.0.2.42", "port": 2200}
    assert groups["edge-us"]["hosts"]["edge-us-1"] == {"address": "2001:db8::51", "user": "edge"}


def test_what_does_not_map_is_reported_by_name_and_no_secret_is_written() -> None:
    result = tsops("inventory", "import", "ansible", str(DATA / "fleet.ini"))
    assert "s3cret" not in result.stdout + result.stderr
    assert "warning: not imported: ansible_become_password (tsops never keeps passwords" in (
        result.stderr)
    assert "warning: not imported: backup_window (on 3 host(s)" in result.stderr
    assert "web01 is also in group(s) db" in result.stderr
    # The notes are in the written file too, as comments.
    assert "# Note: not imported: backup_window" in result.stdout


@pytest.mark.parametrize("source", ["fleet.ini", "fleet.yaml"])
def test_the_written_inventory_passes_check(tmp_path: Path, source: str) -> None:
    out = tmp_path / "tsops.yaml"
    result = tsops("inventory", "import", "ansible", str(DATA / source), "--to", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stderr
    checked = tsops("check", str(out))
    assert checked.returncode == 0, checked.stderr
    assert load_inventory(out).servers


def test_base_keeps_everything_but_the_servers(tmp_path: Path) -> None:
    base = Path(__file__).resolve().parents[2] / "inventories" / "example.yaml"
    out = tmp_path / "merged.yaml"
    result = tsops("inventory", "import", "ansible", str(DATA / "fleet.yaml"), "--base",
                   str(base), "--to", str(out))
    assert result.returncode == 0, result.stderr
    merged, original = load_inventory(out).model, load_inventory(base).model
    assert merged.recorders == original.recorders and merged.storage == original.storage
    assert merged.ssh_rules == original.ssh_rules and merged.tailnet == original.tailnet
    assert {t.name for t in load_inventory(out).servers} == {
        "monitor", "node1", "node2", "node3", "edge-eu-1", "edge-eu-2", "edge-us-1"}


BAD = [
    ("[web\nweb1\n", "bad.ini:1: bad section header '[web'"),
    ("[web:hosts_and_more]\nweb1\n", "bad.ini:1: unknown section kind :hosts_and_more"),
    ("[web]\nweb1 ansible_port\n", "bad.ini:2: expected key=value, got 'ansible_port'"),
    ("[web]\nweb1 ansible_user='unterminated\n", "bad.ini:2: cannot read this line"),
    ("[web]\nweb[01:x].example.com\n", "bad.ini:2: host pattern 'web[01:x].example.com'"),
    ("[web]\nweb@1\n", "bad.ini:2: host 'web@1' has no address: give it ansible_host"),
    ("[web:vars]\nansible_user deploy\n", "bad.ini:2: expected key=value"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_ini_is_one_line_exit_2_and_nothing_written(tmp_path: Path, text: str,
                                                        message: str) -> None:
    source, out = tmp_path / "bad.ini", tmp_path / "out.yaml"
    source.write_text(text)
    result = tsops("inventory", "import", "ansible", str(source), "--to", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{tmp_path}/{message}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.ini"]


@pytest.mark.parametrize(("text", "message"), [
    ("all:\n  hosts: [a, b]\n", "bad.yaml:2: group all: hosts must be a mapping"),
    ("all:\n  children:\n    web:\n      hostz: {}\n", "bad.yaml:4: group web: unknown key"),
    ("all:\n  hosts:\n    a: {ansible_user: [x\n", "bad.yaml:4: invalid YAML"),
    ("- a\n- b\n", "bad.yaml:1: an Ansible YAML inventory is a mapping of groups"),
    ("all:\n  hosts:\n    db server 1:\n", "bad.yaml:3: host 'db server 1' has no address"),
])
def test_bad_yaml_is_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(text)
    result = tsops("inventory", "import", "ansible", str(source))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{tmp_path}/{message}"), result.stderr
    assert result.stdout == ""


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    out = tmp_path / "tsops.yaml"
    out.write_text("mine\n")
    refused = tsops("inventory", "import", "ansible", str(DATA / "fleet.ini"), "--to", str(out))
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert out.read_text() == "mine\n"
    forced = tsops("inventory", "import", "ansible", str(DATA / "fleet.ini"), "--to", str(out),
                   "--force")
    assert forced.returncode == 0 and "servers:" in out.read_text()


def test_ranges_expand_as_ansible_does() -> None:
    where = Path("x.ini")
    assert ansible.expand(where, 1, "web[01:03]") == ["web01", "web02", "web03"]
    assert ansible.expand(where, 1, "web[1:10:4]") == ["web1", "web5", "web9"]
    assert ansible.expand(where, 1, "db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert ansible.expand(where, 1, "r[1:2]-[a:b]") == ["r1-a", "r1-b", "r2-a", "r2-b"]
    with pytest.raises(InventoryError):
        ansible.expand(where, 1, "web[3:1]")
