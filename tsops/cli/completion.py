"""Shell completion for bash, zsh and fish: the script, where it goes, and answering the shell.

The shell asks `tsops` itself for candidates (with `_TSOPS_COMPLETE` set in the environment), so
completion always matches the installed version. Typer carries the scripts and the answering
code; it registers them only when asked to, which tsops does only while a shell is completing,
so `tsops --help` stays fast. `--install` writes one file where the shell loads completions
from by itself and never edits a startup file such as ~/.bashrc.
"""

from __future__ import annotations

import os
from pathlib import Path

PROG = "tsops"
COMPLETE_VAR = "_TSOPS_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def enable_if_completing() -> None:
    """Register the shells' completion answers when a shell is asking (else do nothing)."""
    if COMPLETE_VAR in os.environ:
        from typer._completion_classes import completion_init

        completion_init()


def script(shell: str) -> str:
    """The completion script that `shell` sources or loads."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell) + "\n"


def install_path(shell: str, environ: dict[str, str] | None = None) -> Path:
    """Where `shell` loads a completion file for `tsops` from without any startup-file line."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    if shell == "bash":
        data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
        return data / "bash-completion" / "completions" / PROG
    if shell == "fish":
        config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        return config / "fish" / "completions" / f"{PROG}.fish"
    return home / ".zfunc" / f"_{PROG}"


NEXT_STEP = {
    "bash": "loaded by the bash-completion package in new shells (without it, add "
            "`source {path}` to ~/.bashrc)",
    "zsh": "loaded in new shells if ~/.zshrc has `fpath+=~/.zfunc; autoload -Uz compinit; "
           "compinit` (add that line once if not)",
    "fish": "loaded by fish in new shells",
}


def install(shell: str) -> tuple[Path, str]:
    """Write the script for `shell` (0644, replacing an older one); where, and what loads it."""
    path = install_path(shell)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(script(shell))
    temporary.chmod(0o644)
    temporary.replace(path)
    return path, NEXT_STEP[shell].format(path=path)
