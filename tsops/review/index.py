"""What the review server knows of its source: the catalog, kept fresh between page loads.

A page is answered from the last listing; when that is older than `refresh` seconds the source
is listed again in the background, and only the files new or changed since are probed (first
and last bytes, as `recordings list` does): a warm page reads nothing from the source, whatever
the number of recordings. A file that could not
be read (the source failed) is not remembered, so it is tried again on the next load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tsops.recordings.catalog import (
    WORKERS,
    Problem,
    Recording,
    parallel,
    probe,
    truncation,
    unread,
)
from tsops.recordings.store import ObjectInfo, Store, StoreError

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
    orders: dict[tuple[str, str], list[Recording]] = field(default_factory=dict)  # sorted

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
        self._failed: StoreError | None = None
        self._refreshing = False

    def snapshot(self, fresh: bool = False) -> Snapshot:
        """The catalog. The first call (and `fresh`) lists the source and waits; later calls
        answer at once from the last listing and, when it is older than `refresh`, list again
        in the background. While the source fails, every call raises its StoreError (a page
        says so) and the next call tries again."""
        with self._lock:
            current = self._snapshot
            if fresh or current is None:
                return self._rebuild_now()
            stale = self.clock() - current.taken >= self.refresh
            if (stale or self._failed is not None) and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._rebuild_later, daemon=True).start()
            if self._failed is not None:
                raise self._failed
            return current

    def _rebuild_now(self) -> Snapshot:
        """List and probe while holding the lock; remember a failure of the source."""
        try:
            self._snapshot = self._rebuild()
        except StoreError as error:
            self._failed = error
            raise
        self._failed = None
        return self._snapshot

    def _rebuild_later(self) -> None:
        try:
            with self._lock:
                self._rebuild_now()
        except StoreError:
            pass  # remembered: the next page says what failed
        finally:
            self._refreshing = False

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
        for left_out in unread(self.store):  # names no recording may have, recorders not read
            damaged.append(left_out)
            if left_out.key:
                problems[left_out.key] = left_out
        return Snapshot(tuple(recordings), tuple(damaged), problems,
                        {r.key: r for r in recordings}, self.clock())


def _identity(info: ObjectInfo) -> Identity:
    return info.key, info.size, info.modified
