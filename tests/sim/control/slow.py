"""A test switch of the simulated API: slow answers, per endpoint and counted.

The real API is sometimes slow, or hangs (a load balancer that accepts and never answers). A
client must bound its waits; these delays let a test prove it without a real outage. A delay
holds the answer in the simulator's request thread; stopping the server ends every delay at
once, so a hung answer never outlives its test.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class Delay:
    """Answer matching requests `seconds` late (see Delays.add)."""

    method: str
    path: re.Pattern[str]
    seconds: float
    after_handling: bool
    remaining: int | None
    served: int = 0


class Delays:
    """Every delay switched on, matched in the order added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: list[Delay] = []
        self._stopping = threading.Event()

    def add(self, method: str, path: str, seconds: float, *, times: int | None = 1,
            after_handling: bool = False) -> Delay:
        """Hold the answer to the next `times` requests `method path` (`path` a regular
        expression the whole request path must match; `times=None`: every one) for `seconds`.

        By default the request is carried out after the wait (a slow server); with
        `after_handling` it is carried out first and only the answer is late (a server that
        committed and then stalled: a client that gave up cannot know whether it happened).
        """
        if seconds <= 0:
            raise ValueError("a delay must be positive")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: every request)")
        delay = Delay(method, re.compile(path), seconds, after_handling, times)
        with self._lock:
            self._delays.append(delay)
        return delay

    def take(self, method: str, path: str) -> Delay | None:
        """The delay for this request, if one is left (counted as served)."""
        with self._lock:
            for delay in self._delays:
                if delay.method == method and delay.path.fullmatch(path):
                    delay.served += 1
                    if delay.remaining is not None:
                        delay.remaining -= 1
                        if delay.remaining == 0:
                            self._delays.remove(delay)
                    return delay
        return None

    def wait(self, delay: Delay) -> None:
        """Wait out a delay, or until the server stops."""
        self._stopping.wait(delay.seconds)

    def clear(self) -> None:
        """Switch every delay off (requests already held keep waiting)."""
        with self._lock:
            self._delays.clear()

    def stop(self) -> None:
        """End every wait now: the server is stopping."""
        self._stopping.set()
