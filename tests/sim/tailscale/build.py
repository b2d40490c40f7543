"""Build the simulated tailscale packages: a signed apt repository and static tarballs.

The tree is laid out like pkgs.tailscale.com, under one release track (`stable/`):

    stable/debian/bookworm.noarmor.gpg            the lab-only signing key (binary keyring)
    stable/debian/pool/tailscale_<ver>_<arch>.deb
    stable/debian/dists/bookworm/{Release,InRelease,Release.gpg}
    stable/debian/dists/bookworm/main/binary-<arch>/Packages{,.gz}
    stable/tailscale_<ver>_<arch>.tgz and .tgz.sha256 (bare hex)

A build is cached under the lab cache by a hash of everything that goes into it, so a test run
builds once; the signing key is made at build time in a throwaway GNUPGHOME and is lab-only.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab import config
from tests.lab.errors import LabUnavailable

PACKAGE_DIR = Path(__file__).with_name("package")
VERSIONS = ("1.76.1", "1.78.3")
LATEST = VERSIONS[-1]
SUITE = config.DEBIAN_SUITE
TRACK = "stable"
KEYRING_PATH = "/usr/share/keyrings/tailscale-archive-keyring.gpg"
REQUIRED_TOOLS = ("dpkg-deb", "apt-ftparchive", "gpg", "dpkg")
# A cached tree of another build (another checkout) unused for this long is removed.
STALE_TREE_S = 7 * 24 * 3600
VERSION_LINE = 'VERSION = "0.0.0"\n'
# tailscaled's Tailscale SSH server and what it shares with the session generator: embedded
# into /usr/sbin/tailscaled, so that the one file is the daemon (the tarball install copies
# only the binaries, as for the real static build).
EMBED_LINE = "EMBEDDED_MODULES: dict[str, str] = {}\n"
RECORDER_DIR = PACKAGE_DIR.parent.parent / "recorder"
SSH_MODULES = ("cast", "sshrules", "session", "tailssh")
# Every file whose content shapes the build; changing any of them makes a new cache entry.
INPUTS = (
    Path(__file__),
    PACKAGE_DIR / "tailscale.py",
    PACKAGE_DIR / "tailscaled.py",
    PACKAGE_DIR / "tailscaled.service",
    PACKAGE_DIR / "tailscaled.defaults",
    PACKAGE_DIR / "debian" / "postinst",
    PACKAGE_DIR / "debian" / "prerm",
    PACKAGE_DIR / "debian" / "postrm",
    *(RECORDER_DIR / f"{name}.py" for name in SSH_MODULES),
)


@dataclass(frozen=True)
class RepoTree:
    """A built package tree on disk and the architecture it was built for."""

    root: Path
    arch: str

    @property
    def track(self) -> Path:
        """The release track directory (like https://pkgs.tailscale.com/stable)."""
        return self.root / TRACK

    @property
    def keyring(self) -> Path:
        """The binary keyring apt needs to trust the repository."""
        return self.track / "debian" / f"{SUITE}.noarmor.gpg"

    def deb(self, version: str) -> Path:
        """The .deb of `version`."""
        return self.track / "debian" / "pool" / f"tailscale_{version}_{self.arch}.deb"

    def tarball(self, version: str) -> Path:
        """The static tarball of `version`."""
        return self.track / f"tailscale_{version}_{self.arch}.tgz"


def host_arch() -> str:
    """Return the Debian architecture of this machine (lab hosts share it)."""
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def build_hash(arch: str) -> str:
    """Hash everything the build depends on."""
    digest = hashlib.sha256(f"{VERSIONS} {arch}".encode())
    for path in INPUTS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_repo_tree() -> RepoTree:
    """Return the cached package tree, building it first when missing."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabUnavailable(
            f"building the tailscale simulator needs {', '.join(missing)} "
            "(Debian packages dpkg-dev, apt-utils, gnupg)"
        )
    arch = host_arch()
    root = config.CACHE_DIR / f"tailscale-repo-{build_hash(arch)}"
    tree = RepoTree(root=root, arch=arch)
    if root.is_dir():
        os.utime(root)  # in use: see the clean-up below
        return tree
    config.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (config.CACHE_DIR / "tailscale-repo.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir():
            return tree
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build_tree(RepoTree(root=partial, arch=arch))
        partial.rename(root)
        # Another checkout of the repository (another branch) may be testing with its own
        # tree right now: only trees nobody used for a while are removed (they are small).
        stale = time.time() - STALE_TREE_S
        for other in config.CACHE_DIR.glob("tailscale-repo-*"):
            if other != root and other.is_dir() and other.stat().st_mtime < stale:
                shutil.rmtree(other, ignore_errors=True)
    return tree


def build_tree(tree: RepoTree) -> None:
    """Build debs, tarballs, indexes and signatures for every version into `tree`."""
    debian = tree.track / "debian"
    (debian / "pool").mkdir(parents=True)
    for version in VERSIONS:
        build_deb(version, tree.arch, tree.deb(version))
        build_tarball(version, tree.arch, tree.tarball(version))
    write_indexes(debian, tree.arch)
    with tempfile.TemporaryDirectory(prefix="tsops-lab-gpg-") as gnupghome:
        sign_release(debian / "dists" / SUITE, Path(gnupghome), tree.keyring)


def script_for(name: str, version: str) -> bytes:
    """Return a package script with its version (and, for tailscaled, its SSH server) baked in."""
    text = (PACKAGE_DIR / name).read_text()
    if text.count(VERSION_LINE) != 1:
        raise RuntimeError(f"{name}: expected exactly one line {VERSION_LINE!r}")
    text = text.replace(VERSION_LINE, f'VERSION = "{version}"\n')
    if name == "tailscaled.py":
        if text.count(EMBED_LINE) != 1:
            raise RuntimeError(f"{name}: expected exactly one line {EMBED_LINE!r}")
        modules = {module: (RECORDER_DIR / f"{module}.py").read_text() for module in SSH_MODULES}
        text = text.replace(EMBED_LINE, f"EMBEDDED_MODULES: dict[str, str] = {modules!r}\n")
    return text.encode()


def package_files(version: str) -> dict[str, tuple[bytes, int]]:
    """Return the installed files of the package: path -> (content, mode)."""
    return {
        "usr/bin/tailscale": (script_for("tailscale.py", version), 0o755),
        "usr/sbin/tailscaled": (script_for("tailscaled.py", version), 0o755),
        "lib/systemd/system/tailscaled.service": (
            (PACKAGE_DIR / "tailscaled.service").read_bytes(), 0o644
        ),
        "etc/default/tailscaled": ((PACKAGE_DIR / "tailscaled.defaults").read_bytes(), 0o644),
    }


def control_file(version: str, arch: str, installed_kib: int) -> str:
    """Return DEBIAN/control for `version`."""
    return (
        "Package: tailscale\n"
        f"Version: {version}\n"
        "Section: net\n"
        "Priority: extra\n"
        f"Architecture: {arch}\n"
        "Maintainer: tsops lab <lab@tsops.invalid>\n"
        # The simulator is Python; the real package is a static binary with no dependencies.
        "Depends: python3\n"
        "Replaces: tailscale-relay\n"
        "Conflicts: tailscale-relay\n"
        f"Installed-Size: {installed_kib}\n"
        "Description: Tailscale node agent (lab simulator)\n"
        " Lab simulator of the tailscale package, for tsops tests. Not the real Tailscale.\n"
    )


def build_deb(version: str, arch: str, dest: Path) -> None:
    """Build tailscale_<version>_<arch>.deb with dpkg-deb."""
    with tempfile.TemporaryDirectory(prefix="tsops-lab-deb-") as staging:
        root = Path(staging)
        files = package_files(version)
        for relative, (content, mode) in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode)
        meta = root / "DEBIAN"
        meta.mkdir()
        installed_kib = sum(len(content) for content, _ in files.values()) // 1024 + 1
        (meta / "control").write_text(control_file(version, arch, installed_kib))
        (meta / "conffiles").write_text("/etc/default/tailscaled\n")
        for script in ("postinst", "prerm", "postrm"):
            shutil.copyfile(PACKAGE_DIR / "debian" / script, meta / script)
            (meta / script).chmod(0o755)
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(dest)],
            capture_output=True, check=True,
        )


def build_tarball(version: str, arch: str, dest: Path) -> None:
    """Build the static tarball and its bare-hex .sha256 sibling."""
    top = f"tailscale_{version}_{arch}"
    files = package_files(version)
    members = {
        "tailscale": files["usr/bin/tailscale"],
        "tailscaled": files["usr/sbin/tailscaled"],
        "systemd/tailscaled.service": files["lib/systemd/system/tailscaled.service"],
        "systemd/tailscaled.defaults": files["etc/default/tailscaled"],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for directory in (top, f"{top}/systemd"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, (content, mode) in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(content), mode
            archive.addfile(info, io.BytesIO(content))
    dest.write_bytes(buffer.getvalue())
    dest.with_name(dest.name + ".sha256").write_text(
        hashlib.sha256(buffer.getvalue()).hexdigest()
    )


def write_indexes(debian: Path, arch: str) -> None:
    """Write Packages, Packages.gz and Release for the suite with apt-ftparchive."""
    binary = debian / "dists" / SUITE / "main" / f"binary-{arch}"
    binary.mkdir(parents=True)
    packages = subprocess.run(
        ["apt-ftparchive", "packages", "pool"],
        cwd=debian, capture_output=True, check=True,
    ).stdout
    (binary / "Packages").write_bytes(packages)
    (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    release = subprocess.run(
        [
            "apt-ftparchive",
            "-o", "APT::FTPArchive::Release::Origin=Tailscale",
            "-o", "APT::FTPArchive::Release::Label=Tailscale (tsops lab simulator)",
            "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
            "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
            "-o", "APT::FTPArchive::Release::Components=main",
            "-o", f"APT::FTPArchive::Release::Architectures={arch}",
            "release", ".",
        ],
        cwd=debian / "dists" / SUITE, capture_output=True, check=True,
    ).stdout
    (debian / "dists" / SUITE / "Release").write_bytes(release)


def sign_release(dist: Path, gnupghome: Path, keyring: Path) -> None:
    """Make a lab-only signing key and sign Release (InRelease and Release.gpg)."""
    env = {**os.environ, "GNUPGHOME": str(gnupghome)}
    gnupghome.chmod(0o700)

    def gpg(*args: str) -> bytes:
        return subprocess.run(
            ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *args],
            env=env, capture_output=True, check=True,
        ).stdout

    try:
        gpg("--quick-gen-key", "tsops lab package signing <lab@tsops.invalid>",
            "ed25519", "sign", "never")
        keyring.write_bytes(gpg("--export"))
        gpg("--clearsign", "--output", str(dist / "InRelease"), str(dist / "Release"))
        gpg("--detach-sign", "--output", str(dist / "Release.gpg"), str(dist / "Release"))
    finally:
        # The gpg-agent started for this GNUPGHOME would otherwise outlive the build.
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
