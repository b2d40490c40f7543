"""Benchmark the lab: time to start and stop 1, 4 and 8 hosts, and memory per host.

Run by hand as root (numbers go to docs/performance.md):
    .venv/bin/python -m bench.lab [--sizes 1 4 8] [--repeat 3]
"Start" ends when every host's sshd answers; "settled" when systemd reports every host
running. Memory is the proportional set size (PSS) of every process of a host's container,
nspawn included, once settled: shared rootfs pages are split between the hosts that map them.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from tests.lab.lab import Lab, LabHost
from tests.lab.rootfs import ensure_rootfs


def descendants(pid: int) -> list[int]:
    """Return `pid` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def pss_kib(pid: int) -> int:
    """Return a process's PSS in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_memory_kib(host: LabHost) -> int:
    """Return the PSS of every process of one host's container."""
    assert host.process is not None
    return sum(pss_kib(pid) for pid in descendants(host.process.pid))


def measure(size: int) -> tuple[float, float, float, float]:
    """Start and stop one lab of `size` hosts; return (start, settled, stop seconds, MiB/host)."""
    began = time.monotonic()
    lab = Lab(host_count=size)
    try:
        lab.start()
        started = time.monotonic() - began
        for host in lab.hosts:
            host.wait_until_running()
        settled = time.monotonic() - began
        memory = statistics.mean(host_memory_kib(h) for h in lab.hosts) / 1024
    finally:
        stopping = time.monotonic()
        lab.stop()
    return started, settled, time.monotonic() - stopping, memory


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ensure_rootfs()
    measure(1)  # warm the page cache so the first size is not charged for it
    print(f"machine: {platform.node()}, {platform.machine()}, {len(_cpus())} cores, "
          f"kernel {platform.release()}; {args.repeat} runs per size, medians")
    print("| hosts | start (ssh up) | settled (systemd running) | stop | PSS per host |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        runs = [measure(size) for _ in range(args.repeat)]
        start, settled, stop, memory = (statistics.median(col) for col in zip(*runs, strict=True))
        print(f"| {size} | {start:.2f} s | {settled:.2f} s | {stop:.2f} s | {memory:.1f} MiB |",
              flush=True)


def _cpus() -> list[str]:
    return [line for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("processor")]


if __name__ == "__main__":
    main()
