"""Shell completion: scripts for bash, zsh and fish, answered by tsops, installed in place."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def tsops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script_that_asks_tsops(shell: str) -> None:
    result = tsops("completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_TSOPS_COMPLETE=complete_" + shell in result.stdout
    assert result.stdout.endswith("\n")


def test_an_unknown_shell_is_bad_input() -> None:
    result = tsops("completion", "tcsh")
    assert result.returncode == 2
    assert "tcsh" in result.stderr


def test_bash_completes_commands_options_and_choices_through_the_script() -> None:
    def complete(*words: str) -> set[str]:
        line = " ".join(words)
        program = (
            'source <(tsops completion bash)\n'
            f'COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n'
            '_tsops_completion tsops\n'
            'printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        path = f"{BIN}:{os.environ['PATH']}"
        result = subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                                check=True, env={**os.environ, "PATH": path})
        return set(result.stdout.split())

    assert complete("tsops", "recordings", "se") == {"search", "seal", "serve"}
    assert complete("tsops", "boot") == {"bootstrap"}
    assert "--ignore-case" in complete("tsops", "recordings", "search", "--ig")
    assert complete("tsops", "plan", "inv.yaml", "-o", "''") == {"table", "json"}


@pytest.mark.parametrize(("shell", "env"), [
    ("zsh", {"_TYPER_COMPLETE_ARGS": "tsops recordings se"}),
    ("fish", {"_TYPER_COMPLETE_ARGS": "tsops recordings se",
              "_TYPER_COMPLETE_FISH_ACTION": "get-args"}),
])
def test_zsh_and_fish_are_answered(shell: str, env: dict[str, str]) -> None:
    result = tsops(env={"_TSOPS_COMPLETE": f"complete_{shell}", **env})
    assert result.returncode == 0, result.stderr
    assert "search" in result.stdout and "seal" in result.stdout
    assert "bootstrap" not in result.stdout


@pytest.mark.parametrize(("shell", "where"), [
    ("bash", ".local/share/bash-completion/completions/tsops"),
    ("zsh", ".zfunc/_tsops"),
    ("fish", ".config/fish/completions/tsops.fish"),
])
def test_install_writes_one_file_where_the_shell_looks_and_edits_no_startup_file(
        tmp_path: Path, shell: str, where: str) -> None:
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}
    first = tsops("completion", shell, "--install", env=env)
    assert first.returncode == 0, first.stderr
    path = tmp_path / where
    assert f"wrote {path}" in first.stdout
    assert path.read_text() == tsops("completion", shell).stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    again = tsops("completion", shell, "--install", env=env)
    assert again.returncode == 0 and path.read_text() == tsops("completion", shell).stdout
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {where}
