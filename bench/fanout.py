"""Benchmark bootstrap fan-out: wall time for 1, 4, 8 and 16 lab hosts, and round trips.

Run by hand as root (numbers go to docs/performance.md):
    .venv/bin/python -m bench.fanout [--sizes 1 4 8 16]
Each host gets a dpkg hook that sleeps 1 s, so that installing takes at least as long as a real
apt install would; a serial tool would need 16 times T(1) for 16 hosts. The converged rerun
reports the SSH round trips per host that tsops counted in its remote seam.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet, lab_tailnet

CPU: list[float] = []  # CPU seconds of each tsops run, to tell tsops' cost from the hosts'
BUSY: list[float] = []  # CPU seconds the whole machine spent during each run (hosts included)
SLOW_DPKG = 'DPkg::Pre-Invoke {"sleep 1";};\n'


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def bootstrap(
    tailnet: LabTailnet, inventory: Path, concurrency: int
) -> tuple[float, dict[str, dict[str, object]]]:
    """Run one bootstrap; return its wall time and its JSON report by host."""
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = machine_busy_seconds()
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tsops", "bootstrap", "--yes", "--no-input", "-o", "json",
         "--concurrency", str(concurrency), str(inventory)],
        capture_output=True, text=True, env=env, check=False,
    )
    elapsed = time.monotonic() - began
    BUSY.append(machine_busy_seconds() - busy_before)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"bootstrap failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, {h["name"]: h for h in json.loads(result.stdout)["hosts"]}


def measure(size: int, concurrency: int) -> tuple[float, float, float]:
    """Bootstrap `size` fresh hosts, then rerun; return (first, rerun, round trips per host)."""
    CPU.clear()
    BUSY.clear()
    with Lab(host_count=size) as lab, lab_tailnet(lab) as tailnet, \
            tempfile.TemporaryDirectory() as tmp:
        for host in lab.hosts:
            host.nsenter(f"printf '%s' '{SLOW_DPKG}' > /etc/apt/apt.conf.d/99tsops-bench")
        inventory = tailnet.inventory(Path(tmp) / "inventory.yaml",
                                      {host.name: () for host in lab.hosts})
        first, report = bootstrap(tailnet, inventory, concurrency)
        assert all(h["outcome"] == "changed" for h in report.values()), report
        rerun, report = bootstrap(tailnet, inventory, concurrency)
        assert all(h["outcome"] == "unchanged" for h in report.values()), report
        trips = sum(int(str(h["round_trips"])) for h in report.values()) / size
    return first, rerun, trips


def main() -> None:
    """Print a Markdown table of the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--concurrency", type=int, default=32,
                        help="tsops --concurrency (1 shows what a serial tool takes)")
    args = parser.parse_args()
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cores; "
          f"tsops --concurrency {args.concurrency}")
    print("| hosts | bootstrap from scratch | tsops CPU | machine CPU | converged rerun "
          "| tsops CPU | machine CPU | round trips per host (rerun) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    times = {}
    for size in args.sizes:
        first, rerun, trips = measure(size, args.concurrency)
        times[size] = first
        print(f"| {size} | {first:.1f} s | {CPU[0]:.1f} s | {BUSY[0]:.1f} s | {rerun:.1f} s "
              f"| {CPU[1]:.1f} s | {BUSY[1]:.1f} s | {trips:.0f} |", flush=True)
    if 1 in times:
        for size in args.sizes:
            print(f"T({size})/T(1) = {times[size] / times[1]:.2f}")


if __name__ == "__main__":
    main()
