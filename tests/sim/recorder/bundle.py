"""Package the simulated tsrecorder as one executable file and put it on lab hosts.

The executable is a zipapp (PEP 441): a `#!/usr/bin/python3` line followed by a zip holding the
`tsrecorder` package and the pure-Python `h2`, `hpack` and `hyperframe` packages it needs, so a
lab host (Debian bookworm: python3 stdlib, no pip, no internet) runs it as it is.
"""

from __future__ import annotations

import base64
import importlib.util
import shlex
import subprocess
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.lab.lab import LabHost

PROGRAM = Path(__file__).with_name("tsrecorder")
DEPENDENCIES = ("h2", "hpack", "hyperframe")
INTERPRETER = "/usr/bin/python3"
ENTRY_POINT = "import sys\nfrom tsrecorder.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def package_dir(name: str) -> Path:
    """Return the directory of the installed package `name`."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not installed in this environment (pip install h2)")
    return Path(spec.origin).parent


def _add_tree(archive: zipfile.ZipFile, source: Path, name: str) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
            archive.write(path, f"{name}/{path.relative_to(source)}")


def build_executable(destination: Path) -> Path:
    """Write the executable tsrecorder to `destination` (mode 0755) and return it."""
    with destination.open("wb") as raw:
        raw.write(f"#!{INTERPRETER}\n".encode())
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("__main__.py", ENTRY_POINT)
            _add_tree(archive, PROGRAM, "tsrecorder")
            for name in DEPENDENCIES:
                _add_tree(archive, package_dir(name), name)
    destination.chmod(0o755)
    return destination


def install_on_host(
    host: LabHost, executable: Path, path: str = "/usr/local/bin/tsrecorder"
) -> None:
    """Copy a built executable to `path` on a lab host, as an operator would place the binary."""
    quoted = shlex.quote(path)
    host.nsenter(
        f"mkdir -p $(dirname {quoted}) && base64 -d > {quoted}.new && chmod 0755 {quoted}.new "
        f"&& mv {quoted}.new {quoted}",
        input=base64.b64encode(executable.read_bytes()).decode(),
    )


def allow_port_80(host: LabHost) -> None:
    """Let unprivileged users bind port 80 in the host's network namespace.

    The real recorder listens on :80 of its own userspace tailnet stack (tsnet), which needs no
    privilege; the simulator binds the host's lab address instead. This per-namespace sysctl
    stands in for tsnet, so the unit tsops writes needs no capability the real one lacks.
    """
    # From the root mount namespace: the container sees /proc/sys read-only.
    subprocess.run(["ip", "netns", "exec", host.netns, "sysctl", "-q", "-w",
                    "net.ipv4.ip_unprivileged_port_start=80"], check=True, capture_output=True)
