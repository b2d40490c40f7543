"""Every help screen of the command tree renders, names its values in words, and is reviewed.

The screens are rendered through `tsops.cli.app.main`, the operator's own path, at a fixed
width, and compared with tests/golden/help.txt. After an intended change to a command's options
or help text, set TSOPS_UPDATE_GOLDEN=1 to rewrite the snapshot, then review its diff.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tsops.cli.app import command, main

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "help.txt"

# What Typer prints when a value has no name of ours: a Python type, or a braced argument.
TYPE_NAME = re.compile(
    r"<(?:str|int|float|bool|path|uuid|datetime|file|text|int range|float range|list\[[^>]*\]"
    r"|[a-z]+\|[a-z|]+)>|\{[A-Za-z_/-]+\}"
)


def command_paths(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group below `tree`, the root included, in a stable order."""
    paths = [path]
    for name in sorted(getattr(tree, "commands", {})):
        paths.extend(command_paths(tree.commands[name], (*path, name)))
    return paths


PATHS = command_paths(command())


def render(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> str:
    """The help screen of one command, as `tsops ... --help` prints it on an 80-column pipe."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", ["tsops", *path, "--help"])
    with pytest.raises(SystemExit) as ended:
        main()
    out, err = capsys.readouterr()
    assert ended.value.code in (0, None), f"tsops {' '.join(path)} --help: {err}"
    assert err == ""
    return out


def test_the_tree_has_every_command() -> None:
    names = {" ".join(path) for path in PATHS}
    for expected in ("bootstrap", "status", "recordings list", "recordings search", "policy apply",
                     "secrets set", "recorder iam-policy"):
        assert expected in names


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "tsops")
def test_help_screen_renders_with_named_values(
        path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    screen = render(path, capsys, monkeypatch)
    assert screen.startswith(f"Usage: tsops {' '.join(path)}".rstrip())
    assert "internal error" not in screen and "Traceback" not in screen
    assert not TYPE_NAME.findall(screen), screen


def test_type_name_check_catches_typers_own_names() -> None:
    for raw in ("--from <str>", "--limit <list[str]>", "-c <int range>", "Usage: x {inventory}",
                "-o <table|json>"):
        assert TYPE_NAME.search(raw), raw
    for named in ("--from SOURCE", "--limit PATTERN", "-o table|json", "ID  NODE/NAME as"):
        assert not TYPE_NAME.search(named), named


def test_help_screens_match_the_snapshot(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    screens = []
    for path in PATHS:
        screens.append(f"=== tsops {' '.join(path)}".rstrip() + "\n" + render(path, capsys,
                                                                              monkeypatch))
    text = "\n".join(screens)
    if os.environ.get("TSOPS_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "help screens changed: rerun with TSOPS_UPDATE_GOLDEN=1 and review tests/golden/help.txt")
