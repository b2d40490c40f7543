"""Benchmark `rotate-storage --migrate` between two buckets of the lab's S3 server (moto).

Run by hand (numbers go to docs/performance.md):
    .venv/bin/python -m bench.migrate [--count 1000] [--big-mb 200] [--workers 1,8]
Seeds --count recordings (90% of 1-20 KB, 9% of 20 KB-1 MB, 1% of 1-5 MB) plus one of
--big-mb MB into a source bucket, then, for each worker count, migrates them into a fresh
destination bucket with the code `rotate-storage --migrate` runs (S3Source -> BucketTarget,
each object read, put with Content-MD5, read back, SHA-256 compared, recorded). Each migration
runs in a child process, so its peak RSS is the migration's own (boto3 included). Then the
resume: the same migration again, everything already verified in the record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.s3 import S3Server

SOURCE, TARGET = "bench-migrate-src", "bench-migrate-dst"


def sizes(count: int, rng: random.Random) -> list[int]:
    """The size mix of bench/recordings.py."""
    result = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.90:
            result.append(rng.randint(1_000, 20_000))
        elif roll < 0.99:
            result.append(rng.randint(20_000, 1_000_000))
        else:
            result.append(rng.randint(1_000_000, 5_000_000))
    return result


def seed(server: S3Server, count: int, big_mb: int) -> tuple[int, int]:
    """Fill the source bucket; return (objects, bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    client = server.client()
    client.create_bucket(Bucket=SOURCE)
    rng = random.Random(7)
    line = b'[0.25, "o", "root@web1:~# systemctl status nginx\\r\\n"]\n'
    header = b'{"version": 2, "width": 80, "height": 24, "timestamp": 1764063001}\n'
    jobs = [(f"nNODE{i % 50:02d}CNTRL/2026-11-25T09:{i // 60 % 60:02d}:{i % 60:02d}."
             f"{i:06d}Z.cast", size) for i, size in enumerate(sizes(count, rng))]
    if big_mb:
        jobs.append(("nBIG0CNTRL/2026-11-25T10:00:00.000000Z.cast", big_mb << 20))

    def put(job: tuple[str, int]) -> int:
        key, size = job
        body = header + line * max(1, (size - len(header)) // len(line))
        client.put_object(Bucket=SOURCE, Key=key, Body=body)
        return len(body)

    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(put, jobs))
    return len(jobs), total


def child(endpoint: str, workers: int, state: str, target: str) -> None:
    """The migration alone (a child process): prints its report as JSON."""
    from tsops.inventory.model import Storage
    from tsops.rotation.migrate import BucketTarget, MigrationRecord, S3Source, migrate
    from tsops.s3 import client_for

    source = Storage(destination=f"s3://{SOURCE}", endpoint=endpoint, region="us-east-1",
                     allow_plain_http=True)
    destination = source.model_copy(update={"destination": f"s3://{target}"})
    record = MigrationRecord.create(Path(state), Path(state) / "inventory.yaml", source, (),
                                    destination.destination)
    report = migrate(S3Source(client_for(source), SOURCE),
                     BucketTarget(client_for(destination), target), record,
                     workers=workers)
    print(json.dumps({**report.as_json(), "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the parent's before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(server: S3Server, workers: int, state: Path, target: str) -> dict[str, object]:
    """Run one migration in a child; its report plus the child's peak RSS."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "bench.migrate", "--child", server.endpoint, str(workers),
         str(state), target], capture_output=True, text=True, check=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    wall = time.monotonic() - started
    report: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    report["wall_seconds"] = round(wall, 2)
    report["failed_count"] = len(report["failed"]) if isinstance(report["failed"], list) else 0
    return report


def baseline(server: S3Server, workers: int) -> tuple[float, int]:
    """The floor: GET and PUT every object on `workers` threads, nothing verified or kept."""
    from concurrent.futures import ThreadPoolExecutor

    client = server.client()
    target = f"{TARGET}-plain-{workers}"
    client.create_bucket(Bucket=target)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=SOURCE)
            for o in page.get("Contents", [])]

    def copy(key: str) -> None:
        body = client.get_object(Bucket=SOURCE, Key=key)["Body"].read()
        client.put_object(Bucket=target, Key=key, Body=body)

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(copy, keys))
    return time.monotonic() - started, len(keys)


def main() -> None:
    """Seed, migrate with each worker count, then resume."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--workers", default="1,8")
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3])
        return
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load {os.getloadavg()[0]:.1f}")
    # Plain HTTP, as when the numbers in docs were measured (TLS would add its own cost).
    with S3Server(tls=False) as server, tempfile.TemporaryDirectory() as state:
        started = time.monotonic()
        objects, total = seed(server, args.count, args.big_mb)
        print(f"seeded {objects} recordings, {total / 1e6:.1f} MB in "
              f"{time.monotonic() - started:.1f} s")
        for workers in (int(w) for w in args.workers.split(",")):
            target = f"{TARGET}-{workers}"
            server.client().create_bucket(Bucket=target)
            folder = Path(state) / f"w{workers}"
            report = run_child(server, workers, folder, target)
            seconds = float(str(report["seconds"]))
            print(f"workers={workers}: {report['copied']} copied, {report['failed_count']} failed, "
                  f"{seconds:.1f} s: {objects / seconds:.1f} objects/s, "
                  f"{total / 1e6 / seconds:.1f} MB/s; peak RSS {report['peak_rss_mb']} MB")
            again = run_child(server, workers, folder, target)
            print(f"  resume (all verified): {again['already_present']} already present, "
                  f"{again['copied']} copied, {again['seconds']} s")
        seconds, copied = baseline(server, 8)
        print(f"floor, plain GET+PUT on 8 threads (no read-back, no digest, no record): "
              f"{copied} objects in {seconds:.1f} s: {copied / seconds:.1f} objects/s, "
              f"{total / 1e6 / seconds:.1f} MB/s")


if __name__ == "__main__":
    main()
