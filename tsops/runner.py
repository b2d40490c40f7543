"""One way to work on many hosts at once: bounded parallelism, one outcome vocabulary, Ctrl-C.

Servers (tsops.servers.phase) and recorders (tsops.recorders.phase) both run their per-host work
through `Runner.each`: every host ends with a result, one host's failure never stops the others,
and Ctrl-C stops at once: hosts not started never start, `stopping` is set (steps check it
between steps), and the KeyboardInterrupt goes on without waiting for the hosts still running,
whose threads the CLI abandons when it exits (every step is safe to run again: a rerun
finishes the job).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tsops.inventory.load import Target

T = TypeVar("T")

Outcome = Literal["unchanged", "changed", "failed", "skipped"]
"""How a host (or the storage) ended: the only spelling of an outcome in tsops."""

FAILED_OUTCOMES: tuple[Outcome, ...] = ("failed", "skipped")
INTERRUPTED = "interrupted before it started"


@dataclass
class HostResult:
    """How one host ended: its outcome, why (when it failed), the steps done, round trips."""

    name: str
    outcome: Outcome
    reason: str = ""
    done: list[str] = field(default_factory=list)
    round_trips: int = 0

    @property
    def failed(self) -> bool:
        """Whether the host failed or was skipped."""
        return self.outcome in FAILED_OUTCOMES


@dataclass
class Runner:
    """Runs per-host work in parallel, at most `concurrency` hosts at a time."""

    concurrency: int = 32
    report: Callable[[str, str], None] = lambda subject, message: None
    stopping: threading.Event = field(default_factory=threading.Event)

    def each(self, targets: Sequence[Target], work: Callable[[Target], T],
             skipped: Callable[[Target], T] | None = None) -> list[T]:
        """`work` for every target, in the targets' order.

        `skipped` gives the result of a host not started because `stopping` was already set
        (work that changes things). Ctrl-C raises KeyboardInterrupt at once, hosts not started
        are never started, and the pool's threads are not waited for.
        """
        results: dict[str, T] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(targets))))
        futures: dict[Future[T], Target] = {
            pool.submit(self._unless_stopping, work, skipped, t): t for t in targets
        }
        try:
            settle(futures)
        except KeyboardInterrupt:
            self.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        for future, target in futures.items():
            results[target.name] = future.result()
        return [results[t.name] for t in targets]

    def _unless_stopping(self, work: Callable[[Target], T],
                         skipped: Callable[[Target], T] | None, target: Target) -> T:
        if self.stopping.is_set() and skipped is not None:
            return skipped(target)
        return work(target)


# Python runs signal handlers in the main thread only. SIGINT delivered to a worker thread (the
# kernel may pick any thread) wakes nothing while the main thread sleeps in a lock wait with
# no timeout, so Ctrl-C would wait for the hosts. The main thread therefore waits in slices.
WAKE_S = 0.2


def settle(futures: Iterable[Future[Any]]) -> None:
    """Wait until every future is done, waking every WAKE_S so that Ctrl-C is handled at once."""
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=WAKE_S)


def result(future: Future[T]) -> T:
    """`future.result()`, waiting as `settle` does."""
    settle([future])
    return future.result()
