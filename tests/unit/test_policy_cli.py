"""`tsops policy` on bad input: exit 2 naming where, before anything is read or written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tsops.errors import ExitCode

BASE = """\
version: 1
tailnet:
  name: example.com
  api_url: https://127.0.0.1:9
  credentials:
    api_token: {env: TSOPS_TEST_UNSET_TOKEN}
servers:
  hosts:
    web1: {address: 192.0.2.11}
recorders:
  hosts:
    rec1: {address: 192.0.2.30}
storage:
  destination: /var/lib/tsrecorder
"""


def tsops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no API token in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "TSOPS_TEST_UNSET_TOKEN"}
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, env=env, timeout=60)


def test_a_rule_with_two_recorder_tags_is_refused(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(BASE + """\
ssh_rules:
  - name: sre
    src: [group:sre]
    dst: [tag:server]
    users: [root]
    recorder: [tag:recorder, tag:backup-recorder]
""")
    for command in ("diff", "apply"):
        result = tsops("policy", command, str(inventory), "--no-input")
        assert result.returncode == ExitCode.BAD_INPUT
        assert (f"{inventory}:20:15: ssh_rules[0].recorder: a rule sends its sessions to "
                "exactly one recorder tag, got 2") in result.stderr


def test_one_recorder_tag_as_a_list_or_a_string_is_accepted(tmp_path: Path) -> None:
    from tsops.inventory.load import load_inventory

    inventory = tmp_path / "inventory.yaml"
    rule = "  - {name: a, src: [group:sre], dst: [tag:server], users: [root], recorder: %s}\n"
    inventory.write_text(BASE + "ssh_rules:\n" + rule % "[tag:rec]" + rule.replace(
        "name: a", "name: b") % "tag:rec")
    rules = load_inventory(inventory).model.ssh_rules
    assert [r.recorder for r in rules] == ["tag:rec", "tag:rec"]


def test_a_policy_file_that_is_not_hujson_gives_line_and_column(tmp_path: Path) -> None:
    policy = tmp_path / "policy.hujson"
    policy.write_text('{\n  "acls": [],\n  ssh: [],\n}\n')
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(BASE + "policy: {source: file, file: policy.hujson}\n")
    before = policy.read_bytes()
    for command in ("diff", "apply"):
        result = tsops("policy", command, str(inventory), "--no-input", "--allow-unverified-"
                       "recorder") if command == "apply" else tsops("policy", command,
                                                                    str(inventory))
        assert result.returncode == ExitCode.BAD_INPUT, result.stderr
        assert (f"{policy}:3:3: invalid policy: expected a quoted key or '}}', found 's'"
                in result.stderr)
        assert "not validated through the API" in result.stderr
    assert policy.read_bytes() == before


def test_a_file_source_needs_a_file(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(BASE + "policy:\n  source: file\n")
    result = tsops("policy", "diff", str(inventory))
    assert result.returncode == ExitCode.BAD_INPUT
    assert f"{inventory}:16:3: policy: source `file` needs `file`" in result.stderr


def test_policy_help_does_not_import_heavy_modules() -> None:
    """Sub-command help (typer's renderer loads pydantic itself) loads none of ours."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['tsops', 'policy', '--help']\n"
        "try:\n"
        "    runpy.run_module('tsops', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'boto3', 'fabric', 'paramiko', 'tsops.policy', 'tsops.inventory')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert "diff" in result.stdout and "rollback" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


RULES = """\
ssh_rules:
  - name: ops
    src: [group:ops]
    dst: [tag:server]
    users: [root]
policy:
  source: file
  file: policy.hujson
  state_dir: state
"""
SHADOWED = """\
{
  "groups": {"group:ops": ["alice@example.com"]},
  "tagOwners": {"tag:server": [], "tag:recorder": []},
  "ssh": [
    // break-glass, by hand
    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["root"]},
  ],
}
"""


def test_an_unknown_managed_rules_placement_is_bad_input(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(BASE + RULES + "  managed_rules: middle\n")
    result = tsops("policy", "diff", str(inventory))
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr == (f"{inventory}:24:18: policy.managed_rules: expected "
                             "'first' or 'last', got 'middle'\n")
    assert "Traceback" not in result.stderr


def test_apply_refuses_a_gap_and_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(BASE + RULES)
    policy = tmp_path / "policy.hujson"
    policy.write_bytes(SHADOWED.encode())
    line = ("coverage gap: web1: ssh[0] (line 6): src [group:ops] dst [tag:server] users [root] "
            "matches first for alice@example.com as root: no recorder; ahead of tsops rule 'ops'")

    diff = tsops("policy", "diff", str(inventory))
    assert diff.returncode == 0, diff.stderr
    assert f"warning: {line}" in diff.stderr.splitlines()

    refused = tsops("policy", "apply", str(inventory), "--yes", "--allow-unverified-recorder")
    assert refused.returncode == ExitCode.DRIFT, refused.stderr
    assert line in refused.stderr.splitlines()
    assert "refusing to write" in refused.stderr and "--allow-coverage-gaps" in refused.stderr
    assert policy.read_bytes() == SHADOWED.encode()
    assert not (tmp_path / "state").exists()

    forced = tsops("policy", "apply", str(inventory), "--yes", "--allow-unverified-recorder",
                   "--allow-coverage-gaps")
    assert forced.returncode == 0, forced.stderr
    assert f"warning: {line}" in forced.stderr.splitlines()
    assert "tsops: ops" in policy.read_text()
    policy.write_bytes(SHADOWED.encode())

    inventory.write_text(BASE + RULES + "  managed_rules: first\n")
    first = tsops("policy", "apply", str(inventory), "--yes", "--allow-unverified-recorder")
    assert first.returncode == 0, first.stderr
    assert "coverage gap" not in first.stderr
    text = policy.read_text()
    assert text.index("tsops: ops") < text.index("// break-glass, by hand")
    again = tsops("policy", "apply", str(inventory), "--yes")
    assert again.returncode == 0 and "already up to date" in again.stdout
