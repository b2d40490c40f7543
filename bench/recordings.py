"""Benchmark `tsops recordings` on the lab's S3 server (moto): list, search and export.

Run by hand (numbers go to docs/recordings.md, then docs/performance.md):
    .venv/bin/python -m bench.recordings [--count 10000] [--big-mb 500]
Recordings have real-shaped headers and shell-like output (prompts with colour escapes, typed
commands echoed one character per write, command output), in a mix of sizes: 90% of 1-20 KB,
9% of 20 KB-1 MB, 1% of 1-5 MB. Measured:
- `list`: wall time over all recordings, and bytes read per recording by size class;
- `search`: tsops (parallel, block-wise) against a plain sequential read-and-match of the same
  objects (GET each, json-decode each line, regex each text line), in MB/s of recordings, with
  the floor set by the server (every object fetched in parallel, nothing else); then the same
  comparison on a local directory holding the same recordings (no server in the way);
- `export --format ecs --text` on one recording of --big-mb MB: peak RSS of the tsops process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from tests.lab.s3 import S3Server
from tests.sim.recorder.cast import SourceNode, cast_header, go_json, header_line
from tsops.recordings.catalog import parallel, scan
from tsops.recordings.search import compile_pattern, search
from tsops.recordings.store import CHUNK, LocalStore, ObjectInfo, S3Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "bench-recordings"
PATTERN = r"systemctl restart (nginx|postgres)"
USERS = [SourceNode(f"laptop-{i}.tail1234.ts.net", f"nLAPTOP{i}CNTRL", login=f"user{i}@example.com",
                    user_id=1000 + i) for i in range(20)]
COMMANDS = [("ls -la", "total 12\ndrwxr-xr-x 3 root root 4096 Nov 25 09:30 .\n"),
            ("sudo systemctl restart nginx", ""),
            ("journalctl -u app --since today | tail -3",
             "Nov 25 09:30:01 web1 app[812]: \x1b[33mWARN\x1b[0m slow request 1.2s\n" * 3),
            ("df -h /",
             "Filesystem Size Used Avail Use% Mounted on\n/dev/sda1 40G 12G 26G 32% /\n"),
            ("cat /var/log/syslog | grep -c error", "17\n")]
ROW = "2026-11-25T09:30:01Z GET /api/v1/items/{n} 200 {ms}ms bytes={b} agent=curl/8.4\n"


def events(target: int, rng: random.Random) -> Iterator[bytes]:
    """Event lines of a shell session until about `target` bytes: typing, output, log dumps."""
    prompt = "\x1b[1;32mops@web1\x1b[0m:~$ "
    at = 0.4
    size = 0
    while size < target:
        command, output = rng.choice(COMMANDS)
        chunk = [(at, prompt)]
        for char in command:
            at += 0.11
            chunk.append((at, char))
        at += 0.2
        chunk.append((at, "\r\n"))
        if rng.random() < 0.3:  # a command that dumps many lines, in 4 KiB writes
            rows = min(rng.randrange(20, 400), (target - size) // 90 + 1)
            dump = "".join(ROW.format(n=rng.randrange(10**6), ms=rng.randrange(900),
                                      b=rng.randrange(10**5)) for _ in range(rows))
            for start in range(0, len(dump), 4096):
                at += 0.002
                chunk.append((at, dump[start:start + 4096].replace("\n", "\r\n")))
        elif output:
            at += 0.05
            chunk.append((at, output.replace("\n", "\r\n")))
        at += rng.expovariate(0.5)
        for when, text in chunk:
            line = f'[{when:.6f},"o",{go_json(text)}]\n'.encode()
            size += len(line)
            yield line


def recording(target: int, rng: random.Random, index: int) -> bytes:
    """One .cast file of about `target` bytes."""
    started = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        minutes=index)
    header = cast_header(source=rng.choice(USERS), ssh_user="ops", local_user="root",
                         started=started)
    return header_line(header) + b"".join(events(target, rng))


def size_of(rng: random.Random) -> int:
    """A recording size from the mix: mostly small, some medium, a few large."""
    draw = rng.random()
    if draw < 0.90:
        return rng.randrange(1 << 10, 20 << 10)
    if draw < 0.99:
        return rng.randrange(20 << 10, 1 << 20)
    return rng.randrange(1 << 20, 5 << 20)


def fill(client: S3Client, count: int, seed: int = 7) -> dict[str, int]:
    """Upload `count` recordings over 50 nodes; return key -> size."""
    rng = random.Random(seed)
    plan = [(f"n{i % 50:03d}NODECNTRL/{i:06d}.cast", size_of(rng), i) for i in range(count)]
    sizes: dict[str, int] = {}

    def put(item: tuple[str, int, int]) -> None:
        key, target, index = item
        data = recording(target, random.Random(index), index)
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
        sizes[key] = len(data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, plan))
    return sizes


def size_class(size: int) -> str:
    """The size class a recording is reported under."""
    for limit, name in ((10 << 10, "1-10 KB"), (100 << 10, "10-100 KB"), (1 << 20, "0.1-1 MB")):
        if size < limit:
            return name
    return "1-5 MB"


class PerKeyReads:
    """A Store wrapper that counts the bytes read from each key."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.description = store.description
        self.reads: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def bytes_read(self) -> int:
        """Bytes read from recordings so far."""
        return self.store.bytes_read

    def _count(self, key: str, data: bytes) -> bytes:
        with self._lock:
            self.reads[key] = self.reads.get(key, 0) + len(data)
        return data

    def list(self) -> Iterator[ObjectInfo]:
        """The wrapped store's recordings."""
        return self.store.list()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """A counted ranged read."""
        return self._count(key, self.store.read_range(key, start, length))

    def read_tail(self, key: str, length: int) -> bytes:
        """A counted tail read."""
        return self._count(key, self.store.read_tail(key, length))

    def chunks(self, key: str) -> Iterator[bytes]:
        """A counted whole read."""
        for chunk in self.store.chunks(key):
            yield self._count(key, chunk)


def bench_list(client: S3Client, sizes: dict[str, int]) -> dict[str, object]:
    """Time a full listing (what `tsops recordings list` does) and bytes read per recording."""
    store = PerKeyReads(S3Store(client, BUCKET))
    began = time.monotonic()
    catalog = scan(store)
    elapsed = time.monotonic() - began
    assert len(catalog.recordings) == len(sizes) and not catalog.problems, catalog.problems[:3]
    by_class: dict[str, list[int]] = {}
    for key, size in sizes.items():
        by_class.setdefault(size_class(size), []).append(store.reads[key])
    return {
        "recordings": len(sizes), "seconds": round(elapsed, 2),
        "per_second": round(len(sizes) / elapsed),
        "bytes_read_total": store.bytes_read,
        "bytes_read_per_recording": {
            name: {"count": len(reads), "mean": round(sum(reads) / len(reads)),
                   "max": max(reads)} for name, reads in sorted(by_class.items())},
    }


def plain_search(client: S3Client, pattern: re.Pattern[str]) -> int:
    """The baseline: list, then for each recording in turn GET it, decode and match each line."""
    control = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\r")
    found = 0
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    for key in keys:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        text = []
        for line in body.split(b"\n")[1:]:
            if line:
                event = json.loads(line)
                if event[1] == "o":
                    text.append(event[2])
        for text_line in control.sub("", "".join(text)).split("\n"):
            if pattern.search(text_line):
                found += 1
    return found


def bench_search(client: S3Client, sizes: dict[str, int]) -> dict[str, object]:
    """tsops search (list + parallel search) against the sequential baseline."""
    pattern = compile_pattern(PATTERN, ignore_case=False)
    total_mb = sum(sizes.values()) / 1e6
    store = S3Store(client, BUCKET)
    began = time.monotonic()
    found = sum(len(r.matches) for r in search(store, store.list(), pattern))
    ours = time.monotonic() - began
    began = time.monotonic()
    baseline_found = plain_search(client, re.compile(PATTERN))
    baseline = time.monotonic() - began
    assert found == baseline_found, (found, baseline_found)
    began = time.monotonic()  # the floor: only fetching every object, in parallel
    list(parallel(lambda info: sum(map(len, store.chunks(info.key))), store.list()))
    fetch_only = time.monotonic() - began
    return {"data_mb": round(total_mb, 1), "matches": found,
            "tsops_seconds": round(ours, 2), "tsops_mb_per_s": round(total_mb / ours, 1),
            "baseline_seconds": round(baseline, 2),
            "baseline_mb_per_s": round(total_mb / baseline, 1),
            "speedup": round(baseline / ours, 2),
            "parallel_fetch_only_seconds": round(fetch_only, 2),
            "speedup_ceiling": round(baseline / fetch_only, 2)}


def plain_search_local(root: Path, pattern: re.Pattern[str]) -> int:
    """The baseline on a directory: each file in turn, decode and match each line."""
    control = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\r")
    found = 0
    for path in sorted(root.glob("*/*.cast")):
        text = []
        for line in path.read_bytes().split(b"\n")[1:]:
            if line:
                event = json.loads(line)
                if event[1] == "o":
                    text.append(event[2])
        for text_line in control.sub("", "".join(text)).split("\n"):
            if pattern.search(text_line):
                found += 1
    return found


def bench_search_local(count: int) -> dict[str, object]:
    """The same search on a local directory holding the same recordings: compute, not I/O."""
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        total = 0
        for index in range(count):
            target = size_of(rng)
            path = root / f"n{index % 50:03d}NODECNTRL" / f"{index:06d}.cast"
            path.parent.mkdir(exist_ok=True)
            data = recording(target, random.Random(index), index)
            path.write_bytes(data)
            total += len(data)
        pattern = compile_pattern(PATTERN, ignore_case=False)
        store = LocalStore(root)
        began = time.monotonic()
        found = sum(len(r.matches) for r in search(store, store.list(), pattern))
        ours = time.monotonic() - began
        began = time.monotonic()
        baseline_found = plain_search_local(root, re.compile(PATTERN))
        baseline = time.monotonic() - began
    assert found == baseline_found, (found, baseline_found)
    return {"data_mb": round(total / 1e6, 1), "matches": found,
            "tsops_seconds": round(ours, 2), "tsops_mb_per_s": round(total / 1e6 / ours, 1),
            "baseline_seconds": round(baseline, 2),
            "baseline_mb_per_s": round(total / 1e6 / baseline, 1),
            "speedup": round(baseline / ours, 2)}


def bench_export(server: S3Server, client: S3Client, big_mb: int) -> dict[str, object]:
    """Peak memory of `tsops recordings export --text` on one recording of `big_mb` MB."""
    key = "nBIGNODECNTRL/big.cast"
    with tempfile.NamedTemporaryFile(suffix=".cast") as file:
        rng = random.Random(1)
        file.write(header_line(cast_header(source=USERS[0], ssh_user="ops",
                                           started=datetime.datetime(2026, 11, 2,
                                                                     tzinfo=datetime.UTC))))
        for line in events(big_mb * 10**6, rng):
            file.write(line)
        file.flush()
        size = file.tell()
        client.create_bucket(Bucket=BUCKET + "-big")
        client.upload_file(file.name, BUCKET + "-big", key)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    script = (
        "import resource, sys, runpy\n"
        "sys.argv = ['tsops'] + sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module('tsops', run_name='__main__')\n"
        "finally:\n"
        "    status = open('/proc/self/status').read()\n"
        "    sys.stderr.write(status[status.index('VmHWM'):].split('\\n')[0] + '\\n')\n"
    )
    began = time.monotonic()
    with tempfile.TemporaryFile() as sink:
        result = subprocess.run(
            [sys.executable, "-c", script, "recordings", "export", "--format", "ecs", "--text",
             "--from", f"s3://{BUCKET}-big", "--endpoint", server.endpoint],
            stdout=sink, stderr=subprocess.PIPE, text=True, env=env, check=False)
        written = sink.seek(0, os.SEEK_END)
        sink.seek(0)
        event = json.loads(sink.readline())
    elapsed = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"export failed: {result.stderr}")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked bench process.
    rss = int(re.findall(r"VmHWM:\s+(\d+) kB", result.stderr)[-1])
    return {"recording_mb": round(size / 1e6, 1), "output_mb": round(written / 1e6, 1),
            "text_chars": len(event["tsops"]["text"]), "seconds": round(elapsed, 1),
            "peak_rss_mb": round(rss / 1024, 1), "chunk_kib": CHUNK >> 10}


def main() -> None:
    """Fill moto, run the three measurements, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--big-mb", type=int, default=500)
    args = parser.parse_args()
    # Plain HTTP, as when the numbers in docs were measured (TLS would add its own cost).
    with S3Server(tls=False) as server:
        from botocore.config import Config

        client = server.client(config=Config(max_pool_connections=32))
        client.create_bucket(Bucket=BUCKET)
        began = time.monotonic()
        sizes = fill(client, args.count)
        report: dict[str, object] = {
            "machine": f"{platform.node()}: {os.cpu_count()} cores, "
                       f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
                       f"Python {platform.python_version()}",
            "data": {"recordings": len(sizes), "total_mb": round(sum(sizes.values()) / 1e6, 1),
                     "smallest": min(sizes.values()), "largest": max(sizes.values()),
                     "upload_seconds": round(time.monotonic() - began, 1)},
        }
        print(json.dumps(report, indent=1), flush=True)
        report["list"] = bench_list(client, sizes)
        print(json.dumps({"list": report["list"]}, indent=1), flush=True)
        report["search"] = bench_search(client, sizes)
        print(json.dumps({"search": report["search"]}, indent=1), flush=True)
        report["search_local"] = bench_search_local(args.count)
        print(json.dumps({"search_local": report["search_local"]}, indent=1), flush=True)
        if args.big_mb:
            report["export"] = bench_export(server, client, args.big_mb)
            print(json.dumps({"export": report["export"]}, indent=1), flush=True)
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report["bench_process_peak_rss_mb"] = round(self_rss / 1024)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
