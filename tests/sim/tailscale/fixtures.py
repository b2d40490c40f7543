"""Public fixtures of the simulated tailscale package (usable as a pytest plugin module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import lab_unavailable
from tests.lab.errors import LabUnavailable
from tests.lab.lab import Lab
from tests.sim.tailscale.build import RepoTree, ensure_repo_tree
from tests.sim.tailscale.server import RepoServer


@pytest.fixture(scope="session")
def tailscale_repo_tree() -> RepoTree:
    """The built (cached) package tree: debs, signed apt indexes and tarballs."""
    try:
        return ensure_repo_tree()
    except LabUnavailable as error:
        lab_unavailable(error)
        raise


@pytest.fixture
def tailscale_repo(lab: Lab, tailscale_repo_tree: RepoTree) -> Iterator[RepoServer]:
    """The package tree served on the lab gateway, like pkgs.tailscale.com for lab hosts."""
    with RepoServer(tailscale_repo_tree, lab.gateway) as server:
        yield server
