"""Benchmark `tsops recordings search`: the screen-rendering search against the regex path.

Run by hand (numbers go to docs/performance.md):
    .venv/bin/python -m bench.search [--count 1000] [--runs 3] [--sets full_screen] [--check]
        [--workers 16]
Two data sets of the same size mix as bench/recordings.py (90% of 1-20 KB, 9% of 20 KB-1 MB,
1% of 1-5 MB), written to a local directory (compute, not I/O: the files are read once before
timing, so they are in the page cache):
- `shell`: bench/recordings.py's sessions (colour prompts, commands echoed one character per
  write, command output and log dumps in 4 KiB writes);
- `edited`: the same, with line editing as a reader's terminal sees it: one typed command in
  four corrected with backspaces (`\\b ESC[K`, as readline echoes them), and a progress line
  redrawn with carriage returns after one command in ten;
- `full_screen`: `edited` plus, after one command in ten, a full-screen program (alternate
  screen, 5 frames of 24 rows placed with cursor positioning, as `top` draws), which only the
  emulator can render.
Each is searched with `search()` as the CLI runs it (16 threads) and with the regex path
tsops had before (the same searcher over escapes stripped with a regex, no terminal
semantics), back to back in each of --runs runs. Reported: MB/s of recordings (best run),
the slowdown in wall time (best against best, and the median and range of each run's own
ratio) and in CPU time (this process's, all threads: the work done, which other load on a
shared machine disturbs far less than the wall time), how much text went through the
emulator and how much of it the row model took without pyte, and the matches each found;
with --check, also the matches with pyte alone (the row model off, as before it; one run
after the others, timed against the regex path's runs), which must equal the screen
search's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.recordings import COMMANDS, ROW, USERS, recording, size_of
from tests.sim.recorder.cast import cast_header, go_json, header_line
from tsops.recordings.catalog import WORKERS, parallel
from tsops.recordings.reader import LineAssembler, Stream
from tsops.recordings.screen import ScreenText
from tsops.recordings.search import _Searcher, compile_pattern
from tsops.recordings.store import LocalStore, ObjectInfo

PATTERN = r"systemctl restart (nginx|postgres)"
TYPO = "\b\x1b[K"


def top_frames(at: float, rng: random.Random, frames: int = 5) -> list[tuple[float, str]]:
    """A full-screen program (as `top` draws): the alternate screen, then frames of 24 rows
    each placed with cursor positioning and erase-to-end, then back."""
    chunk = [(at, "\x1b[?1049h\x1b[H\x1b[2J")]
    for frame in range(frames):
        at += 1.0
        rows = [f"\x1b[{row + 1};1Htop - 09:30:{frame:02d} up 3 days, load average: "
                f"{rng.random():.2f}\x1b[K" if row == 0 else
                f"\x1b[{row + 1};1H{rng.randrange(1, 9999):>7} ops  20   0  "
                f"{rng.randrange(10**6):>7}  S  {rng.random() * 100:4.1f}  "
                f"0:{rng.randrange(60):02d}.00 worker-{row}\x1b[K"
                for row in range(24)]
        chunk.append((at, "".join(rows)))
    chunk.append((at + 0.5, "\x1b[?1049l\r\n"))
    return chunk


def edited_events(target: int, rng: random.Random, full_screen: bool = False) -> Iterator[bytes]:
    """Event lines of a shell session with typing corrections and progress bars (and, with
    `full_screen`, a full-screen program after one command in ten)."""
    prompt = "\x1b[1;32mops@web1\x1b[0m:~$ "
    at = 0.4
    size = 0
    while size < target:
        command, output = rng.choice(COMMANDS)
        chunk = [(at, prompt)]
        typo_at = rng.randrange(len(command)) if rng.random() < 0.25 else -1
        for index, char in enumerate(command):
            if index == typo_at:
                for wrong in "xq":
                    at += 0.11
                    chunk.append((at, wrong))
                for _ in "xq":
                    at += 0.2
                    chunk.append((at, TYPO))
            at += 0.11
            chunk.append((at, char))
        at += 0.2
        chunk.append((at, "\r\n"))
        if full_screen and rng.random() < 0.1:
            chunk.extend(top_frames(at, rng))
            at = chunk[-1][0]
        elif rng.random() < 0.1:
            for percent in range(0, 101, 10):
                at += 0.05
                chunk.append((at, f"\rdownloading {percent:3d}% [{'#' * (percent // 5):<20}]"))
            chunk.append((at, "\r\n"))
        if rng.random() < 0.3:
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


def edited_recording(target: int, rng: random.Random, index: int,
                     full_screen: bool = False) -> bytes:
    """One .cast file of about `target` bytes with line editing."""
    started = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        minutes=index)
    header = cast_header(source=rng.choice(USERS), ssh_user="ops", local_user="root",
                         started=started)
    return header_line(header) + b"".join(edited_events(target, rng, full_screen))


def full_screen_recording(target: int, rng: random.Random, index: int) -> bytes:
    """One .cast file with line editing and full-screen programs."""
    return edited_recording(target, rng, index, full_screen=True)


def fill(root: Path, count: int, make: Callable[[int, random.Random, int], bytes]) -> int:
    """Write `count` recordings over 50 node directories; return the bytes written."""
    rng = random.Random(7)
    total = 0
    for index in range(count):
        target = size_of(rng)
        path = root / f"n{index % 50:03d}NODECNTRL" / f"{index:06d}.cast"
        path.parent.mkdir(exist_ok=True)
        data = make(target, random.Random(index), index)
        path.write_bytes(data)
        total += len(data)
    return total


def regex_search_one(store: LocalStore, info: ObjectInfo, pattern: re.Pattern[str]) -> int:
    """The search as it was before screen rendering: escapes stripped, then matched."""
    stream = Stream(store, info.key)
    searcher = _Searcher(info.key, pattern, 0)
    assembler = LineAssembler()
    for batch in stream.batches():
        searcher.take(assembler.feed(batch))
    searcher.take(assembler.finish())
    return len(searcher.matches)


def screen_search_one(store: LocalStore, info: ObjectInfo, pattern: re.Pattern[str],
                      row_model: bool = True) -> tuple[int, int, int]:
    """The search as tsops runs it now; also how much text went through the emulator, and
    how much of that the row model took."""
    stream = Stream(store, info.key)
    searcher = _Searcher(info.key, pattern, 0)
    screen: ScreenText | None = None
    for batch in stream.batches():
        if screen is None:
            header = stream.header
            width, height = (header.width, header.height) if header else (0, 0)
            screen = ScreenText(width, height, row_model=row_model)
        for lines in screen.feed(batch):
            searcher.take(lines)
    screen = screen or ScreenText()
    for lines in screen.finish():
        searcher.take(lines)
    return len(searcher.matches), screen.emulated_chars, screen.modelled_chars


def measure(root: Path, total: int, runs: int, check: bool = False,
            workers: int = WORKERS) -> dict[str, object]:
    """Both searches over one directory, back to back, `runs` times."""
    store = LocalStore(root)
    infos = list(store.list())
    for info in infos:  # into the page cache
        sum(map(len, store.chunks(info.key)))
    pattern = compile_pattern(PATTERN, ignore_case=False)
    seconds: dict[str, list[float]] = {"regex": [], "screen": []}
    cpu: dict[str, list[float]] = {"regex": [], "screen": []}
    found: dict[str, int] = {}
    emulated = modelled = 0
    for _ in range(runs):
        began, began_cpu = time.monotonic(), time.process_time()
        found["regex"] = sum(parallel(lambda i: regex_search_one(store, i, pattern), infos,
                                      workers))
        seconds["regex"].append(time.monotonic() - began)
        cpu["regex"].append(time.process_time() - began_cpu)
        began, began_cpu = time.monotonic(), time.process_time()
        results = list(parallel(lambda i: screen_search_one(store, i, pattern), infos, workers))
        seconds["screen"].append(time.monotonic() - began)
        cpu["screen"].append(time.process_time() - began_cpu)
        found["screen"] = sum(matches for matches, _, _ in results)
        emulated = sum(chars for _, chars, _ in results)
        modelled = sum(chars for _, _, chars in results)
    best = {name: min(times) for name, times in seconds.items()}
    ratios = sorted(screen / regex for regex, screen in zip(seconds["regex"],
                                                             seconds["screen"], strict=True))
    cpu_ratios = sorted(screen / regex for regex, screen in zip(cpu["regex"], cpu["screen"],
                                                                 strict=True))
    mb = total / 1e6
    report: dict[str, object] = {
        "data_mb": round(mb, 1), "recordings": len(infos),
        "regex_seconds": round(best["regex"], 2),
        "regex_mb_per_s": round(mb / best["regex"], 1),
        "screen_seconds": round(best["screen"], 2),
        "screen_mb_per_s": round(mb / best["screen"], 1),
        "slowdown": round(best["screen"] / best["regex"], 2),
        "slowdown_per_run_median": round(statistics.median(ratios), 2),
        "slowdown_per_run_range": [round(ratios[0], 2), round(ratios[-1], 2)],
        # CPU time of this process (all threads): the work done, whatever else runs
        "cpu_seconds_regex_median": round(statistics.median(cpu["regex"]), 2),
        "cpu_seconds_screen_median": round(statistics.median(cpu["screen"]), 2),
        "cpu_slowdown_per_run_median": round(statistics.median(cpu_ratios), 2),
        "cpu_slowdown_per_run_range": [round(cpu_ratios[0], 2), round(cpu_ratios[-1], 2)],
        "emulated_chars": emulated,
        "emulated_percent_of_bytes": round(100 * emulated / total, 1),
        "row_model_percent_of_emulated": round(100 * modelled / emulated, 1) if emulated else None,
        "matches_regex": found["regex"], "matches_screen": found["screen"],
    }
    if check:  # once, after the runs: the screen search as it was before the row model
        began, began_cpu = time.monotonic(), time.process_time()
        report["matches_pyte_only"] = sum(
            matches for matches, _, _ in parallel(
                lambda i: screen_search_one(store, i, pattern, row_model=False), infos, workers))
        report["pyte_only_slowdown_vs_best_regex"] = round(
            (time.monotonic() - began) / best["regex"], 2)
        report["pyte_only_cpu_slowdown_vs_median_regex"] = round(
            (time.process_time() - began_cpu) / statistics.median(cpu["regex"]), 2)
    return report


def main() -> None:
    """Write both data sets, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sets", default="shell,edited,full_screen",
                        help="which data sets, comma-separated")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"threads, as search uses (default {WORKERS}); 1 for the cost "
                             "without contention for the interpreter lock")
    parser.add_argument("--check", action="store_true",
                        help="also count the matches with pyte alone (the row model off)")
    args = parser.parse_args()
    sets = args.sets.split(",")
    report: dict[str, object] = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
                   f"Python {platform.python_version()}",
        "load_average_before": os.getloadavg(),
        "workers": args.workers,
    }
    for name, make in (("shell", recording), ("edited", edited_recording),
                       ("full_screen", full_screen_recording)):
        if name not in sets:
            continue
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            total = fill(root, args.count, make)
            report[name] = measure(root, total, args.runs, args.check, args.workers)
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
