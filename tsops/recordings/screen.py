"""Recorded output as it appeared on the screen, line by line, for `search`.

A terminal does not show the bytes a program wrote: `cat /etc/shaxx`, two backspaces and `dow`
show `cat /etc/shadow`. `ScreenText` turns output events into the lines a reader saw, each
with the session time at which it started:

- The fast path: a line made only of text, colours (SGR), window titles, charset selection,
  keypad and DEC private modes (except the alternate screen), `ESC[K` at its end and `\\r\\n`
  looks on the screen exactly as it reads with the escapes removed, so it is handled as before
  (escapes stripped, tabs expanded to 8 columns), a block at a time.
- The line model: a line that also holds backspaces, carriage returns and erase-to-end
  (typing corrections, progress bars), and never reaches the last column, is rendered with
  a few string operations (`_render_line`), as the emulator would render it.
- The emulator: from the first line holding anything else (cursor movement across rows,
  erasing the display or whole lines, scroll regions, 8-bit controls), the output goes
  through a pyte screen of the recording's size, seeded with the lines already on it. A row
  is taken as a line when a line feed or a cursor movement leaves it (as it showed when the
  command was entered or the output written), and again, if it changed, when it scrolls off
  the top (or out of a scroll region), is erased with the display or deleted, and at the
  end: text erased or overwritten after it was shown is still found. Rows continued by
  auto-wrap are joined to the row they continue. At the first line feed after which the
  screen is what seeding would rebuild from the lines emitted (or after a screenful of
  plain lines), the fast path takes over again; the screen is kept, and the next start of
  the emulator only scrolls in the lines given since.
- The row model (`_Model`): the emulator's screen starts as a model of pyte's screen for what
  full-screen programs send most (text, CR, LF, BS, tab, cursor movement and positioning,
  erase in line and display, auto-wrap, colours, modes without effect on the text): each
  row a string, one regular expression match per sequence, rows taken exactly as the
  emulator takes them. pyte reads one character at a time through a Python parser, about six
  times slower. At the first thing the model does not cover (non-ASCII, scroll regions,
  inserting or deleting lines or characters, saved cursors, reverse index, auto-wrap off, a
  sequence split across writes) it hands its screen over to pyte, which goes on from there
  until the fast path takes over again. A differential unit test checks
  the model against pyte alone on generated sessions.
- Before the emulator, `SafeFilter` (tsops.recordings.inert) drops control strings, reports,
  and concealment, with control strings also ended at a carriage return or newline, so an
  unterminated one cannot hide the rest of a session from search, and pyte's memory stays
  bounded.

Memory is bounded: the screen (rows x columns, both capped), the last screenful of lines, and
the lines of the batch being read. A text line is the time of the write holding its first
character; an emulated row, the time of the first write that drew on it since it was blank.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import deque
from collections.abc import Callable
from itertools import accumulate
from operator import itemgetter
from typing import Any

import pyte
from pyte.charsets import LAT1_MAP
from pyte.modes import IRM
from pyte.screens import Char, StaticDefaultDict

from tsops.recordings.cast import strip_controls
from tsops.recordings.inert import SafeFilter
from tsops.recordings.reader import MAX_PENDING, Lines

_TEXT = itemgetter(1)
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
_LONE_CR = re.compile(r"\r(?!\n)")
# A write that changes only the cursor's row: text, backspace, erase in line, colours.
_IN_ROW = re.compile(r"(?:[^\x00-\x1f\x7f-\x9f]|\x08|\x1b\[[0-2]?K|\x1b\[[0-9;]*m)*")


def changes_screen(text: str, start: int = 0, end: int | None = None) -> int:
    """Where in text[start:end] (complete lines) a character needs the emulator, or -1.

    C-level checks first (find, count), the patterns only when there is an ESC or a character
    beyond ASCII.
    """
    end = len(text) if end is None else end
    first = end
    for control in ("\x08", "\x0b", "\x0c"):
        found = text.find(control, start, first)
        if found >= 0:
            first = found
    lone_cr = _LONE_CR.search(text, start, first)  # a literal first: fast as a find
    if lone_cr is not None:
        first = lone_cr.start()
    if text.find("\x1b", start, first) >= 0:
        escape = _ESC_CHANGES_SCREEN.search(text, start, first)
        if escape is not None:
            first = escape.start()
    if not (text.isascii() if start == 0 and end == len(text) else
            text[start:first].isascii()):
        eight_bit = _NOT_ASCII_CONTROL.search(text, start, first)
        if eight_bit is not None:
            first = eight_bit.start()
    return first if first < end else -1


_CELLS: dict[str, Char] = {}
_ROWS: dict[tuple[str, int], dict[int, Char]] = {}


# Default-styled cells of printable ASCII, and the characters that have one: rows made of
# these are built by C-level dict and map calls (search reads the characters, not styles).
_ASCII_CELLS = {chr(code): Char(chr(code)) for code in range(0x20, 0x7F)}
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _cell(blank: Char) -> Callable[[str], Char]:
    """A function giving the default-styled cell of a character (cached)."""
    def cell(char: str) -> Char:
        found = _CELLS.get(char)
        if found is None:
            if len(_CELLS) > 4096:  # bounded, whatever characters a recording holds
                _CELLS.clear()
            found = _CELLS[char] = blank._replace(data=char)
        return found

    return cell


class _Row(StaticDefaultDict[int, Char]):
    """A screen row that knows when it was first drawn, whether it changed, and whether it
    continues the row above (auto-wrap). Rows move with pyte's buffer when it scrolls."""

    def __init__(self, default: Char) -> None:
        super().__init__(default)
        self.time: float | None = None
        self.changed = False
        self.wrapped = False
        self.taken = False  # emitted (or seeded) at least once
        self.text: str | None = None  # its text when taken or seeded (valid while unchanged)


Emit = Callable[[float, str, bool], None]


class _Screen(pyte.Screen):
    """A pyte screen that hands every changed row to `emit` before it leaves the screen."""

    def __init__(self, columns: int, rows: int, emit: Emit) -> None:
        self.now = 0.0
        self.emit = emit
        self._drawing = False
        self._active = 0  # the row last drawn on or erased
        super().__init__(columns, rows)
        self.buffer = _Buffer(functools.partial(_Row, self.default_char))  # no cycle via self

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
        text = self.text_of(y)
        self.emit(row.time if row.time is not None else self.now, text, row.wrapped)
        row.changed = False
        row.taken = True
        row.text = text

    def changed_rows(self) -> bool:
        """Whether a row changed since it was last taken (it would have to be taken first)."""
        return any(getattr(row, "changed", False) for row in self.buffer.values())

    def take_all(self) -> None:
        """Emit every changed row, top to bottom."""
        for y in range(self.lines):
            self.take(y)

    def seed(self, rows: list[tuple[float, str, bool]]) -> None:
        """Put rows already emitted (time, text, continues the row above) on the top rows,
        unchanged, the cursor below them."""
        self._fill(0, rows)
        self.cursor.x, self.cursor.y = 0, len(rows)
        self._active = self.cursor.y

    def _fill(self, first: int, rows: list[tuple[float, str, bool]]) -> None:
        for y, (time, text, wrapped) in enumerate(rows, first):
            row = self.row(y)
            # cells filled directly (drawing them through pyte costs 40 times more)
            row.update(self._cells(text))
            row.time, row.changed, row.taken, row.wrapped = time, False, True, wrapped
            row.text = text

    def _cells(self, text: str) -> dict[int, Char]:
        """The cells of a row showing `text`, from a small cache (the same recent lines are
        seeded again at each start of the emulator); the cells are immutable tuples."""
        key = (text, self.columns)
        cells = _ROWS.get(key)
        if cells is None:
            if len(_ROWS) > 256:
                _ROWS.clear()
            shown = text[:self.columns]
            if _PRINTABLE_ASCII.fullmatch(shown) and not self.default_char.reverse:
                cells = dict(enumerate(map(_ASCII_CELLS.__getitem__, shown)))
            else:
                cells = dict(enumerate(map(_cell(self.default_char), shown)))
            _ROWS[key] = cells
        return cells

    def scroll_in(self, cursor_row: int, rows: list[tuple[float, str, bool]]) -> None:
        """Rows the fast path gave after this screen settled with the cursor at the start of
        `cursor_row`: written from there down, scrolling the screen up as a terminal does."""
        overflow = max(0, cursor_row + len(rows) - (self.lines - 1))
        if overflow:
            kept = {y - overflow: row for y, row in self.buffer.items() if y >= overflow}
            self.buffer.clear()
            self.buffer.update(kept)
        first = cursor_row - overflow
        for y in range(first, first + len(rows)):
            self.buffer.pop(y, None)
        self._fill(first, rows)
        self.cursor.x, self.cursor.y = 0, first + len(rows)
        self._active = self.cursor.y

    def text_of(self, y: int) -> str:
        """Row y as it shows, blanks at its end removed."""
        row = self.buffer.get(y)
        if not row:
            return ""
        return "".join([row[x].data for x in range(min(max(row) + 1, self.columns))]).rstrip()

    def settled(self, expected: list[str]) -> bool:
        """Whether seeding a new screen with `expected` (the last rows emitted) would give
        this screen again: cursor at the start of a row, no scroll region, the rows above the
        cursor equal to `expected`'s last ones, the rows from the cursor down blank."""
        y = self.cursor.y
        if self.cursor.x or self.margins is not None or len(expected) < y:
            return False
        if any(self.text_of(below) for below in range(y, self.lines)):
            return False
        return all(self._known_text(row) == text
                   for row, text in enumerate(expected[len(expected) - y:]))

    def _known_text(self, y: int) -> str:
        row = self.buffer.get(y)
        if isinstance(row, _Row) and not row.changed and row.text is not None:
            return row.text
        return self.text_of(y)

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
        """Draw, noting the rows drawn on (a wrap notes the new row as a continuation).

        Printable ASCII that fits in the row, in replace mode and the default character set,
        is written directly (what pyte would write, less the colours, which search does not
        read), about 20 times faster than pyte's character loop.
        """
        self._touch()
        x = self.cursor.x
        if (x + len(data) <= self.columns and x < self.columns and not self.charset
                and self.g0_charset is LAT1_MAP and IRM not in self.mode
                and _PRINTABLE_ASCII.fullmatch(data)):
            self.buffer[self.cursor.y].update(
                zip(range(x, x + len(data)), map(_ASCII_CELLS.__getitem__, data), strict=True))
            self.cursor.x = x + len(data)
            return
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
            row = self.row(self.cursor.y)
            if not row.taken:  # a line feed on a row never written: an empty line
                self.emit(self.now, "", False)
                row.taken = True
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
        """Erasing the display takes the rows it clears first (an unknown kind is ignored,
        as terminals do; pyte would fail)."""
        if how not in (0, 1, 2, 3):
            return
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

    def insert_lines(self, count: int | None = None, *_extra: int) -> None:
        """Inserting lines takes the rows pushed past the bottom margin first."""
        top, bottom = self.margins or (0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            for y in range(max(self.cursor.y, bottom - (count or 1) + 1), bottom + 1):
                self.take(y)
        super().insert_lines(count)

    def delete_lines(self, count: int | None = None, *_extra: int) -> None:
        """Deleting lines takes them first."""
        top, bottom = self.margins or (0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            for y in range(self.cursor.y, min(self.cursor.y + (count or 1), bottom + 1)):
                self.take(y)
        super().delete_lines(count)

    def _mark_line(self) -> None:
        self._enter()
        self.row(self.cursor.y).changed = True

    def erase_in_line(self, how: int = 0, private: bool = False, *_extra: int) -> None:
        """Erase in line (the row changed); an unknown kind is ignored."""
        if how not in (0, 1, 2):
            return
        self._mark_line()
        super().erase_in_line(how, private)

    def delete_characters(self, count: int | None = None, *_extra: int) -> None:
        """Delete characters (the row changed)."""
        self._mark_line()
        super().delete_characters(count)

    def erase_characters(self, count: int | None = None, *_extra: int) -> None:
        """Erase characters (the row changed)."""
        self._mark_line()
        super().erase_characters(count)

    def insert_characters(self, count: int | None = None, *_extra: int) -> None:
        """Insert blanks (the row changed)."""
        self._mark_line()
        super().insert_characters(count)

    # Parameters beyond those a sequence takes are ignored, as terminals do (pyte would fail
    # on them, and a recording is whatever its author wrote).
    def cursor_up(self, count: int | None = None, *_extra: int) -> None:
        """Cursor up."""
        super().cursor_up(count)

    def cursor_down(self, count: int | None = None, *_extra: int) -> None:
        """Cursor down."""
        super().cursor_down(count)

    def cursor_forward(self, count: int | None = None, *_extra: int) -> None:
        """Cursor forward."""
        super().cursor_forward(count)

    def cursor_back(self, count: int | None = None, *_extra: int) -> None:
        """Cursor back."""
        super().cursor_back(count)

    def cursor_down1(self, count: int | None = None, *_extra: int) -> None:
        """Cursor to the start of a row below."""
        super().cursor_down1(count)

    def cursor_up1(self, count: int | None = None, *_extra: int) -> None:
        """Cursor to the start of a row above."""
        super().cursor_up1(count)

    def cursor_to_column(self, column: int | None = None, *_extra: int) -> None:
        """Cursor to a column."""
        super().cursor_to_column(column)

    def cursor_to_line(self, line: int | None = None, *_extra: int) -> None:
        """Cursor to a row."""
        super().cursor_to_line(line)

    def cursor_position(self, line: int | None = None, column: int | None = None,
                        *_extra: int) -> None:
        """Cursor to a row and column."""
        super().cursor_position(line, column)

    def set_margins(self, top: int | None = None, bottom: int | None = None,
                    *_extra: int) -> None:
        """Scroll region."""
        super().set_margins(top, bottom)

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


# --- the row model: pyte's behaviour for the sequences full-screen programs use most --------

# What the row model reads, one token per match: printable ASCII (1), with the erase to the
# end of the row that usually follows it (2); a C0 control or DEL (3); a CSI with numeric
# parameters (4: "?" or not, 5: parameters, 6: final); a sequence that SafeFilter drops and
# pyte would never see (7): a terminated OSC of printable ASCII, a
# charset designation (pyte ignores those in UTF-8 mode), any ESC final SafeFilter drops.
_DROPPED_ESC_FINALS = "".join(
    chr(code) for code in range(0x30, 0x7F) if chr(code) not in "78DEMPX[]^_")
_MODEL_TOKEN = re.compile(
    r"([\x20-\x7e]+)(\x1b\[0?K)?"
    r"|([\x00-\x1a\x1c-\x1f\x7f])"
    r"|\x1b\[(\??)([0-9;]{0,200})([\x40-\x7e])"
    r"|(\x1b(?:\][\x20-\x7e]*(?:\x07|\x1b\\)|[()*+][\x30-\x7e]|["
    + re.escape(_DROPPED_ESC_FINALS) + r"]))"
)
# CSI finals SafeFilter passes (tsops.recordings.inert) that the row model handles itself;
# of the others it passes (scroll regions, inserting and deleting lines or characters), the
# row model hands over to pyte; the rest SafeFilter drops.
_MODEL_CSI = frozenset("ABCDEFGHJKSTadefm`")
_FILTER_PASSES_CSI = frozenset("ABCDEFGHJKLMPSTX@`adefm")
_FILTER_PASSES_MODES = frozenset(("25", "47", "1047", "1049", "2004", "7"))


_NUMBERS: dict[str, tuple[int, ...]] = {}


def _numbers(parameters: str) -> tuple[int, ...]:
    """A CSI's parameters as pyte reads them (empty as 0, at most 9999), from a small cache."""
    numbers = tuple(min(int(number or 0), 9999) for number in parameters.split(";"))
    if len(_NUMBERS) > 4096:
        _NUMBERS.clear()
    _NUMBERS[parameters] = numbers
    return numbers


class _ModelRow:
    """A row of the row model: its characters (one per cell), and what `_Row` knows."""

    __slots__ = ("cells", "changed", "taken", "text", "time", "wrapped")

    def __init__(self, cells: str = "", time: float | None = None, taken: bool = False,
                 wrapped: bool = False, text: str | None = None) -> None:
        self.cells = cells
        self.time = time
        self.changed = False
        self.taken = taken
        self.wrapped = wrapped
        self.text = text


class _Cursor:
    __slots__ = ("x", "y")

    def __init__(self) -> None:
        self.x = 0
        self.y = 0


class _Model:
    """The screen as `_Screen` keeps it, for the sequences that full-screen programs send most
    (text with auto-wrap, CR, LF, BS, tab, cursor movement and positioning, erase in line
    and display, colours and modes without effect on the text), as string operations on
    whole rows and one regular expression match per sequence, instead of pyte's parser,
    which reads one character at a time. `feed` stops at the first thing it does not model
    (non-ASCII text, scroll regions, inserting or deleting, saved cursors, reverse index,
    auto-wrap off, a sequence split across events) and returns the rest: `hand_over` then
    puts the screen into pyte, which goes on from there. Rows are taken exactly as `_Screen`
    takes them; the unit tests compare both on generated sessions."""

    margins = None  # the row model never has a scroll region

    def __init__(self, columns: int, lines: int, emit: Emit) -> None:
        self.columns = columns
        self.lines = lines
        self.emit = emit
        self.now = 0.0
        self.cursor = _Cursor()
        # None where pyte's buffer has no row (which some of its operations tell apart from a
        # blank row: the row model keeps them apart too, to hand over exactly)
        self.rows: list[_ModelRow | None] = [None] * lines
        self._active = 0

    def reset(self) -> None:
        """A blank screen, the cursor at the top left."""
        self.rows = [None] * self.lines
        self.cursor.x = self.cursor.y = 0

    # -- as _Screen ----------------------------------------------------------------------------

    def take(self, y: int) -> None:
        """Emit row y if it changed, and forget it."""
        row = self.rows[y]
        if row is None or not row.changed:
            return
        text = row.cells.rstrip()
        self.emit(row.time if row.time is not None else self.now, text, row.wrapped)
        row.changed = False
        row.taken = True
        row.text = text

    def take_line(self, y: int) -> None:
        """Take row y and the rows it continues (auto-wrap), first to last."""
        first = y
        rows = self.rows
        while first > 0 and (row := rows[first]) is not None and row.wrapped:
            first -= 1
        for row_y in range(first, y + 1):
            self.take(row_y)

    def take_all(self) -> None:
        """Emit every changed row, top to bottom."""
        for y in range(self.lines):
            self.take(y)

    def changed_rows(self) -> bool:
        """Whether a row changed since it was last taken."""
        return any(row is not None and row.changed for row in self.rows)

    def text_of(self, y: int) -> str:
        """Row y as it shows, blanks at its end removed."""
        row = self.rows[y]
        return "" if row is None else row.cells.rstrip()

    def settled(self, expected: list[str]) -> bool:
        """As `_Screen.settled`."""
        y = self.cursor.y
        if self.cursor.x or len(expected) < y:
            return False
        if any(self.text_of(below) for below in range(y, self.lines)):
            return False
        return all(self._known_text(row) == text
                   for row, text in enumerate(expected[len(expected) - y:]))

    def _known_text(self, y: int) -> str:
        row = self.rows[y]
        if row is not None and not row.changed and row.text is not None:
            return row.text
        return self.text_of(y)

    def seed(self, rows: list[tuple[float, str, bool]]) -> None:
        """As `_Screen.seed`."""
        self._fill(0, rows)
        self.cursor.x, self.cursor.y = 0, len(rows)
        self._active = self.cursor.y

    def _fill(self, first: int, rows: list[tuple[float, str, bool]]) -> None:
        for y, (time, text, wrapped) in enumerate(rows, first):
            if y >= 0:  # (_Screen keeps a row above the top, where nothing reads it)
                self.rows[y] = _ModelRow(text[:self.columns], time, True, wrapped, text)

    def scroll_in(self, cursor_row: int, rows: list[tuple[float, str, bool]]) -> None:
        """As `_Screen.scroll_in`."""
        overflow = max(0, cursor_row + len(rows) - (self.lines - 1))
        if overflow:
            del self.rows[:overflow]
            self.rows.extend([None] * overflow)
        first = cursor_row - overflow
        for y in range(max(first, 0), first + len(rows)):
            self.rows[y] = None
        self._fill(first, rows)
        self.cursor.x, self.cursor.y = 0, first + len(rows)
        self._active = self.cursor.y

    def hand_over(self, screen: _Screen) -> None:
        """Put this screen into a pyte screen (reset first), to go on from there."""
        screen.reset()
        screen.now = self.now
        for y, row in enumerate(self.rows):
            if row is not None:
                target = screen.row(y)
                target.update(screen._cells(row.cells))
                target.time, target.changed, target.taken = row.time, row.changed, row.taken
                target.wrapped, target.text = row.wrapped, row.text
        screen.cursor.x, screen.cursor.y = self.cursor.x, self.cursor.y
        screen._active = self._active

    # -- the sequences ---------------------------------------------------------------------

    def _row(self, y: int) -> _ModelRow:
        row = self.rows[y]
        if row is None:
            row = self.rows[y] = _ModelRow()
        return row

    def _enter(self, y: int) -> None:
        if y != self._active:
            self.take_line(self._active)
            self._active = y

    def feed(self, text: str) -> str | None:
        """Apply `text` (SafeFilter not applied: the row model reads only what it passes
        unchanged or drops whole); return the rest from the first thing not modelled, or
        None."""
        columns, bottom = self.columns, self.lines - 1
        rows = self.rows
        cursor = self.cursor
        x, y = cursor.x, cursor.y
        position, size = 0, len(text)
        for token in _MODEL_TOKEN.finditer(text):
            if token.start() != position:  # something not modelled
                break
            kind = token.lastindex
            if kind is not None and kind <= 2:  # text, and perhaps erase to the end
                data = token.group(1)
                if y != self._active:
                    self._leave(y)
                row = rows[y]
                if row is None:
                    row = rows[y] = _ModelRow()
                if row.time is None:
                    row.time = self.now
                row.changed = True
                while True:
                    if x == columns:  # past the last column: auto-wrap, as pyte does
                        cursor.y = y
                        row = self._wrap()
                        y, x = cursor.y, 0
                    end = x + len(data)
                    cells = row.cells
                    if len(cells) < x:
                        cells += " " * (x - len(cells))
                    if end <= columns:
                        row.cells = cells[:x] + data + cells[end:]
                        x = end
                        break
                    row.cells = cells[:x] + data[:columns - x]
                    data = data[columns - x:]
                    x = columns
                if kind == 2:  # ESC[K right after: the row changed already, the cursor on it
                    row.cells = row.cells[:x]
            elif kind == 6:  # CSI
                _, _, _, private, parameters, final, _ = token.groups()
                if private:  # modes, of which only auto-wrap changes the text
                    if final in "hl":
                        modes = parameters.split(";")
                        if "7" in modes and _FILTER_PASSES_MODES.issuperset(modes):
                            break
                elif final in _MODEL_CSI:
                    if final == "m" or final in "ST`":  # pyte has no S, T, `
                        position = token.end()
                        continue
                    numbers = _NUMBERS.get(parameters)
                    if numbers is None:
                        numbers = _numbers(parameters)
                    first = numbers[0]
                    if final == "H" or final == "f":
                        if len(numbers) > 2:
                            break
                        y = first - 1 if first else 0
                        if y > bottom:
                            y = bottom
                        x = numbers[1] - 1 if len(numbers) > 1 and numbers[1] else 0
                        if x >= columns:
                            x = columns - 1
                    elif final == "K":
                        if len(numbers) > 1 or first > 2:
                            break
                        if y != self._active:
                            self._leave(y)
                        row = rows[y]
                        if row is None:
                            row = rows[y] = _ModelRow()
                        row.changed = True
                        if first == 0:
                            row.cells = row.cells[:x]
                        elif first == 1:
                            row.cells = " " * (x + 1) + row.cells[x + 1:]
                        else:
                            row.cells = ""
                    elif final == "J":
                        if parameters != "3":  # (SafeFilter drops "erase scrollback")
                            if first > 3:
                                break
                            cursor.x, cursor.y = x, y
                            self._erase_in_display(first)
                            rows = self.rows
                    elif len(numbers) > 1:
                        break
                    else:
                        count = first or 1
                        if final == "A":
                            y = y - count if y > count else 0
                        elif final == "B" or final == "e":
                            y = y + count if y + count < bottom else bottom
                        elif final == "C" or final == "a":
                            x = x + count if x + count < columns else columns - 1
                        elif final == "D":
                            if x == columns:
                                x -= 1
                            x = x - count if x > count else 0
                        elif final == "E":
                            y, x = (y + count if y + count < bottom else bottom), 0
                        elif final == "F":
                            y, x = (y - count if y > count else 0), 0
                        elif final == "G":
                            x = first - 1 if first else 0
                            if x >= columns:
                                x = columns - 1
                        else:  # d
                            y = first - 1 if first else 0
                            if y > bottom:
                                y = bottom
                elif final in _FILTER_PASSES_CSI or final == "r":
                    break  # scroll regions, inserting and deleting: pyte's
                # any other CSI: SafeFilter drops it
            elif kind == 3:  # a C0 control: SafeFilter passes these four, drops the rest
                char = token.group(3)
                if char == "\r":
                    x = 0
                elif char == "\n":
                    cursor.x, cursor.y = x, y
                    self._index()
                    rows = self.rows
                    y = cursor.y
                elif char == "\b":
                    if x == columns:  # (after the last column, as pyte)
                        x -= 1
                    if x:
                        x -= 1
                elif char == "\t":
                    stop = (x // 8 + 1) * 8
                    x = stop if stop < columns else columns - 1
            # else a sequence SafeFilter drops whole
            position = token.end()
        cursor.x, cursor.y = x, y
        return None if position >= size else text[position:]

    def _wrap(self) -> _ModelRow:
        """Auto-wrap: the next row (the screen scrolled up at the bottom), as continuing the
        cursor's row (as `_Screen.index` and `linefeed` inside `draw`)."""
        y = self.cursor.y
        rows = self.rows
        if y == self.lines - 1:
            self.take(0)
            self._scroll()
        else:
            y += 1
        self.cursor.y = self._active = y
        row = rows[y]
        if row is None:
            row = rows[y] = _ModelRow()
        row.wrapped = True
        if row.time is None:
            row.time = self.now
        row.changed = True
        return row

    def _scroll(self) -> None:
        """Every row up by one, a blank one at the bottom (after pyte's `index`, which makes
        every row it moves)."""
        rows = self.rows
        del rows[0]
        rows.append(None)
        for y in range(self.lines - 1):
            if rows[y] is None:
                rows[y] = _ModelRow()

    def _leave(self, y: int) -> None:
        """The cursor's row becomes y: the row changed last is taken (as `_Screen._enter`)."""
        active = self.rows[self._active]
        if active is not None:
            if active.wrapped:
                self.take_line(self._active)
            elif active.changed:  # self.take(self._active), inline
                text = active.cells.rstrip()
                self.emit(active.time if active.time is not None else self.now, text, False)
                active.changed = False
                active.taken = True
                active.text = text
        self._active = y

    def _index(self) -> None:
        """A line feed, as `_Screen.index` (no scroll region, not inside a draw)."""
        y = self.cursor.y
        self._enter(y)
        self.take_line(y)
        row = self._row(y)
        if not row.taken:
            self.emit(self.now, "", False)
            row.taken = True
        if y == self.lines - 1:
            self.take(0)
            self._scroll()
        else:
            self.cursor.y = y + 1
        self._active = self.cursor.y

    def _erase_in_line(self, how: int) -> None:
        """As `_Screen.erase_in_line` (how 0, 1 or 2)."""
        x, y = self.cursor.x, self.cursor.y
        self._enter(y)
        row = self._row(y)
        row.changed = True
        if how == 0:
            row.cells = row.cells[:x]
        elif how == 1:
            row.cells = " " * (x + 1) + row.cells[x + 1:]
        else:
            row.cells = ""

    def _erase_in_display(self, how: int) -> None:
        """As `_Screen.erase_in_display` (how 0 to 3)."""
        y = self.cursor.y
        if how in (2, 3):
            erased = range(self.lines)
        elif how == 1:
            erased = range(y)
        else:
            erased = range(y + 1, self.lines)
        for row_y in erased:
            self.take(row_y)
            self.rows[row_y] = _ModelRow()  # blank (pyte makes the rows it erases)
        if how in (0, 1):
            self._erase_in_line(how)


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


class _Batch:
    """A batch of events joined once, with where each event starts in the joined text."""

    def __init__(self, events: list[tuple[float, str]]) -> None:
        self.events = events
        self.raw = "".join([text for _, text in events])
        self.starts = list(accumulate(map(len, map(_TEXT, events)), initial=0))

    def event_at(self, position: int) -> int:
        """The index of the event holding raw[position]."""
        return min(bisect.bisect_right(self.starts, position) - 1, len(self.events) - 1)

    def time_at(self, position: int) -> float:
        """When raw[position] was written."""
        return self.events[self.event_at(position)][0]

    def events_between(self, start: int, end: int) -> list[tuple[float, str]]:
        """The events covering raw[start:end], the first one cut to begin at `start`."""
        if start >= end:
            return []
        first, last = self.event_at(start), self.event_at(end - 1)
        time, text = self.events[first]
        return [(time, text[start - self.starts[first]:]), *self.events[first + 1:last + 1]]


class ScreenText:
    """Output events in, screen lines out (see the module's description)."""

    def __init__(self, width: int = 0, height: int = 0, *, line_model: bool = True,
                 row_model: bool = True) -> None:
        self.columns = min(width, MAX_COLUMNS) if width > 0 else DEFAULT_SIZE[0]
        self.rows = min(height, MAX_ROWS) if height > 0 else DEFAULT_SIZE[1]
        self._pending: list[str] = []  # the fast path's incomplete line
        self._pending_len = 0
        self._pending_time: float | None = None
        self._recent: Recent = deque(maxlen=self.rows)
        self._collector = _Collector(self._recent)
        self._screen: _Screen | _Model | None = None  # set while the emulator has the output
        self._held: _Screen | _Model | None = None  # the screen the emulator used last
        self._kept: _Screen | None = None  # pyte's screen and stream, made when first needed
        self._kept_stream: pyte.Stream | None = None
        self._model: _Model | None = None
        self._row_model = row_model
        self._filter = SafeFilter(strings_end_at_newline=True)
        self._line_model = line_model
        self._clean_lines = 0
        self._cursor_row = 0  # the screen row the fast path's next line starts on
        self._settled_at: int | None = None  # the cursor row when the emulator left settled
        self._fast_lines = 0  # lines the fast path gave since
        self.emulated_chars = 0  # how much text went through the emulator (for the benchmark)
        self.modelled_chars = 0  # of which the row model took (the rest went through pyte)

    # -- input -----------------------------------------------------------------------------

    def feed(self, events: list[tuple[float, str]]) -> list[AnyLines]:
        """Take a batch of events; return the lines they complete, in order.

        The batch is joined once; the fast path and the emulator take turns over positions in
        it, so each character is looked at a bounded number of times however often they
        alternate.
        """
        out: list[AnyLines] = []
        if not events:
            return out
        batch = _Batch(events)
        position = 0
        while position < len(batch.raw):
            if self._screen is None:
                position = self._fast(batch, position, out)
                continue
            index = batch.event_at(position)
            while index < len(events):
                time, text = events[index]
                text = text[position - batch.starts[index]:]
                if _IN_ROW.fullmatch(text):
                    # typing: a run of writes that stay in the row, fed at once (the row's
                    # time is its first write's either way)
                    run = index + 1
                    while run < len(events) and _IN_ROW.fullmatch(events[run][1]):
                        run += 1
                    if run > index + 1:
                        text = "".join([text, *map(_TEXT, events[index + 1:run])])
                        index = run - 1
                rest = self._emulate(time, text)
                position = batch.starts[index + 1]
                if rest is not None:
                    self._drain(out)
                    position -= len(rest)
                    break
                index += 1
        self._drain(out)
        return out

    def finish(self) -> list[AnyLines]:
        """The lines still on the screen, or the last incomplete line."""
        out: list[AnyLines] = []
        if self._screen is not None:
            self._screen.take_all()
            self._screen = None
        elif self._pending_len:
            text = strip_controls("".join(self._pending))
            time = self._pending_time or 0.0
            self._pending, self._pending_len = [], 0
            out.append(Lines(_expand(text), text, [], 0, time))
        self._drain(out)
        return out

    # -- the fast path -----------------------------------------------------------------------

    def _fast(self, batch: _Batch, position: int, out: list[AnyLines]) -> int:
        """Lines through the fast path from `position`; returns where it stopped: the end of
        the batch, or the start of the first line that needs the emulator (started)."""
        raw = batch.raw
        prefix = "".join(self._pending)  # the start of a line from earlier batches
        head_time = (self._pending_time if self._pending_time is not None
                     else batch.time_at(position))
        cut = raw.rfind("\n", position)
        if cut < 0:
            if self._pending_len + len(raw) - position <= MAX_PENDING:
                self._pending.append(raw[position:])
                self._pending_len += len(raw) - position
                self._pending_time = head_time
                return len(raw)
            cut = len(raw) - 1  # an overlong line is cut into a line anyway
        end = cut + 1
        # Lines that need more than their text: one holding only backspaces, carriage
        # returns, erase-to-end and the plain path's escapes, that stays within the width, is
        # rendered here (a line model, far cheaper than the emulator); the first other one
        # starts the emulator. The line that began in earlier batches is checked whole.
        rendered: list[tuple[int, int, str]] = []  # (start, newline, text) in raw
        stop = end
        scan = position
        first_line_end = raw.find("\n", position, end) + 1 or end
        if prefix and changes_screen(prefix + raw[position:first_line_end] + "\n") >= 0:
            line = _render_line(prefix + raw[position:first_line_end - 1], self.columns,
                                self._line_model)
            if line is None:
                stop = position
            else:
                rendered.append((position, first_line_end - 1, line))
                scan = first_line_end
        while stop == end and scan < end:
            found = self._first_change(raw, scan, end)
            if found < 0:
                break
            start = raw.rfind("\n", scan, found) + 1 or scan
            newline = raw.find("\n", found, end)
            line = _render_line(raw[start:newline], self.columns, self._line_model)
            if line is None:
                stop = start
            else:
                rendered.append((start, newline, line))
                scan = newline + 1
        if stop > position:
            plain = None
            if rendered:
                pieces = []
                at, lead = position, prefix  # lead: text before raw[at] not yet shown
                for start, newline, line in rendered:
                    if not (start == position and prefix):  # (else: it is the earlier line)
                        pieces.append(_expand(strip_controls(lead + raw[at:start])))
                    pieces.append(line)
                    at, lead = newline, ""
                pieces.append(_expand(strip_controls(lead + raw[at:stop])))
                plain = "".join(pieces)
                plain = plain[:-1] if plain.endswith("\n") else plain
            self._lines(prefix + raw[position:stop], batch, position, stop, len(prefix),
                        head_time, out, plain)
            prefix, head_time = "", batch.time_at(stop)
        if stop == end:
            rest = len(raw) - end
            self._pending = [raw[end:]] if rest else []
            self._pending_len = rest
            self._pending_time = batch.time_at(end) if rest else None
            return len(raw)
        self._pending, self._pending_len, self._pending_time = [], 0, None
        self._start_emulator(head_time)
        if prefix:
            self._emulate(head_time, prefix)
        return stop

    @staticmethod
    def _first_change(raw: str, start: int, end: int) -> int:
        """changes_screen over raw[start:end] in windows of whole lines that double in size:
        the cost is twice the distance to the first change, so that many alternations
        between the fast path and the emulator in one batch stay linear."""
        window = 4096
        while True:
            limit = raw.find("\n", min(end, start + window), end) + 1 or end
            found = changes_screen(raw, start, limit)
            if found >= 0 or limit >= end:
                return found
            start, window = limit, window * 2

    def _lines(self, complete: str, batch: _Batch, start: int, end: int, prefix: int,
               head_time: float, out: list[AnyLines], plain: str | None = None) -> Lines:
        """Fast-path lines: `complete` is the earlier batches' `prefix` characters, then the
        batch's raw[start:end]; `plain` its text when some lines were rendered."""
        if plain is None:
            body = complete[:-1] if complete.endswith("\n") else complete
            plain = _expand(strip_controls(body))
        lines = Lines(plain, complete, batch.events_between(start, end), prefix, head_time)
        if lines.count:
            out.append(lines)
            if self._cursor_row < self.rows - 1:  # where the next line starts on the screen
                self._cursor_row = min(self._cursor_row + lines.count, self.rows - 1)
            self._fast_lines += lines.count
            tail = lines.text.rsplit("\n", self.rows)[-self.rows:]
            for offset, text in enumerate(tail):
                self._recent.append((lines, lines.count - len(tail) + offset, text))
        return lines

    # -- the emulator --------------------------------------------------------------------------

    def _pyte(self) -> _Screen:
        if self._kept is None:  # one screen and stream per recording
            self._kept = _Screen(self.columns, self.rows, self._collector.emit)
            self._kept_stream = pyte.Stream(self._kept)
        return self._kept

    def _start_emulator(self, now: float) -> None:
        screen = self._held
        if (screen is not None and self._settled_at is not None
                and self._fast_lines <= self.rows):
            # The screen is as it was left, settled; only the lines since then are new.
            screen.now = now
            fresh = self._recent_rows(self._fast_lines) if self._fast_lines else []
            screen.scroll_in(self._settled_at, fresh)
        else:
            # A new screen: the row model's, which hands over to pyte when it must.
            if not self._row_model:
                screen = self._pyte()
            elif self._model is None:
                screen = self._model = _Model(self.columns, self.rows, self._collector.emit)
            else:
                screen = self._model
            screen.now = now
            screen.reset()
            rows = self._recent_rows()
            screen.seed(rows[len(rows) - self._cursor_row:] if self._cursor_row else [])
        self._screen = self._held = screen
        self._settled_at = None
        self._fast_lines = 0
        if not self._filter.idle:
            self._filter = SafeFilter(strings_end_at_newline=True)
        self._clean_lines = 0

    def _recent_rows(self, count: int | None = None,
                     timed: bool = True) -> list[tuple[float, str, bool]]:
        """The screen rows the last lines (all kept, or the last `count`) fill (a line longer
        than the screen is wide fills several), with their times (0.0 unless `timed`), the
        last screenful at most, top to bottom."""
        backwards: list[tuple[float, str, bool]] = []
        recent = self._recent
        width = self.columns
        stop = -1 if count is None else max(-1, len(recent) - 1 - count)
        for index in range(len(recent) - 1, stop, -1):
            lines, at, text = recent[index]
            if lines is not None:
                if not timed:
                    at = 0.0
                else:  # work the time out once
                    at = lines.time_of(int(at))
                    recent[index] = (None, at, text)
            if len(text) <= width:
                backwards.append((at, text.rstrip(), False))
            else:
                pieces = [text[start:start + width] for start in range(0, len(text), width)]
                backwards.extend((at, piece.rstrip(), number > 0)
                                 for number, piece in reversed(list(enumerate(pieces))))
            if len(backwards) >= self.rows:
                break
        del backwards[self.rows:]
        backwards.reverse()
        return backwards

    def _emulate(self, time: float, text: str) -> str | None:
        """Feed one event to the screen; once the screen holds only fast-path lines, empty it
        and return the text after the last newline (for the fast path), else None."""
        assert self._screen is not None
        self._screen.now = time
        clean, dirty = _clean_lines_at_end(text, self.rows)
        self._clean_lines = clean if dirty else self._clean_lines + clean
        if not clean:
            self._feed_screen(text)
            return None
        # A line feed since the last character that needed the emulator: back to the fast
        # path if the screen is what seeding would rebuild, or if a screenful of plain lines
        # has scrolled everything else away.
        cut = text.rfind("\n") + 1
        self._feed_screen(text[:cut])
        screen = self._screen
        if self._clean_lines >= self.rows:
            screen.take_all()
            self._cursor_row = self.rows - 1
        elif (self._filter.idle and not screen.changed_rows()
              and screen.settled([text for _, text, _ in
                                  self._recent_rows(screen.cursor.y, timed=False)])):
            self._cursor_row = screen.cursor.y
            self._settled_at = screen.cursor.y
        else:
            self._feed_screen(text[cut:])
            return None
        self._screen = None
        return text[cut:]

    def _feed_screen(self, text: str) -> None:
        self.emulated_chars += len(text)
        screen = self._screen
        if isinstance(screen, _Model):
            rest = screen.feed(text)
            if rest is None:
                self.modelled_chars += len(text)
                return
            # Something the row model does not model: pyte goes on from its screen.
            self.modelled_chars += len(text) - len(rest)
            emulator = self._pyte()
            screen.hand_over(emulator)
            self._screen = self._held = emulator
            text = rest
        safe = self._filter.feed(text)
        if safe:
            assert self._kept_stream is not None
            self._kept_stream.feed(safe)

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


_LINE_TOKENS = re.compile(
    r"(\x08|\r|\x1b\[0?K|\x1b\[[0-9;:]*m|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)"
    r"|\x1b[()*+][0-9A-Za-z]|\x1b[=>]"
    r"|\x1b\[\?(?![0-9;]*?(?<![0-9])(?:47|1047|1049)(?![0-9]))[0-9;]*[hl])"
)
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _render_line(line: str, columns: int, enabled: bool = True) -> str | None:
    """A line (without its newline) as a screen row shows it, when it holds only printable
    ASCII, backspaces, carriage returns, erase-to-end and escapes that change nothing on the
    screen, and never reaches the last column (where wrapping starts); else None (the
    emulator renders it). Starts, like the fast path, at the first column of a fresh row."""
    if not enabled:
        return None
    if line.endswith("\r"):
        line = line[:-1]  # the CR of CR LF
    shown = ""
    cursor = 0
    for index, part in enumerate(_LINE_TOKENS.split(line)):
        if index % 2 == 0:
            if not part:
                continue
            if cursor + len(part) >= columns or not _PRINTABLE.fullmatch(part):
                return None
            shown = shown[:cursor] + part + shown[cursor + len(part):]
            cursor += len(part)
        elif part == "\x08":
            cursor = max(0, cursor - 1)
        elif part == "\r":
            cursor = 0
        elif part in ("\x1b[K", "\x1b[0K"):
            shown = shown[:cursor]
    return shown.rstrip()


def _expand(text: str) -> str:
    """Tabs as the screen shows them (8 columns; the column restarts at each newline)."""
    return text.expandtabs(8) if "\t" in text else text
