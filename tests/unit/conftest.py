"""Fixtures shared by the unit tests."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from tsops.cli import app

Run = Callable[..., tuple[int, str, str]]  # tsops ARGS -> (exit code, stdout, stderr)


@pytest.fixture
def tsops(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run `tsops ARGS` in this process as the entry point does: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["tsops", *args])
        monkeypatch.setattr(app, "_json_output", False)
        try:
            app.main()
            code = 0
        except SystemExit as ended:
            code = ended.code if isinstance(ended.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
