"""What a lab leaves on the machine: the teardown tests and the demo check this is empty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.lab import config


def leftovers(slot: int) -> list[str]:
    """Return every namespace, link, process, mount and directory of lab `slot` still present."""
    prefix = f"{config.NAME_PREFIX}{slot}"
    workdir = str(config.RUN_DIR / f"lab-{slot}")
    found: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    found += [f"netns {line.split()[0]}" for line in netns.stdout.splitlines()
              if line.split() and _owned(line.split()[0], prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    for line in links.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if _owned(name, prefix):
            found.append(f"link {name}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if workdir in cmdline or f"/run/netns/{prefix}-" in cmdline:
            found.append(f"process {proc.name}: {cmdline.strip()}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if workdir in line or f"/run/netns/{prefix}-" in line:
            found.append(f"mount {line.split()[4]}")
    for hierarchy in config.CGROUP_HIERARCHIES:
        cgroup = hierarchy / config.CGROUP_NAME / f"lab-{slot}"
        if cgroup.exists():
            found.append(f"cgroup {cgroup}")
    if Path(workdir).exists():
        found.append(f"directory {workdir}")
    return found


def _owned(name: str, prefix: str) -> bool:
    """Whether an interface or namespace name belongs to the lab slot with `prefix`."""
    rest = name.removeprefix(prefix)
    return rest != name and rest[:1] in ("b", "v", "-")
