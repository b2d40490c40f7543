"""requirements.lock pins every package the project needs, each with its hashes.

`make setup` and CI install from it alone with `--require-hashes`, so a package missing here
fails setup, and a range in pyproject.toml that the pin does not satisfy means the lock is stale.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) as the lock file has them."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        found = PIN.match(line)
        if found:
            current = canonicalize_name(found[1])
            pins[current] = (found[2], [])
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            assert current is not None, line
            pins[current][1].append(digest)
    return pins


def test_every_pin_is_exact_and_hashed() -> None:
    pins = locked()
    assert len(pins) > 50
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash"
    text = (REPO / "requirements.lock").read_text()
    # Nothing of the machine that wrote it: no index, no local wheel directory.
    assert not re.search(r"^\s*(--index-url|--extra-index-url|--find-links|-f )", text, re.M)
    assert "/opt/" not in text and "file://" not in text


def test_every_dependency_of_pyproject_is_locked_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"],
              *project["project"]["optional-dependencies"]["dev"],
              *project["build-system"]["requires"], "editables", "pip"]
    pins = locked()
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run make lock"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} does not satisfy {spec}: run make lock")


def test_setup_installs_from_the_lock_with_hashes_required() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    assert not (REPO / "constraints.txt").exists()
