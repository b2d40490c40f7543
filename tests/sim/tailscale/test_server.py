"""The repo server: the tree's files and the generated source list, at pkgs.tailscale.com paths."""

from __future__ import annotations

import urllib.request

from tests.sim.tailscale.build import KEYRING_PATH, LATEST, RepoTree
from tests.sim.tailscale.server import RepoServer


def fetch(url: str) -> bytes:
    """GET a URL from the test server."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def test_serves_the_tree_and_a_source_list(tailscale_repo_tree: RepoTree) -> None:
    with RepoServer(tailscale_repo_tree, "127.0.0.1") as repo:
        assert repo.url.endswith("/stable")
        assert fetch(repo.keyring_url) == tailscale_repo_tree.keyring.read_bytes()
        tarball = f"/stable/tailscale_{LATEST}_{tailscale_repo_tree.arch}.tgz"
        assert repo.tarball_url().endswith(tarball)
        assert fetch(repo.tarball_url()) == tailscale_repo_tree.tarball(LATEST).read_bytes()
        assert fetch(repo.source_list_url).decode().splitlines() == [
            "# Tailscale packages for debian bookworm",
            f"deb [signed-by={KEYRING_PATH}] {repo.url}/debian bookworm main",
        ]
