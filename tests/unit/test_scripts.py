"""Remote scripts are pure renderings, compared with golden files in tests/golden/scripts/.

Regenerate after an intended change with TSOPS_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tsops.inventory.model import Install, Tarball
from tsops.servers import scripts
from tsops.servers.facts import parse_facts
from tsops.servers.plan import Desired

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "scripts"
DEBIAN = parse_facts(
    (Path(__file__).resolve().parents[1] / "data" / "facts" / "debian12-fresh.txt").read_text()
)
ROCKY = parse_facts(
    (Path(__file__).resolve().parents[1] / "data" / "facts" / "rocky9-enrolled.txt").read_text()
)
APT = Install(method="apt", repository="https://pkgs.example.com/stable", version="1.78.3")
TARBALL = Install(method="tarball", tarball=Tarball(
    url="https://mirror.example.com/tailscale_1.78.3_amd64.tgz", sha256="ab" * 32))
DESIRED = Desired(tags=("tag:server", "tag:db"), hostname="db1",
                  login_server="https://ctl.example.com", install=APT, tailnet="-")

RENDERERS: dict[str, Callable[[], str]] = {
    "apt-repo": lambda: scripts.configure_apt_repo(APT, DEBIAN),
    "apt-install-pinned": lambda: scripts.install_package(APT, DEBIAN),
    "apt-install-latest": lambda: scripts.install_package(
        APT.model_copy(update={"version": None}), DEBIAN),
    "rhel-install": lambda: scripts.install_package(
        Install(method="rhel", version="1.78.3"), ROCKY),
    "tarball-url": lambda: scripts.install_tarball(TARBALL, DEBIAN, False),
    "tarball-uploaded": lambda: scripts.install_tarball(TARBALL, DEBIAN, True),
    "service": scripts.enable_service,
    "enroll": lambda: scripts.enroll(DESIRED),
    "enroll-default-server": lambda: scripts.enroll(replace(DESIRED, login_server=None)),
    "ssh": scripts.enable_ssh,
    "rename": lambda: scripts.rename("db1"),
    "account": lambda: scripts.create_account("tsops-canary"),
}


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_script_matches_golden_file(name: str) -> None:
    rendered = RENDERERS[name]()
    golden = GOLDEN / f"{name}.sh"
    if os.environ.get("TSOPS_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_script_is_valid_shell(name: str) -> None:
    subprocess.run(["sh", "-n"], input=RENDERERS[name](), text=True, check=True)


def test_no_golden_file_is_orphaned() -> None:
    assert {p.stem for p in GOLDEN.glob("*.sh")} == set(RENDERERS)


def test_enroll_reads_the_key_from_its_staged_file_and_removes_it() -> None:
    # The key is staged by the SSH user (tests/unit/test_staging.py runs it in a real shell);
    # the script reads it by path, never from its standard input, and removes it on any exit.
    script = scripts.enroll(DESIRED)
    assert "tskey" not in script and "cat" not in script
    assert '--auth-key="file:$stage/authkey"' in script
    assert "trap 'rm -f \"$stage/authkey\"' EXIT" in script
    assert "umask 077" in script


def test_enroll_always_reauthenticates_with_the_new_key() -> None:
    # `tailscale up` uses an auth key only when the node has no node key yet, and refuses to
    # move a running node to another login server without --force-reauth.
    up = scripts.enroll(DESIRED).splitlines()[-1]
    assert up.startswith("tailscale up --reset --force-reauth ")
    assert "--accept-risk=lose-ssh" in up.split()
