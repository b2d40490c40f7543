"""Recorded output as it appeared on the screen, line by line, for `search`.

A terminal does not show the bytes a program wrote: `cat /etc/shaxx`, two backspaces and `dow`
show `cat /etc/shadow`. `ScreenText` turns output events into the lines a reader saw, each
with the session time at which it started:

- The fast path: a line made only of text, colours (SGR), window titles, charset selection,
  keypad and DEC private modes (except the alternate screen), `ESC[K` at its end and `\\r\\n`
  looks on the screen exactly as it reads with the escapes removed, so it is handled as before
  (escapes stripped, tabs expanded to 8 columns), a block at a time.
- The emulator: from the first line holding anything else (backspace, a carriage return
  that is not part of `\\r\\n`, cursor movement, erasing, 8-bit controls), the output goes
  through a pyte screen of the recording's size, seeded with the lines already on it. A row
  is taken as a line when a line feed or a cursor movement leaves it (as it showed when the
  command was entered or the output written), and again, if it changed, when it scrolls off
  the top (or out of a scroll region), is erased with the display or deleted, and at the
  end: text erased or overwritten after it was shown is still found. Rows continued by
  auto-wrap are joined to the row they continue.
  After as many consecutive fast-path lines as the screen has rows, every row on the screen
  has scrolled or been written by them, so the screen is emptied into lines and the fast path
  takes over again.
- Before the emulator, `SafeFilter` (tsops.recordings.inert) drops control strings, reports,
  and concealment, with control strings also ended at a newline, so an unterminated one cannot
  hide the rest of a session from search, and pyte's memory stays bounded.

Memory is bounded: the screen (rows x columns, both capped), the last screenful of lines, and
the lines of the batch being read. A text line is the time of the write holding its first
character; an emulated row, the time of the first write that drew on it since it was blank.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any

import pyte
from pyte.screens import Char, StaticDefaultDict

from tsops.recordings.cast import strip_controls
from tsops.recordings.inert import SafeFilter
from tsops.recordings.reader import MAX_PENDING, Lines

DEFAULT_SIZE = (80, 24)
MAX_COLUMNS = 1000
MAX_ROWS = 500

# ESC sequences that change nothing on the screen that stripping them would not (see above).
_ESC_CHANGES_SCREEN = re.compile(
    r"\x1b(?!\[[0-9;:]*m"
    r"|\][^\x07\x1b\n]*(?:\x07|\x1b\\)"
    r"|[()*+][0-9A-Za-z]"
    r"|[=>]"
    r"|\[0?K"
    r"|\[\?(?![0-9;]*?(?<![0-9])(?:47|1047|1049)(?![0-9]))[0-9;]*[hl])"
)
_NOT_ASCII_CONTROL = re.compile(r"[\x80-\x9f]")


def changes_screen(text: str) -> int:
    """Where in `text` (complete lines) a character needs the emulator, or -1.

    C-level checks first (membership, counts), the ESC pattern only when there is an ESC.
    """
    first = len(text)
    for control in ("\x08", "\x0b", "\x0c"):
        found = text.find(control, 0, first)
        if found >= 0:
            first = found
    if text.count("\r") != text.count("\r\n"):
        found = _lone_cr(text)
        if 0 <= found < first:
            first = found
    if "\x1b" in text:
        escape = _ESC_CHANGES_SCREEN.search(text, 0, first)
        if escape is not None:
            first = escape.start()
    if not text.isascii():
        eight_bit = _NOT_ASCII_CONTROL.search(text, 0, first)
        if eight_bit is not None:
            first = eight_bit.start()
    return first if first < len(text) else -1


def _lone_cr(text: str) -> int:
    position = text.find("\r")
    while position >= 0:
        if not text.startswith("\n", position + 1):
            return position
        position = text.find("\r", position + 2)
    return -1


class _Row(StaticDefaultDict[int, Char]):
    """A screen row that knows when it was first drawn, whether it changed, and whether it
    continues the row above (auto-wrap). Rows move with pyte's buffer when it scrolls."""

    def __init__(self, default: Char) -> None:
        super().__init__(default)
        self.time: float | None = None
        self.changed = False
        self.wrapped = False


Emit = Callable[[float, str, bool], None]


class _Screen(pyte.Screen):
    """A pyte screen that hands every changed row to `emit` before it leaves the screen."""

    def __init__(self, columns: int, rows: int, emit: Emit) -> None:
        self.now = 0.0
        self.emit = emit
        self._drawing = False
        self._active = 0  # the row last drawn on or erased
        super().__init__(columns, rows)
        self.buffer = _Buffer(lambda: _Row(self.default_char))

    def row(self, y: int) -> _Row:
        """Row y (created blank when missing)."""
        row = self.buffer[y]
        assert isinstance(row, _Row)
        return row

    def take(self, y: int) -> None:
        """Emit row y if it changed, and forget it."""
        row = self.buffer.get(y)
        if not isinstance(row, _Row) or not row.changed:
            return
        text = "".join(row[x].data for x in range(self.columns)).rstrip()
        self.emit(row.time if row.time is not None else self.now, text, row.wrapped)
        row.changed = False

    def take_all(self) -> None:
        """Emit every changed row, top to bottom."""
        for y in range(self.lines):
            self.take(y)

    def seed(self, lines: list[tuple[float, str]]) -> None:
        """Put lines already emitted on the top rows, unchanged, cursor below them."""
        for y, (time, text) in enumerate(lines):
            self.cursor.x, self.cursor.y = 0, y
            super().draw(text[: self.columns])
            row = self.row(y)
            row.time, row.changed = time, False
        self.cursor.x, self.cursor.y = 0, len(lines)
        self._active = self.cursor.y

    def take_line(self, y: int) -> None:
        """Take row y and the rows it continues (auto-wrap), first to last."""
        first = y
        while first > 0 and getattr(self.buffer.get(first), "wrapped", False):
            first -= 1
        for row_y in range(first, y + 1):
            self.take(row_y)

    def _enter(self) -> None:
        """Before changing the cursor's row: when the cursor moved off the row changed last
        (cursor movement, not a line feed), take that row as it showed."""
        if self.cursor.y != self._active:
            self.take_line(self._active)
            self._active = self.cursor.y

    def _touch(self) -> None:
        self._enter()
        row = self.row(self.cursor.y)
        if row.time is None:
            row.time = self.now
        row.changed = True

    def draw(self, data: str) -> None:
        """Draw, noting the rows drawn on (a wrap notes the new row as a continuation)."""
        self._touch()
        self._drawing = True
        try:
            super().draw(data)
        finally:
            self._drawing = False

    def linefeed(self) -> None:
        """Line feed; inside `draw` it is an auto-wrap."""
        super().linefeed()
        if self._drawing:
            self.row(self.cursor.y).wrapped = True
            self._active = self.cursor.y  # the same line goes on
            self._touch()

    def index(self) -> None:
        """A line feed takes the line it leaves (so that erasing or overwriting it later
        cannot hide what it showed); scrolling up takes the top row of the region first."""
        top, bottom = self.margins or (0, self.lines - 1)
        if not self._drawing:
            self._enter()
            self.take_line(self.cursor.y)
        if self.cursor.y == bottom:
            self.take(top)
        super().index()
        self._active = self.cursor.y

    def reverse_index(self) -> None:
        """Scrolling down takes the bottom row of the region first."""
        top, bottom = self.margins or (0, self.lines - 1)
        if self.cursor.y == top:
            self.take(bottom)
        super().reverse_index()

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        """Erasing the display takes the rows it clears first."""
        if how in (2, 3):
            erased = range(self.lines)
        elif how == 1:
            erased = range(self.cursor.y)
        else:
            erased = range(self.cursor.y + 1, self.lines)
        for y in erased:
            self.take(y)
            self.buffer.pop(y, None)
        super().erase_in_display(how, *args, **kwargs)

    def insert_lines(self, count: int | None = None) -> None:
        """Inserting lines takes the rows pushed past the bottom margin first."""
        top, bottom = self.margins or (0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            for y in range(max(self.cursor.y, bottom - (count or 1) + 1), bottom + 1):
                self.take(y)
        super().insert_lines(count)

    def delete_lines(self, count: int | None = None) -> None:
        """Deleting lines takes them first."""
        top, bottom = self.margins or (0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            for y in range(self.cursor.y, min(self.cursor.y + (count or 1), bottom + 1)):
                self.take(y)
        super().delete_lines(count)

    def _mark_line(self) -> None:
        self._enter()
        self.row(self.cursor.y).changed = True

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        """Erase in line (the row changed)."""
        self._mark_line()
        super().erase_in_line(how, private)

    def delete_characters(self, count: int | None = None) -> None:
        """Delete characters (the row changed)."""
        self._mark_line()
        super().delete_characters(count)

    def erase_characters(self, count: int | None = None) -> None:
        """Erase characters (the row changed)."""
        self._mark_line()
        super().erase_characters(count)

    def insert_characters(self, count: int | None = None) -> None:
        """Insert blanks (the row changed)."""
        self._mark_line()
        super().insert_characters(count)

    def write_process_input(self, data: str) -> None:
        """Never answer: the recording is not a live terminal."""


class _Buffer(dict[int, StaticDefaultDict[int, Char]]):
    """pyte's buffer: rows created on first use (a defaultdict pyte can shift and pop)."""

    def __init__(self, factory: Callable[[], _Row]) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, key: int) -> StaticDefaultDict[int, Char]:
        row = self[key] = self.factory()
        return row


# The last screenful of lines, to seed the emulator: (fast-path Lines, index, text) with the
# time worked out only when needed, or (None, time, text) for a row the emulator gave.
Recent = deque[tuple[Lines | None, float, str]]


class _Collector:
    """Emitted rows become lines; a row continued by auto-wrap joins the one before it."""

    def __init__(self, recent: Recent) -> None:
        self.times: list[float] = []
        self.texts: list[str] = []
        self.recent = recent

    def emit(self, time: float, text: str, wrapped: bool) -> None:
        """One row leaving the screen."""
        if wrapped and self.texts and len(self.texts[-1]) < MAX_PENDING:
            self.texts[-1] += text
            self.recent[-1] = (None, self.times[-1], self.texts[-1])
            return
        self.times.append(time)
        self.texts.append(text)
        self.recent.append((None, time, text))

    def lines(self) -> TimedLines | None:
        """The lines emitted since the last call."""
        if not self.texts:
            return None
        lines = TimedLines(self.texts, self.times)
        self.texts, self.times = [], []
        return lines


class TimedLines:
    """Lines with their times known (the emulator's output); the interface of `Lines`."""

    def __init__(self, texts: list[str], times: list[float]) -> None:
        self.text = "\n".join(texts)
        self.count = len(texts)
        self._times = times

    def time_of(self, index: int) -> float:
        """When line `index` started."""
        return self._times[index]


AnyLines = Lines | TimedLines


class ScreenText:
    """Output events in, screen lines out (see the module's description)."""

    def __init__(self, width: int = 0, height: int = 0) -> None:
        self.columns = min(width, MAX_COLUMNS) if width > 0 else DEFAULT_SIZE[0]
        self.rows = min(height, MAX_ROWS) if height > 0 else DEFAULT_SIZE[1]
        self._pending: list[str] = []  # the fast path's incomplete line
        self._pending_len = 0
        self._pending_time: float | None = None
        self._recent: Recent = deque(maxlen=self.rows)
        self._collector = _Collector(self._recent)
        self._screen: _Screen | None = None  # set while the emulator has the output
        self._stream: pyte.Stream | None = None
        self._filter = SafeFilter(strings_end_at_newline=True)
        self._clean_lines = 0
        self.emulated_chars = 0  # how much text went through the emulator (for the benchmark)

    # -- input -----------------------------------------------------------------------------

    def feed(self, events: list[tuple[float, str]]) -> list[AnyLines]:
        """Take a batch of events; return the lines they complete, in order."""
        out: list[AnyLines] = []
        queue = events
        while queue:
            if self._screen is None:
                queue = self._fast(queue, out)
                continue
            for index, (time, text) in enumerate(queue):
                rest = self._emulate(time, text)
                if rest is not None:
                    self._drain(out)
                    queue = [(time, rest), *queue[index + 1:]] if rest else queue[index + 1:]
                    break
            else:
                queue = []
        self._drain(out)
        return out

    def finish(self) -> list[AnyLines]:
        """The lines still on the screen, or the last incomplete line."""
        out: list[AnyLines] = []
        if self._screen is not None:
            self._screen.take_all()
            self._screen = self._stream = None
        elif self._pending_len:
            text = strip_controls("".join(self._pending))
            time = self._pending_time or 0.0
            self._pending, self._pending_len = [], 0
            out.append(Lines(_expand(text), text, [], 0, time))
        self._drain(out)
        return out

    # -- the fast path -----------------------------------------------------------------------

    def _fast(self, events: list[tuple[float, str]],
              out: list[AnyLines]) -> list[tuple[float, str]]:
        """Lines through the fast path; returns the events from the first line that needs the
        emulator on (empty when none does)."""
        raw = "".join([text for _, text in events])
        if self._pending_time is None and events:
            self._pending_time = events[0][0]
        prefix = "".join(self._pending)
        cut = raw.rfind("\n")
        complete = prefix + raw[: cut + 1] if cut >= 0 else ""
        first = changes_screen(complete) if complete else -1
        if first < 0 and cut < 0:
            if self._pending_len + len(raw) <= MAX_PENDING:
                self._pending.append(raw)
                self._pending_len += len(raw)
                return []
            cut = len(raw) - 1  # an overlong line is cut into a line anyway
            complete = prefix + raw
            first = changes_screen(complete + "\n")
        head_time = self._pending_time if self._pending_time is not None else 0.0
        if first < 0:
            lines = self._lines(complete, events, len(prefix), head_time, out)
            rest = raw[cut + 1:]
            self._pending = [rest] if rest else []
            self._pending_len = len(rest)
            self._pending_time = lines.time_of_offset(len(complete)) if rest else None
            return []
        start = complete.rfind("\n", 0, first) + 1  # the line that needs the emulator
        if start:
            self._lines(complete[:start], events, len(prefix), head_time, out)
        # From `start` on, the emulator: the pending text first (with its time), then events.
        if start < len(prefix):
            queue = [(head_time, prefix[start:]), *events]
        else:
            skip = start - len(prefix)
            queue = []
            for time, text in events:
                if skip >= len(text):
                    skip -= len(text)
                    continue
                queue.append((time, text[skip:]))
                skip = 0
        self._pending, self._pending_len, self._pending_time = [], 0, None
        self._start_emulator(queue[0][0] if queue else head_time)
        return queue

    def _lines(self, complete: str, events: list[tuple[float, str]], prefix: int,
               head_time: float, out: list[AnyLines]) -> Lines:
        body = complete[:-1] if complete.endswith("\n") else complete
        lines = Lines(_expand(strip_controls(body)), complete, events, prefix, head_time)
        if lines.count:
            out.append(lines)
            tail = lines.text.rsplit("\n", self.rows)[-self.rows:]
            for offset, text in enumerate(tail):
                self._recent.append((lines, lines.count - len(tail) + offset, text))
        return lines

    # -- the emulator --------------------------------------------------------------------------

    def _start_emulator(self, now: float) -> None:
        recent = self._recent_lines()
        self._screen = _Screen(self.columns, self.rows, self._collector.emit)
        self._screen.now = now
        self._screen.seed(recent[-(self.rows - 1):] if self.rows > 1 else [])
        self._stream = pyte.Stream(self._screen)
        self._filter = SafeFilter(strings_end_at_newline=True)
        self._clean_lines = 0

    def _recent_lines(self) -> list[tuple[float, str]]:
        """The last screenful of lines, from the fast path and the emulator, in order."""
        recent = [(lines.time_of(int(at)) if lines is not None else at, text)
                  for lines, at, text in self._recent]
        self._recent.clear()
        return recent

    def _emulate(self, time: float, text: str) -> str | None:
        """Feed one event to the screen; once the screen holds only fast-path lines, empty it
        and return the text after the last newline (for the fast path), else None."""
        assert self._screen is not None and self._stream is not None
        self._screen.now = time
        clean, dirty = _clean_lines_at_end(text, self.rows)
        self._clean_lines = clean if dirty else self._clean_lines + clean
        if self._clean_lines >= self.rows:
            cut = text.rfind("\n") + 1
            self._feed_screen(text[:cut])
            self._screen.take_all()
            self._screen = self._stream = None
            return text[cut:]
        self._feed_screen(text)
        return None

    def _feed_screen(self, text: str) -> None:
        assert self._stream is not None
        safe = self._filter.feed(text)
        self.emulated_chars += len(text)
        if safe:
            self._stream.feed(safe)

    def _drain(self, out: list[AnyLines]) -> None:
        lines = self._collector.lines()
        if lines is not None:
            out.append(lines)


def _clean_lines_at_end(text: str, enough: int) -> tuple[int, bool]:
    """How many newlines of `text` come after the last character that needs the emulator
    (counting stops at `enough`), and whether there is such a character."""
    end = len(text)
    count = 0
    while count < enough:
        newline = text.rfind("\n", 0, end)
        if changes_screen(text[newline + 1:end] + "\n") >= 0:
            return count, True
        if newline < 0:
            return count, False
        count += 1
        end = newline
    return count, True


def _expand(text: str) -> str:
    """Tabs as the screen shows them (8 columns; the column restarts at each newline)."""
    return text.expandtabs(8) if "\t" in text else text
