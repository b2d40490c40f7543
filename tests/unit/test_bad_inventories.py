"""Every file in tests/data/bad_inventories/ is refused with exit 2, its line and its field.

Each file's first line says what to expect: `# expect: LINE:COL FIELD`, where FIELD is the
field path the first error names, or `(yaml)` for a file that is not valid YAML.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BAD = Path(__file__).resolve().parents[1] / "data" / "bad_inventories"
FILES = sorted(BAD.glob("*.yaml"))


def test_there_are_at_least_25() -> None:
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_inventory_exits_2_naming_line_and_field(path: Path) -> None:
    expect = re.match(r"# expect: (\d+):(\d+) (.+)", path.read_text())
    assert expect, f"{path.name} lacks its '# expect:' line"
    line, column, field = expect.groups()
    result = subprocess.run(
        [sys.executable, "-m", "tsops", "check", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    where = f"{path}:{line}:{column}: " if column != "0" else f"{path}:{line}: "
    if field == "(yaml)":
        assert first.startswith(where + "invalid YAML: "), first
    else:
        assert first.startswith(f"{where}{field}: "), first
