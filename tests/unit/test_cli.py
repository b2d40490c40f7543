"""The CLI's contract: fast help, version, exit codes, errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsops import __version__

REPO = Path(__file__).resolve().parents[2]


def tsops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way an operator does."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", *args], capture_output=True, text=True, check=False
    )


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['tsops', '--help']\n"
        "try:\n"
        "    runpy.run_module('tsops', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "import json\n"
        "heavy = ('boto3', 'botocore', 'fabric', 'paramiko', 'invoke', 'pydantic', 'httpx', "
        "'keyring', 'starlette', 'uvicorn')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "Usage" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_version() -> None:
    result = tsops("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tsops {__version__}"


def test_check_valid_inventory_exits_0() -> None:
    result = tsops("check", str(REPO / "inventories" / "example.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid: 3 server(s), 2 recorder(s), 2 ssh rule(s)" in result.stdout


def test_check_invalid_inventory_exits_2_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("version: 1\ntailnet:\n  credentials:\n    api_token: {env: X}\nserver: {}\n")
    result = tsops("check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"{bad}:5:1: (top level): unknown field 'server'; did you mean 'servers'?"
    )


def test_missing_argument_is_a_usage_error() -> None:
    result = tsops("check")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = tsops("bootstrapp")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_terraforms_exit_code_flag_is_refused_with_the_new_name(tmp_path: Path) -> None:
    # Terraform's -detailed-exitcode exits 2 for changes; tsops's 2 is bad input, so the old
    # spelling must stop a copied CI step instead of meaning something else.
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("not: checked\n")
    for command in (("plan",), ("policy", "diff")):
        result = tsops(*command, str(inventory), "--detailed-exitcode")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "--changes-exit-code" in result.stderr
        assert result.stdout == ""


def test_options_renamed_to_one_vocabulary_are_refused_with_the_new_name(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("not: checked\n")
    for args, new in ((("verify", str(inventory), "--user", "root"), "--canary-user"),
                      (("verify", str(inventory), "--timeout", "5"), "--canary-timeout"),
                      (("add-server", str(inventory), "web1", "--timeout", "5"),
                       "--canary-timeout"),
                      (("rotate-storage", str(inventory), "--to", "s3://b", "--workers", "2"),
                       "--concurrency")):
        result = tsops(*args)
        assert result.returncode == 2, args
        assert f"is now {new}" in result.stderr and result.stderr.count("\n") == 1, args


def test_search_short_i_is_the_inventory_as_on_every_recordings_command(tmp_path: Path) -> None:
    result = tsops("recordings", "search", "x", "-i", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml: cannot read the inventory" in result.stderr


def test_a_reader_that_went_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `tsops ... | head`: the pipe's reader is gone before tsops writes (deterministic here, as
    # its read end is closed first). Exit 0 and nothing on stderr, as `set -o pipefail` needs.
    node = tmp_path / "rec" / "node1"
    node.mkdir(parents=True)
    (node / "1700000000.cast").write_text(
        '{"version":2,"width":80,"height":24,"timestamp":1700000000}\n[0.5,"o","hi"]\n')
    for args in (("recorder", "iam-policy", str(REPO / "inventories" / "example.yaml")),
                 ("recordings", "list", "--from", str(tmp_path / "rec")),
                 ("recordings", "list", "--from", str(tmp_path / "rec"), "-o", "json"),
                 ("--help",)):
        read, write = os.pipe()
        os.close(read)
        try:
            result = subprocess.run([sys.executable, "-m", "tsops", *args], stdout=write,
                                    stderr=subprocess.PIPE, text=True, check=False)
        finally:
            os.close(write)
        assert (result.returncode, result.stderr) == (0, ""), args


def test_check_reads_the_inventory_from_stdin_with_dash() -> None:
    example = (REPO / "inventories" / "example.yaml").read_text()
    valid = subprocess.run([sys.executable, "-m", "tsops", "check", "-"], input=example,
                           capture_output=True, text=True, check=False)
    assert valid.returncode == 0, valid.stderr
    assert "<stdin>: valid: 3 server(s), 2 recorder(s)" in valid.stdout
    broken = subprocess.run([sys.executable, "-m", "tsops", "check", "-"],
                            input="version: 1\nservers: [\n", capture_output=True, text=True,
                            check=False)
    assert broken.returncode == 2
    assert broken.stderr.startswith("<stdin>:3:1: invalid YAML")


def test_tables_written_to_a_pipe_have_no_box_drawing() -> None:
    result = tsops("check", str(REPO / "inventories" / "example.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == [
        "host", "role", "group", "address", "user", "port", "tags"]
    assert not set(result.stdout) & set("│─┃━┼╇┡┩╷╵")


def test_a_failure_in_json_mode_is_also_a_json_error_object_on_stdout(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nfoo: 1\n")
    for args in (("plan", str(bad), "-o", "json"), ("status", str(bad), "--output", "json"),
                 ("recordings", "list", "--from", str(tmp_path / "none"), "-o", "json")):
        result = tsops(*args)
        assert result.returncode == 2, args
        error = json.loads(result.stdout)["error"]
        assert error["kind"] == "bad-input" and error["exit_code"] == 2
        assert error["message"].splitlines()[0] in result.stderr
    planned = tsops("plan", str(bad), "-o", "json")
    assert json.loads(planned.stdout)["error"]["problems"] == [
        f"{bad}:1:1: tailnet: required field is missing",
        f"{bad}:2:1: (top level): unknown field 'foo'"]
    # In table mode a failure prints nothing on stdout.
    assert tsops("plan", str(bad)).stdout == ""


def test_long_reads_show_a_spinner_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from tsops.cli import console

    for terminal in (True, False):
        shown = io.StringIO()
        monkeypatch.setattr(console, "err", Console(file=shown, force_terminal=terminal,
                                                    width=80))
        with console.working("reading the recordings of s3://b"):
            pass
        assert ("reading the recordings of s3://b" in shown.getvalue()) is terminal
