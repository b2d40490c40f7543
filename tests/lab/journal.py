"""A written record of what a lab created, kept before each thing is created.

If the process that started a lab dies without cleaning up (SIGKILL, a crash of the
interpreter), the next lab to start reads the journals whose owner is gone and removes what
they list. Together with the lab's own teardown, this is how nothing is ever left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.lab import config


def process_start_time(pid: int) -> int | None:
    """Return the kernel's start time of `pid` (clock ticks since boot), None if it is gone.

    A zombie counts as gone: it holds no resources and its parent may never reap it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it are space separated.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(pid: int, start_time: int) -> bool:
    """Return whether the very process recorded as (pid, start_time) still runs."""
    return process_start_time(pid) == start_time


@dataclass
class Journal:
    """The resources one owner process created: processes, network namespaces, links."""

    owner_pid: int
    owner_start: int
    path: Path
    pids: list[tuple[int, int]] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)

    @classmethod
    def create(cls) -> Journal:
        """Open a fresh journal owned by this process."""
        directory = config.RUN_DIR / "journals"
        directory.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        start = process_start_time(pid)
        assert start is not None
        journal = cls(pid, start, directory / f"{pid}-{uuid.uuid4().hex[:8]}.json")
        journal.save()
        return journal

    @classmethod
    def load(cls, path: Path) -> Journal:
        """Read a journal written by any process."""
        data = json.loads(path.read_text())
        return cls(
            owner_pid=data["owner_pid"],
            owner_start=data["owner_start"],
            path=path,
            pids=[(p, s) for p, s in data["pids"]],
            netns=list(data["netns"]),
            links=list(data["links"]),
            dirs=list(data.get("dirs", [])),
            cgroups=list(data.get("cgroups", [])),
        )

    def save(self) -> None:
        """Write the journal atomically."""
        data = asdict(self)
        data["path"] = str(self.path)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def add_pid(self, pid: int) -> None:
        """Record a process this owner started."""
        start = process_start_time(pid)
        if start is not None:
            self.pids.append((pid, start))
            self.save()

    def add_netns(self, name: str) -> None:
        """Record a network namespace, before it is created."""
        self.netns.append(name)
        self.save()

    def add_link(self, name: str) -> None:
        """Record a network link in the root namespace, before it is created."""
        self.links.append(name)
        self.save()

    def add_dir(self, path: Path) -> None:
        """Record a directory to delete at the end."""
        self.dirs.append(str(path))
        self.save()

    def add_cgroup(self, path: Path) -> None:
        """Record a cgroup directory, before it is created."""
        self.cgroups.append(str(path))
        self.save()

    def cleanup(self, timeout: float = config.STOP_TIMEOUT_S) -> None:
        """Remove everything recorded, newest first; what is already gone is skipped."""
        terminate_all(self.pids, timeout)
        for name in reversed(self.netns):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        for name in reversed(self.links):
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
        for cgroup in reversed(self.cgroups):
            remove_cgroup(Path(cgroup))
        for directory in reversed(self.dirs):
            subprocess.run(["rm", "-rf", "--one-file-system", directory], check=False)
        self.path.unlink(missing_ok=True)


def remove_cgroup(path: Path) -> None:
    """Remove a cgroup and the empty cgroups a container's systemd left below it."""
    if not path.is_dir():
        return
    for below, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            Path(below).rmdir()


def terminate_all(pids: list[tuple[int, int]], timeout: float) -> None:
    """SIGTERM every live process of `pids`, wait up to `timeout`, then SIGKILL the rest."""
    live = [(p, s) for p, s in pids if is_alive(p, s)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        for pid, _ in live:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        live = [(p, s) for p, s in live if is_alive(p, s)]
        if live:
            time.sleep(0.05)
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid, start in live:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        while is_alive(pid, start):
            time.sleep(0.02)


def reap_stale() -> int:
    """Clean up after every lab whose owning process is gone; return how many were reaped.

    One reaper at a time (a lock on the run directory): two processes reaping the same dead
    journal raced, the slower one deleting the directory a new lab had just made in the freed
    slot. Under the lock a journal is read, cleaned up and removed before the next reaper looks.
    """
    config.RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (config.RUN_DIR / "reap.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        directory = config.RUN_DIR / "journals"
        reaped = 0
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                journal = Journal.load(path)
            except (OSError, ValueError, KeyError):
                continue
            if not is_alive(journal.owner_pid, journal.owner_start):
                journal.cleanup()
                reaped += 1
        return reaped
