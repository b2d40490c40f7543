"""`play`: replay a recording in the terminal with its timing, a speed factor and idle cap.

The timing is a pure function (`schedule`); the loop takes a clock and a key source, so tests
drive it with a fake clock and scripted keys. Keys: space pauses and resumes, q quits.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import IO, Protocol

PAUSE_KEYS = (" ", "p")
QUIT_KEYS = ("q", "\x03")


def schedule(events: Iterable[tuple[float, str]], speed: float = 1.0,
             idle_limit: float | None = None) -> Iterator[tuple[float, str]]:
    """Yield (when to show, text) on the playback clock: gaps capped, then divided by speed."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    previous = 0.0
    shown = 0.0
    for at, text in events:
        gap = max(0.0, at - previous)
        if idle_limit is not None:
            gap = min(gap, idle_limit)
        previous = max(previous, at)
        shown += gap / speed
        yield shown, text


class Clock(Protocol):
    """Where the player gets the time and waits."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""

    def sleep(self, seconds: float) -> None:
        """Wait (used only when no key source is watched)."""


class Keys(Protocol):
    """Where the player reads pause and quit keys."""

    def read(self, timeout: float | None) -> str | None:
        """Return a key pressed within `timeout` seconds (None: wait forever), or None."""


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep."""
        time.sleep(seconds)


class NoKeys:
    """No keyboard (stdin is not a terminal): waiting is plain sleeping."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def read(self, timeout: float | None) -> str | None:
        """Sleep the timeout out; nothing is ever pressed."""
        if timeout is None:
            raise RuntimeError("paused without a keyboard")
        self.clock.sleep(timeout)
        return None


class TerminalKeys:
    """Single key presses from a terminal in cbreak mode."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout: float | None) -> str | None:
        """Wait up to `timeout` for one key."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 1)
        return data.decode(errors="replace") if data else "q"


def cbreak(fd: int) -> AbstractContextManager[None]:
    """Put the terminal in cbreak mode (keys arrive unbuffered, unechoed) while playing."""
    import contextlib
    import termios
    import tty

    @contextlib.contextmanager
    def mode() -> Iterator[None]:
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return mode()


def play(frames: Iterable[tuple[float, str]], write: Callable[[str], None], clock: Clock,
         keys: Keys) -> bool:
    """Show each frame at its time; space pauses, q quits. Return False when quit early."""
    started = clock.now()
    paused_for = 0.0
    for due, text in frames:
        while True:
            wait = started + paused_for + due - clock.now()
            if wait <= 0:
                break
            key = keys.read(wait)
            if key in QUIT_KEYS:
                return False
            if key in PAUSE_KEYS:
                pause_began = clock.now()
                while (key := keys.read(None)) not in (*PAUSE_KEYS, *QUIT_KEYS):
                    pass
                if key in QUIT_KEYS:
                    return False
                paused_for += clock.now() - pause_began
        write(text)
    return True


def play_terminal(frames: Iterable[tuple[float, str]], out: IO[str]) -> bool:
    """Play on the real terminal; keys are read when stdin is one."""
    clock = SystemClock()

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    if sys.stdin.isatty():
        fd = sys.stdin.fileno()
        with cbreak(fd):
            return play(frames, write, clock, TerminalKeys(fd))
    return play(frames, write, clock, NoKeys(clock))
