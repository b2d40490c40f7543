"""The built package tree: .deb contents, signed apt indexes, tarballs and checksums."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.sim.tailscale.build import SUITE, VERSIONS, RepoTree


def dpkg_deb(*args: str) -> str:
    """Run dpkg-deb and return its output."""
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("version", VERSIONS)
def test_deb_is_laid_out_like_the_real_package(
    tailscale_repo_tree: RepoTree, version: str
) -> None:
    deb = str(tailscale_repo_tree.deb(version))
    assert dpkg_deb("--field", deb, "Package", "Version").split() == [
        "Package:", "tailscale", "Version:", version,
    ]
    entries = [line.split() for line in dpkg_deb("--contents", deb).splitlines()]
    listing = {entry[-1]: entry[0] for entry in entries}
    assert listing["./usr/bin/tailscale"] == "-rwxr-xr-x"
    assert listing["./usr/sbin/tailscaled"] == "-rwxr-xr-x"
    assert listing["./lib/systemd/system/tailscaled.service"] == "-rw-r--r--"
    assert listing["./etc/default/tailscaled"] == "-rw-r--r--"
    conffiles = subprocess.run(
        ["sh", "-c", f"dpkg-deb --ctrl-tarfile {deb} | tar -xOf - ./conffiles"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert conffiles == "/etc/default/tailscaled\n"


def test_unit_runs_tailscaled_as_the_reference_says(tailscale_repo_tree: RepoTree) -> None:
    unit = extract(tailscale_repo_tree, VERSIONS[0], "systemd/tailscaled.service").decode()
    assert "EnvironmentFile=/etc/default/tailscaled\n" in unit
    assert (
        "ExecStart=/usr/sbin/tailscaled --state=/var/lib/tailscale/tailscaled.state "
        "--socket=/run/tailscale/tailscaled.sock --port=${PORT} $FLAGS\n"
    ) in unit


def test_release_is_signed_by_the_published_keyring(
    tailscale_repo_tree: RepoTree, tmp_path: Path
) -> None:
    dist = tailscale_repo_tree.track / "debian" / "dists" / SUITE
    keyring = str(tailscale_repo_tree.keyring)
    gpgv = ["gpgv", "--homedir", str(tmp_path), "--keyring", keyring]
    subprocess.run([*gpgv, str(dist / "InRelease")], capture_output=True, check=True)
    subprocess.run(
        [*gpgv, str(dist / "Release.gpg"), str(dist / "Release")], capture_output=True, check=True
    )
    tampered = tmp_path / "Release"
    tampered.write_bytes((dist / "Release").read_bytes() + b"X-Tampered: yes\n")
    refused = subprocess.run(
        [*gpgv, str(dist / "Release.gpg"), str(tampered)], capture_output=True, check=False
    )
    assert refused.returncode != 0


def test_packages_index_lists_every_version(tailscale_repo_tree: RepoTree) -> None:
    arch = tailscale_repo_tree.arch
    index = tailscale_repo_tree.track / "debian" / "dists" / SUITE / "main" / f"binary-{arch}"
    text = (index / "Packages").read_text()
    for version in VERSIONS:
        assert f"Filename: pool/tailscale_{version}_{arch}.deb\n" in text
    release = (index.parent.parent / "Release").read_text()
    digest = hashlib.sha256((index / "Packages").read_bytes()).hexdigest()
    assert f" {digest} " in release


def extract(tree: RepoTree, version: str, member: str) -> bytes:
    """Return one member of the static tarball of `version`."""
    with tarfile.open(tree.tarball(version)) as archive:
        handle = archive.extractfile(f"tailscale_{version}_{tree.arch}/{member}")
        assert handle is not None
        return handle.read()


@pytest.mark.parametrize("version", VERSIONS)
def test_tarball_layout_and_checksum(tailscale_repo_tree: RepoTree, version: str) -> None:
    tarball = tailscale_repo_tree.tarball(version)
    checksum = tarball.with_name(tarball.name + ".sha256").read_text()
    assert checksum == hashlib.sha256(tarball.read_bytes()).hexdigest()
    top = f"tailscale_{version}_{tailscale_repo_tree.arch}"
    with tarfile.open(tarball) as archive:
        files = {m.name: m.mode for m in archive.getmembers() if m.isfile()}
    assert files == {
        f"{top}/tailscale": 0o755,
        f"{top}/tailscaled": 0o755,
        f"{top}/systemd/tailscaled.service": 0o644,
        f"{top}/systemd/tailscaled.defaults": 0o644,
    }
    assert f'VERSION = "{version}"\n'.encode() in extract(tailscale_repo_tree, version, "tailscale")


def test_tailscaled_carries_its_ssh_server(tailscale_repo_tree: RepoTree, tmp_path: Path) -> None:
    """The tarball install copies only the binaries: tailscaled holds Tailscale SSH itself."""
    daemon = tmp_path / "tailscaled"
    daemon.write_bytes(extract(tailscale_repo_tree, VERSIONS[-1], "tailscaled"))
    probe = (
        "import runpy, sys; g = runpy.run_path(sys.argv[1], run_name='probe'); "
        "m = g['load_ssh_modules'](); print(m.__name__, m.SSHServer.__name__, "
        "sys.modules['tssim.session'].__file__)"
    )
    shown = subprocess.run([sys.executable, "-c", probe, str(daemon)], capture_output=True,
                           text=True, check=True, cwd=tmp_path).stdout.split()
    assert shown == ["tssim.tailssh", "SSHServer", "<tailscaled:session.py>"]
