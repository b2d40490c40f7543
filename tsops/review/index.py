"""What the review server knows of its source: the catalog, kept fresh between page loads.

A page load lists the source again when the last listing is older than `refresh` seconds and
probes (first and last bytes, as `recordings list` does) only the files that are new or changed
since: a warm page costs one listing, whatever the number of recordings. A file that could not
be read (the source failed) is not remembered, so it is tried again on the next load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tsops.recordings.catalog import WORKERS, Problem, Recording, parallel, probe, truncation
from tsops.recordings.store import ObjectInfo, Store

REFRESH = 10.0  # seconds a listing is reused before the source is listed again

Identity = tuple[str, int, float | None]  # key, size, modification time: a file's version


@dataclass(frozen=True)
class Snapshot:
    """The source at one moment: readable recordings, damaged files, and every problem."""

    recordings: tuple[Recording, ...]
    damaged: tuple[Problem, ...]  # files that are not readable recordings at all
    problems: dict[str, Problem] = field(default_factory=dict)  # by key, truncation included
    by_key: dict[str, Recording] = field(default_factory=dict)
    taken: float = 0.0

    def recording(self, key: str) -> Recording | None:
        """The readable recording filed under `key`, if any."""
        return self.by_key.get(key)

    def damage(self, key: str) -> Problem | None:
        """What is wrong with the file filed under `key` (truncated or unreadable), if any."""
        return self.problems.get(key)

    def holds(self, key: str) -> bool:
        """Whether the source listed a file under `key` (readable or not)."""
        return key in self.by_key or key in self.problems


class Index:
    """The catalog of one store, rebuilt incrementally; safe to share between threads."""

    def __init__(self, store: Store, refresh: float = REFRESH, workers: int = WORKERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.refresh = refresh
        self.workers = workers
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[Identity, Recording | Problem] = {}
        self._snapshot: Snapshot | None = None

    def snapshot(self, fresh: bool = False) -> Snapshot:
        """The catalog, listed again when older than `refresh` (or `fresh`); StoreError when
        the source cannot be listed."""
        with self._lock:
            current = self._snapshot
            if fresh or current is None or self.clock() - current.taken >= self.refresh:
                current = self._snapshot = self._rebuild()
            return current

    def _rebuild(self) -> Snapshot:
        infos = list(self.store.list())
        wanted = {_identity(info) for info in infos}
        todo = [info for info in infos if _identity(info) not in self._known]
        results = parallel(lambda info: probe(self.store, info), todo, self.workers)
        for info, result in zip(todo, results, strict=True):
            if isinstance(result, Problem) and result.kind == "unreadable":
                continue  # the source failed, not the file: try again next time
            self._known[_identity(info)] = result
        self._known = {identity: found for identity, found in self._known.items()
                       if identity in wanted}
        recordings: list[Recording] = []
        damaged: list[Problem] = []
        problems: dict[str, Problem] = {}
        for info in infos:
            found = self._known.get(_identity(info))
            if found is None:
                found = Problem(info.key, "unreadable", "the source failed while reading it")
            if isinstance(found, Problem):
                damaged.append(found)
                problems[found.key] = found
            else:
                recordings.append(found)
                if found.truncated:
                    problems[found.key] = truncation(found)
        return Snapshot(tuple(recordings), tuple(damaged), problems,
                        {r.key: r for r in recordings}, self.clock())


def _identity(info: ObjectInfo) -> Identity:
    return info.key, info.size, info.modified
