"""`search`: a regular expression over the screen text of many recordings, in parallel.

Each recording's output is turned into the lines its screen showed (tsops.recordings.screen:
backspace, carriage return, erasing and cursor movement applied) before matching.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tsops.recordings.cast import CastError
from tsops.recordings.catalog import WORKERS, Problem, Recording, parallel
from tsops.recordings.reader import Stream
from tsops.recordings.screen import AnyLines, ScreenText
from tsops.recordings.store import ObjectInfo, RecordingMissing, Store, StoreError


@dataclass
class Match:
    """A line of a recording that matches, when it was written, and the lines around it."""

    key: str
    line_number: int  # 1-based, in the plain text
    offset: float  # seconds into the session
    line: str
    before: list[str]
    after: list[str] = field(default_factory=list)


@dataclass
class Result:
    """The matches in one recording, the recording (None if unreadable), the problems met."""

    recording: Recording | None
    matches: list[Match]
    problems: list[Problem]


class _Searcher:
    """Searches one recording's lines as they are assembled, a block at a time."""

    def __init__(self, key: str, pattern: re.Pattern[str], context: int) -> None:
        self.key = key
        self.pattern = pattern
        self.context = context
        self.before: deque[str] = deque(maxlen=context)
        self.waiting: list[Match] = []  # matches still missing lines after them
        self.matches: list[Match] = []
        self.line_number = 0

    def take(self, lines: AnyLines) -> None:
        """Search one block of complete lines."""
        if not lines.count:
            return
        text = lines.text
        first = self.pattern.search(text)
        if first is None and not self.waiting:
            self.line_number += lines.count
            if self.context:
                self.before.extend(text.rsplit("\n", self.context)[-self.context:])
            return
        every = text.split("\n")
        if self.waiting:
            self._fill_after(every)
        if first is not None:
            self._collect(lines, every, first)
        self.line_number += lines.count
        if self.context:
            self.before.extend(every[-self.context:])

    def _fill_after(self, every: list[str]) -> None:
        still = []
        for match in self.waiting:
            match.after.extend(every[: self.context - len(match.after)])
            if len(match.after) < self.context:
                still.append(match)
        self.waiting = still

    def _collect(self, lines: AnyLines, every: list[str], first: re.Match[str]) -> None:
        text = lines.text
        seen = -1
        index = 0
        position = 0
        for found in self._finditer(first, text):
            index += text.count("\n", position, found.start())
            position = found.start()
            if index == seen:
                continue
            seen = index
            before: list[str] = []
            if self.context:
                before = every[max(0, index - self.context):index]
                if len(before) < self.context:  # the rest comes from earlier blocks
                    before = list(self.before)[len(before) - self.context:] + before
            match = Match(
                self.key, self.line_number + index + 1, lines.time_of(index), every[index],
                before, every[index + 1: index + 1 + self.context],
            )
            self.matches.append(match)
            if len(match.after) < self.context:
                self.waiting.append(match)

    def _finditer(self, first: re.Match[str], text: str) -> Iterator[re.Match[str]]:
        yield first
        start = first.end() if first.end() > first.start() else first.end() + 1
        yield from self.pattern.finditer(text, start)


def search_one(store: Store, target: Recording | ObjectInfo, pattern: re.Pattern[str],
               context: int) -> Result:
    """Search one recording in one streamed read; a damaged file yields what could be read.

    Given an ObjectInfo (no filter to apply first), the header comes from the same read.
    """
    stream = Stream(store, target.key)
    searcher = _Searcher(target.key, pattern, context)
    screen: ScreenText | None = None
    problems: list[Problem] = []
    try:
        for batch in stream.batches():
            if screen is None:  # the header is read with the first batch
                header = stream.header
                screen = ScreenText(header.width, header.height) if header else ScreenText()
            for lines in screen.feed(batch):
                searcher.take(lines)
        for lines in (screen or ScreenText()).finish():
            searcher.take(lines)
    except CastError as error:
        problems.append(Problem(target.key, error.kind, error.detail))
    except (StoreError, RecordingMissing, OSError) as error:
        problems.append(Problem(target.key, "unreadable", str(error)))
    problems.extend(stream.problems())
    if isinstance(target, Recording):
        recording: Recording | None = target
    elif stream.header is not None:
        recording = Recording(target.key, stream.size, stream.header, stream.last_time,
                              stream.truncated, stream.ending, target.recorder)
    else:
        recording = None
    return Result(recording, searcher.matches, problems)


def search(store: Store, targets: Iterable[Recording | ObjectInfo], pattern: re.Pattern[str],
           context: int = 0, workers: int = WORKERS) -> Iterator[Result]:
    """Search recordings in parallel; results come in the order of `targets`."""
    return parallel(lambda target: search_one(store, target, pattern, context),
                    targets, workers)


def compile_pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    """Compile the operator's regular expression (per line: ^ and $ match at line ends)."""
    from tsops.errors import UsageError

    try:
        return re.compile(text, re.MULTILINE | (re.IGNORECASE if ignore_case else 0))
    except re.error as error:
        raise UsageError(f"bad regular expression {text!r}: {error}") from None
