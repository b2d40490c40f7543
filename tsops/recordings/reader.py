"""Stream one recording's events and its plain text in constant memory, noting damage."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter

from tsops.recordings.cast import (
    UNTERMINATED_HEADER,
    V1_DETAIL,
    V1_WINDOW,
    BlockReport,
    CastError,
    Header,
    LineBlocks,
    decode_block,
    judge_end,
    looks_v1,
    parse_header,
    strip_controls,
)
from tsops.recordings.catalog import Problem
from tsops.recordings.store import Store

MAX_PENDING = 1 << 20  # text without a newline longer than this is cut into a line anyway
TEXT = itemgetter(1)


@dataclass
class Stream:
    """Reads one recording: header, event batches; afterwards, the problems seen.

    It judges the file with the same functions as the catalog (tsops.recordings.cast), so
    `duration`, `truncated` and the header agree with `list` and `show` for every file.
    """

    store: Store
    key: str
    header: Header | None = None
    report: BlockReport = field(default_factory=BlockReport)
    ending: str = ""  # why the file counts as truncated; "" when it ends complete
    size: int = 0

    @property
    def truncated(self) -> bool:
        """Whether the file does not end with one newline after a complete event."""
        return bool(self.ending)

    @property
    def last_time(self) -> float | None:
        """The time of the last complete event of any kind (the session's duration)."""
        return self.report.last_time

    def _chunks(self) -> Iterator[bytes]:
        """The file's chunks, the first at least V1_WINDOW bytes long (to name v1 files)."""
        chunks = iter(self.store.chunks(self.key))
        first = b""
        for chunk in chunks:
            first += chunk
            if len(first) >= V1_WINDOW:
                break
        if looks_v1(first):
            raise CastError("asciicast-v1", V1_DETAIL)
        if first:
            yield first
        yield from chunks

    def batches(self) -> Iterator[list[tuple[float, str]]]:
        """Output events, a batch per block of complete lines; raises CastError on a bad header.

        A last event without its final newline is given too (it is complete JSON), though the
        file counts as truncated and the duration is the event before it.
        """
        splitter = LineBlocks()
        empty = True
        for chunk in self._chunks():
            empty = False
            self.size += len(chunk)
            block = splitter.feed(chunk)
            if self.header is None and splitter.header is not None:
                self.header = parse_header(splitter.header)
            if block:
                yield decode_block(block, self.report)
        if empty:
            raise CastError("empty", "the file is empty")
        if splitter.header is None:
            self.header = parse_header(splitter.tail)
            self.ending = UNTERMINATED_HEADER
            return
        self.ending = judge_end(splitter.last_line, splitter.tail)
        if splitter.tail.strip():
            yield decode_block(splitter.tail + b"\n", BlockReport())  # keep what parses

    def problems(self) -> list[Problem]:
        """What was wrong in the file, one problem per kind."""
        found = []
        if self.ending:
            found.append(Problem(self.key, "truncated", self.ending))
        if self.report.bad_lines:
            found.append(Problem(self.key, "bad-event",
                                 f"{self.report.bad_lines} line(s) are not events"))
        if self.report.invalid_utf8:
            found.append(Problem(self.key, "invalid-utf8",
                                 f"{self.report.invalid_utf8} line(s) are not valid UTF-8"))
        return found


class Lines:
    """Complete plain-text lines and, on demand, the session time at which each one started."""

    def __init__(self, plain: str, raw: str = "", events: list[tuple[float, str]] | None = None,
                 prefix: int = 0, head_time: float = 0.0) -> None:
        self.text = plain  # the lines joined by newlines, no final newline
        self.count = plain.count("\n") + 1 if raw else 0
        self._raw = raw
        self._events = events or []
        self._prefix = prefix
        self._head_time = head_time
        self._newlines: list[int] | None = None
        self._starts: list[int] | None = None

    def split(self) -> list[str]:
        """The lines."""
        return self.text.split("\n") if self.count else []

    def time_of(self, index: int) -> float:
        """When line `index` started: the time of the write holding its first character."""
        if index == 0:
            return self._head_time
        if self._newlines is None:  # where each raw line starts, from C-level split and sums
            self._newlines = list(accumulate(map(len, self._raw.split("\n")), initial=0))
        return self.time_of_offset(self._newlines[index] + index)

    def time_of_offset(self, position: int) -> float:
        """When the character at `position` of the raw text was written."""
        if self._starts is None:
            self._starts = list(accumulate(map(len, map(TEXT, self._events[:-1])),
                                           initial=self._prefix))
        found = bisect.bisect_right(self._starts, position) - 1
        return self._events[found][0] if found >= 0 and self._events else self._head_time


class LineAssembler:
    """Turn output events into plain lines (escapes removed), with each line's start time."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._pending_len = 0
        self._pending_time: float | None = None

    def feed(self, events: list[tuple[float, str]]) -> Lines:
        """Take a batch of events; return the lines they complete."""
        raw = "".join([text for _, text in events])
        if self._pending_time is None and events:
            self._pending_time = events[0][0]
        cut = raw.rfind("\n")
        if cut < 0 and self._pending_len + len(raw) <= MAX_PENDING:
            self._pending.append(raw)
            self._pending_len += len(raw)
            return Lines("")
        if cut < 0:
            cut = len(raw) - 1
        prefix = "".join(self._pending)
        complete = prefix + raw[: cut + 1]
        head_time = self._pending_time if self._pending_time is not None else 0.0
        body = complete[:-1] if complete.endswith("\n") else complete
        lines = Lines(strip_controls(body), complete, events, len(prefix), head_time)
        rest = raw[cut + 1:]
        self._pending = [rest] if rest else []
        self._pending_len = len(rest)
        self._pending_time = None
        if rest:
            self._pending_time = lines.time_of_offset(len(complete))
        return lines

    def finish(self) -> Lines:
        """The last line when the output did not end with a newline."""
        if not self._pending_len:
            return Lines("")
        text = strip_controls("".join(self._pending))
        time = self._pending_time or 0.0
        self._pending, self._pending_len = [], 0
        return Lines(text, text, [], 0, time)


def plain_pieces(stream: Stream) -> Iterator[str]:
    """The plain text of a recording, a block at a time, escapes removed."""
    carry = ""
    for batch in stream.batches():
        raw = carry + "".join([text for _, text in batch])
        cut = raw.rfind("\n") + 1  # cut at a line end, so no escape sequence is split
        if cut == 0 and len(raw) < MAX_PENDING:
            carry = raw
            continue
        cut = cut or len(raw)
        carry = raw[cut:]
        yield strip_controls(raw[:cut])
    if carry:
        yield strip_controls(carry)
