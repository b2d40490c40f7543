"""Benchmark: how long tsops takes to refuse each hostile input (exit 2 expected).

Run by hand (numbers go to docs/performance.md):
    .venv/bin/python -m bench.hostile [--runs 3]
Each file in tests/data/hostile_inventories/ goes through `tsops check`, each file in
tests/data/hostile_policies/ through `tsops policy diff` (a file source); every run is a new
process, so the figures include Python's start-up (compare `tsops --help`, printed first).
Wall and CPU seconds (user + system of the child) are reported as median and maximum.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
INVENTORY = """\
version: 1
tailnet:
  name: example.com
  credentials:
    api_token: {env: TSOPS_BENCH_UNSET_TOKEN}
servers:
  hosts:
    web1: {address: 192.0.2.11}
policy: {source: file, file: policy.hujson}
"""


def timed(*args: str) -> tuple[int, float, float]:
    """Exit code, wall seconds and CPU seconds of one `python -m tsops ARGS` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                            check=False, timeout=60,
                            env={k: v for k, v in os.environ.items()
                                 if k != "TSOPS_BENCH_UNSET_TOKEN"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result.returncode, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    cases: list[tuple[str, list[str]]] = [("tsops --help", ["--help"])]
    work = Path(tempfile.mkdtemp(prefix="tsops-bench-hostile-"))
    try:
        for path in sorted((DATA / "hostile_inventories").glob("*.yaml")):
            cases.append((path.name, ["check", str(path)]))
        for path in sorted((DATA / "hostile_policies").glob("*.hujson")):
            folder = work / path.stem
            folder.mkdir()
            shutil.copyfile(path, folder / "policy.hujson")
            (folder / "inventory.yaml").write_text(INVENTORY)
            cases.append((path.name, ["policy", "diff", "--no-input",
                                      str(folder / "inventory.yaml")]))
        walls: list[float] = []
        cpus: list[float] = []
        print(f"{'input':48} {'exit':>4} {'wall s':>7} {'cpu s':>6}")
        for name, args in cases:
            measured = [timed(*args) for _ in range(runs)]
            codes = {code for code, _, _ in measured}
            wall = statistics.median(w for _, w, _ in measured)
            cpu = statistics.median(c for _, _, c in measured)
            print(f"{name:48} {'/'.join(map(str, sorted(codes))):>4} {wall:7.2f} {cpu:6.2f}")
            if name != "tsops --help":
                walls.append(wall)
                cpus.append(cpu)
                if codes != {2}:
                    print(f"  NOT REFUSED WITH EXIT 2: {name}")
        print(f"{len(walls)} hostile inputs: wall median {statistics.median(walls):.2f} s, "
              f"max {max(walls):.2f} s; cpu median {statistics.median(cpus):.2f} s, "
              f"max {max(cpus):.2f} s; load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
