"""The run log: a changing command leaves one JSON line of evidence; a reading one leaves none."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tsops import runlog

REPO = Path(__file__).resolve().parents[2]


def tsops(state: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True, text=True,
                          check=False, cwd=cwd, env={**os.environ, "XDG_STATE_HOME": str(state)})


def lines(state: Path) -> list[dict[str, object]]:
    log = state / "tsops" / "runs.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_changing_command_is_logged_with_who_what_and_how_it_ended(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "imported.yaml"
    source = REPO / "tests" / "data" / "ansible" / "fleet.ini"
    result = tsops(state, "inventory", "import", "ansible", str(source), "--to", str(out))
    assert result.returncode == 0, result.stderr
    (entry,) = lines(state)
    assert entry["command"] == ["tsops", "inventory", "import", "ansible", str(source), "--to",
                                str(out)]
    assert entry["exit_code"] == 0 and entry["user"] and entry["machine"]
    assert str(entry["started"]).endswith("Z") and str(entry["ended"]).endswith("Z")
    log = state / "tsops" / "runs.jsonl"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    # Bad input (exit 2) is refused before anything is done: nothing to log.
    refused = tsops(state, "inventory", "import", "ansible", str(source), "--to", str(out))
    assert refused.returncode == 2
    assert [e["exit_code"] for e in lines(state)] == [0]
    # Lines accumulate.
    again = tsops(state, "inventory", "import", "ansible", str(source), "--to", str(out),
                  "--force")
    assert again.returncode == 0
    assert [e["exit_code"] for e in lines(state)] == [0, 0]


def test_reading_commands_and_dry_runs_are_not_logged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    example = str(REPO / "inventories" / "example.yaml")
    for args in (("check", example), ("recorder", "iam-policy", example), ("--help",),
                 ("completion", "bash"), ("policy", "diff", "--help")):
        tsops(state, *args)
    assert lines(state) == []


def test_which_commands_change_something() -> None:
    assert runlog.logged(["bootstrap", "inv.yaml", "--yes"])
    assert runlog.logged(["policy", "apply", "inv.yaml"])
    assert runlog.logged(["recordings", "seal", "--manifest", "m.json"])
    assert runlog.logged(["verify", "inv.yaml"])  # canary sessions: evidence worth keeping
    assert not runlog.logged(["bootstrap", "inv.yaml", "--dry-run"])
    assert not runlog.logged(["policy", "rollback", "inv.yaml", "--list"])
    assert not runlog.logged(["status", "inv.yaml", "-o", "json"])
    assert not runlog.logged(["recordings", "list", "--from", "/srv"])
    assert not runlog.logged([])
