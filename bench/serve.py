"""Benchmark `tsops recordings serve` over the lab's S3 server (moto): first page and memory.

Run by hand (numbers go to docs/performance.md):
    .venv/bin/python -m bench.serve [--counts 1000,10000]
For each count, a bucket of that many recordings (1-20 KB shell sessions, as bench/recordings.py
makes them) is served by a real `tsops recordings serve` process. Measured:
- cold: from the address being printed to the first list page received (the server reads the
  catalog: one ranged read of each recording's head and tail, as `recordings list` does);
- warm: later list pages, median of 5 (answered from the last listing; a listing older than
  10 s is renewed in the background);
- relisted: list pages with `refresh=1`, which wait for a new listing of the source (only new
  or changed files are then read), median of 3;
- the server's resident memory after the first page, against the recordings' total size.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.recordings import recording
from tests.lab.s3 import S3Server

ROOT = Path(__file__).resolve().parent.parent


def fill(server: S3Server, bucket: str, count: int) -> int:
    """Upload `count` small recordings over 50 nodes; return their total size."""
    client = server.client()
    client.create_bucket(Bucket=bucket)
    sizes: list[int] = []

    def put(index: int) -> None:
        rng = random.Random(index)
        data = recording(rng.randrange(1 << 10, 20 << 10), rng, index)
        client.put_object(Bucket=bucket, Key=f"n{index % 50:03d}NODECNTRL/{index:06d}.cast",
                          Body=data)
        sizes.append(len(data))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(count)))
    return sum(sizes)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(opener: urllib.request.OpenerDirector, url: str) -> float:
    """Seconds to receive one page."""
    started = time.perf_counter()
    with opener.open(url, timeout=600) as response:
        response.read()
    return time.perf_counter() - started


def measure(server: S3Server, bucket: str) -> dict[str, float]:
    """Start serve on the bucket; time the first (cold) and later (warm) list pages."""
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tsops", "recordings", "serve", "--from", f"s3://{bucket}",
         "--endpoint", server.endpoint, "--region", "us-east-1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, cwd=ROOT)
    try:
        assert process.stdout is not None
        url = ""
        for line in process.stdout:
            if "?token=" in line:
                url = line.strip()
                break
        started = time.perf_counter()
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url, timeout=600) as response:
            response.read()
        cold = time.perf_counter() - started
        memory = rss_mb(process.pid)
        base = url.split("/?", 1)[0]
        warm = [timed(opener, f"{base}/?page=2") for _ in range(5)]
        relisted = [timed(opener, f"{base}/?refresh=1") for _ in range(3)]
        return {"cold": cold, "warm": statistics.median(warm),
                "relisted": statistics.median(relisted), "rss": memory,
                "rss_after": rss_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="1000,10000")
    counts = [int(text) for text in parser.parse_args().counts.split(",")]
    server = S3Server(tls=False)
    server.start()
    try:
        print(f"{platform.node()}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        print("recordings  total MB  cold first page  warm page  relisted page  server RSS "
              "(after first page / at the end)")
        for count in counts:
            bucket = f"bench-serve-{count}"
            total = fill(server, bucket, count)
            found = measure(server, bucket)
            print(f"{count:>10}  {total / 1e6:>8.1f}  {found['cold']:>13.2f} s  "
                  f"{found['warm']:>7.2f} s  {found['relisted']:>11.2f} s  "
                  f"{found['rss']:>6.1f} MB / {found['rss_after']:.1f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
