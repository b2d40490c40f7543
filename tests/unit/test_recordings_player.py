"""The player: timing as a pure schedule, and the loop driven by a fake clock and fake keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tsops.recordings.player import NoKeys, play, schedule


class FakeClock:
    """A clock that moves only when the player waits."""

    def __init__(self) -> None:
        self.time = 100.0

    def now(self) -> float:
        """The fake time."""
        return self.time

    def sleep(self, seconds: float) -> None:
        """Advance the fake time."""
        self.time += seconds


class ScriptedKeys:
    """Keys pressed at given fake times; waiting advances the clock."""

    def __init__(self, clock: FakeClock, presses: list[tuple[float, str]]) -> None:
        self.clock = clock
        self.presses = sorted(presses)

    def read(self, timeout: float | None) -> str | None:
        """Return the next key due within the timeout, moving the clock to it."""
        if self.presses and (timeout is None or self.presses[0][0] <= self.clock.time + timeout):
            when, key = self.presses.pop(0)
            self.clock.time = max(self.clock.time, when)
            return key
        if timeout is None:
            raise AssertionError("paused forever: the script has no key left")
        self.clock.time += timeout
        return None


EVENTS = [(0.5, "a"), (1.0, "b"), (31.0, "c"), (31.0, "d"), (32.5, "e")]


def test_schedule_keeps_recorded_timing() -> None:
    assert list(schedule(EVENTS)) == EVENTS


def test_schedule_divides_by_speed_and_caps_idle_gaps() -> None:
    assert list(schedule(EVENTS, speed=2.0)) == [
        (0.25, "a"), (0.5, "b"), (15.5, "c"), (15.5, "d"), (16.25, "e")]
    assert list(schedule(EVENTS, idle_limit=2.0)) == [
        (0.5, "a"), (1.0, "b"), (3.0, "c"), (3.0, "d"), (4.5, "e")]
    assert list(schedule(EVENTS, speed=2.0, idle_limit=2.0))[-1] == (2.25, "e")


def test_schedule_tolerates_time_going_backwards_and_refuses_bad_speed() -> None:
    assert list(schedule([(2.0, "a"), (1.0, "b"), (3.0, "c")])) == [
        (2.0, "a"), (2.0, "b"), (3.0, "c")]
    with pytest.raises(ValueError, match="speed"):
        list(schedule(EVENTS, speed=0))


def record(clock: FakeClock, frames: Iterator[tuple[float, str]] | list[tuple[float, str]],
           keys: ScriptedKeys | NoKeys) -> tuple[list[tuple[float, str]], bool]:
    """Play and note the fake time (relative to the start) of each write."""
    start = clock.time
    written: list[tuple[float, str]] = []
    finished = play(frames, lambda text: written.append((round(clock.time - start, 6), text)),
                    clock, keys)
    return written, finished


def test_play_writes_each_frame_at_its_time() -> None:
    clock = FakeClock()
    written, finished = record(clock, list(schedule(EVENTS, idle_limit=2.0)), NoKeys(clock))
    assert finished
    assert written == [(0.5, "a"), (1.0, "b"), (3.0, "c"), (3.0, "d"), (4.5, "e")]


def test_pause_shifts_the_rest_and_quit_stops() -> None:
    clock = FakeClock()
    keys = ScriptedKeys(clock, [(100.7, " "), (110.7, " "), (114.0, "q")])
    written, finished = record(clock, EVENTS, keys)
    assert not finished
    assert written == [(0.5, "a"), (11.0, "b")]


def test_quit_while_paused() -> None:
    clock = FakeClock()
    keys = ScriptedKeys(clock, [(100.2, "p"), (105.0, "q")])
    written, finished = record(clock, EVENTS, keys)
    assert (written, finished) == ([], False)


def test_other_keys_are_ignored() -> None:
    clock = FakeClock()
    keys = ScriptedKeys(clock, [(100.2, "x"), (100.9, "\n")])
    written, finished = record(clock, EVENTS[:2], keys)
    assert finished and written == [(0.5, "a"), (1.0, "b")]
