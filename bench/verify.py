"""Benchmark `tsops verify`: wall time for 1, 4 and 8 servers, and each canary's time to proof.

Run by hand as root (numbers go to docs/performance.md):
    .venv/bin/python -m bench.verify [--sizes 1 4 8] [--runs 3]
Each size boots N servers and one recorder (local destination), bootstraps them, then runs
`tsops verify` --runs times: a canary Tailscale SSH session per server, then the recorder's
folder polled over SSH until each marker is found. "to proof" is, per server, from opening
its session to finding its recording (the median over servers and runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet, lab_tailnet
from tests.sim.recorder.bundle import allow_port_80


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator on the tailnet would."""
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False,
                          env={**os.environ, TOKEN_VARIABLE: tailnet.token})


def measure(size: int, runs: int) -> tuple[float, float, float, float]:
    """(median wall s, median tsops CPU s, median to-proof s, max to-proof s) for `size`."""
    walls, cpus, proofs = [], [], []
    with Lab(host_count=size + 1) as lab, lab_tailnet(lab) as tailnet, \
            tempfile.TemporaryDirectory() as tmp:
        recorder = lab.hosts[-1].name
        allow_port_80(lab.host(recorder))
        inventory = tailnet.recorded_inventory(
            Path(tmp), {h.name: () for h in lab.hosts[:-1]}, recorder=recorder, min_free_gb=1)
        boot = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(inventory))
        if boot.returncode != 0:
            raise SystemExit(f"bootstrap failed:\n{boot.stdout}\n{boot.stderr}")
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.monotonic()
            run = tsops(tailnet, "verify", "--no-input", "-o", "json", str(inventory))
            walls.append(time.monotonic() - began)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if run.returncode != 0:
                raise SystemExit(f"verify failed:\n{run.stdout}\n{run.stderr}")
            proofs += [float(s["seconds"]) for s in json.loads(run.stdout)["servers"]]
    return (statistics.median(walls), statistics.median(cpus), statistics.median(proofs),
            max(proofs))


def main() -> None:
    """Print a Markdown table of the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cores; {args.runs} runs each")
    print("| servers | verify (median) | tsops CPU | to proof, median | to proof, max |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        wall, cpu, proof, worst = measure(size, args.runs)
        print(f"| {size} | {wall:.1f} s | {cpu:.1f} s | {proof:.1f} s | {worst:.1f} s |",
              flush=True)


if __name__ == "__main__":
    main()
