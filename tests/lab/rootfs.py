"""The cached Debian root filesystem that every lab host boots from."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.lab import config
from tests.lab.errors import LabUnavailable

BUILD_SCRIPT = Path(__file__).with_name("build-rootfs.sh")
REQUIRED_TOOLS = ("debootstrap", "systemd-nspawn", "ip", "ssh-keygen", "nsenter")


def rootfs_path() -> Path:
    """Return where the rootfs for the current build script lives (a new script, a new path)."""
    digest = hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:12]
    return config.CACHE_DIR / f"rootfs-{config.DEBIAN_SUITE}-{digest}"


def check_prerequisites() -> None:
    """Raise LabUnavailable, saying what is missing, when this machine cannot run the lab."""
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (network namespaces and systemd-nspawn)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabUnavailable(
            f"missing tools: {', '.join(missing)} (run `make setup` to install them)"
        )


def configured_mirror() -> str:
    """Return the Debian mirror this machine's apt already uses for the lab's suite."""
    override = os.environ.get("TSOPS_LAB_MIRROR")
    if override:
        return override
    for source in _apt_source_files():
        mirror = _mirror_in(source.read_text(errors="replace"))
        if mirror:
            return mirror
    raise LabUnavailable(
        f"no Debian mirror for {config.DEBIAN_SUITE} in /etc/apt/sources.list*; "
        "set TSOPS_LAB_MIRROR"
    )


def _apt_source_files() -> list[Path]:
    files = [Path("/etc/apt/sources.list")]
    directory = Path("/etc/apt/sources.list.d")
    if directory.is_dir():
        files += sorted(directory.glob("*.list")) + sorted(directory.glob("*.sources"))
    return [f for f in files if f.is_file()]


def _mirror_in(text: str) -> str | None:
    """Find a mirror serving `<suite> main` in one-line or deb822 apt source text."""
    suite = config.DEBIAN_SUITE
    for line in text.splitlines():
        match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
        if match and match.group(2) == suite and "main" in match.group(3).split():
            return match.group(1)
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "#")):
                fields[key.strip().lower()] = value.strip()
        types = fields.get("types", "").split()
        suites = fields.get("suites", "").split()
        if "deb" in types and suite in suites and "main" in fields.get("components", "").split():
            return fields.get("uris", "").split()[0]
    return None


def ensure_rootfs(log: Path | None = None) -> Path:
    """Return the cached rootfs, building it first when it is missing."""
    check_prerequisites()
    path = rootfs_path()
    if path.is_dir():
        return path
    config.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (config.CACHE_DIR / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_dir():
            return path
        log = log or config.CACHE_DIR / "build.log"
        with log.open("w") as out:
            result = subprocess.run(
                ["bash", str(BUILD_SCRIPT), str(path), configured_mirror()],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise LabUnavailable(f"building the lab rootfs failed (log: {log}):\n{tail}")
        _remove_stale_builds(keep=path)
    return path


def _remove_stale_builds(keep: Path) -> None:
    """Delete rootfs trees made by older build scripts, except those a running lab still boots
    from (another lab, started before the script changed, keeps its hosts)."""
    for other in config.CACHE_DIR.glob(f"rootfs-{config.DEBIAN_SUITE}-*"):
        if other != keep and other.is_dir() and not _in_use(other):
            shutil.rmtree(other, ignore_errors=True)


def _in_use(rootfs: Path) -> bool:
    """Whether a running systemd-nspawn boots from `rootfs`."""
    wanted = f"--directory={rootfs}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if wanted in (proc / "cmdline").read_bytes().split(b"\0"):
                    return True
            except OSError:
                continue
    return False


if __name__ == "__main__":
    try:
        print(ensure_rootfs())
    except LabUnavailable as error:
        print(f"lab: {error}", file=sys.stderr)
        sys.exit(1)
