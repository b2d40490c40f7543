"""Recorded text made inert: `visible` for tables and reports, `SafeFilter` for play and cat.

One test per sequence family the filter passes or drops; every family is also fed split at
every position, since a recording writes a sequence over as many events as it likes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsops.recordings.inert import SafeFilter, visible

ESC = "\x1b"
BEL = "\x07"
ST = ESC + "\\"


def filtered(text: str) -> str:
    """The filter's output for `text` in one piece, reset included."""
    safe = SafeFilter()
    return safe.feed(text) + safe.reset()


def split_everywhere(text: str) -> set[str]:
    """The filter's output for `text` cut into two pieces at every position, and into one
    piece per character."""
    outputs = set()
    for cut in range(len(text) + 1):
        safe = SafeFilter()
        outputs.add(safe.feed(text[:cut]) + safe.feed(text[cut:]) + safe.reset())
    safe = SafeFilter()
    outputs.add("".join(safe.feed(char) for char in text) + safe.reset())
    return outputs


# --- visible ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shown"), [
    ("plain ascii, [bold]markup[/bold] stays", "plain ascii, [bold]markup[/bold] stays"),
    ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),  # ordinary non-ASCII is left alone
    (ESC + "]0;title" + BEL, "^[]0;title^G"),
    (ESC + "[1A" + ESC + "[2K", "^[[1A^[[2K"),
    ("tab\there\nnewline\r", "tab^Ihere^Jnewline^M"),
    ("\x00\x7f", "^@^?"),
    ("\x9b31m \x9d \x9c \x85", "M-^[31m M-^] M-^\\ M-^E"),
    ("\x80\x9f", "M-^@M-^_"),
    ("user\u202eroot", "user<U+202E>root"),
    ("\u2066iso\u2069 \u200bzw\u200d \ufeff", "<U+2066>iso<U+2069> <U+200B>zw<U+200D> <U+FEFF>"),
    ("line\u2028para\u2029", "line<U+2028>para<U+2029>"),
    ("lone \ud800 surrogate", "lone <U+D800> surrogate"),
])
def test_visible_shows_controls_as_cat_v_and_format_characters_by_code_point(
        text: str, shown: str) -> None:
    assert visible(text) == shown


@given(st.text())
def test_visible_never_leaves_a_control_or_format_character(text: str) -> None:
    import unicodedata

    shown = visible(text)
    assert all(unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp", "Cs")
               for char in shown)


# --- SafeFilter: what passes --------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "plain text\r\nwith\ttab and\bbackspace\n",
    ESC + "[1;32mgreen" + ESC + "[0m " + ESC + "[m",          # SGR
    ESC + "[38;5;196mred" + ESC + "[38:2::10:20:30mtrue" + ESC + "[0m",
    ESC + "[A" + ESC + "[2B" + ESC + "[3C" + ESC + "[4D" + ESC + "[5;10H" + ESC + "[7f",
    ESC + "[E" + ESC + "[F" + ESC + "[12G" + ESC + "[3d" + ESC + "[5`" + ESC + "[2a" + ESC + "[e",
    ESC + "[K" + ESC + "[1K" + ESC + "[2K" + ESC + "[J" + ESC + "[2J",   # erase in the screen
    ESC + "[3@" + ESC + "[2P" + ESC + "[4X" + ESC + "[L" + ESC + "[2M" + ESC + "[S" + ESC + "[T",
    ESC + "7" + ESC + "8" + ESC + "M" + ESC + "D" + ESC + "E",
    ESC + "(B",
])
def test_the_safe_set_passes_unchanged(text: str) -> None:
    styled = ESC + "[" in text and "m" in text
    reset = ESC + "[0m" if styled else ""
    assert split_everywhere(text) == {text + reset}


def test_modes_pass_and_are_undone_at_the_end() -> None:
    text = (ESC + "[?1049h" + ESC + "[?25l" + ESC + "[?2004h" + ESC + "[?7l" + ESC + "[5;20r"
            + ESC + "(0" + "qqq")
    undone = (ESC + "[r" + ESC + "(B" + ESC + "[?1049l" + ESC + "[?25h" + ESC + "[?2004l"
              + ESC + "[?7h")
    assert split_everywhere(text) == {text + undone}


def test_a_mode_turned_back_off_is_not_undone_again() -> None:
    text = ESC + "[?1049h" + "vim" + ESC + "[?1049l" + ESC + "[?25l" + ESC + "[?25h"
    assert filtered(text) == text


def test_nothing_is_added_when_nothing_needs_undoing() -> None:
    assert filtered("just text\r\n") == "just text\r\n"


# --- SafeFilter: what is dropped ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "left"), [
    # OSC: title (BEL and ST ends), clipboard, hyperlink, colour queries
    (ESC + "]0;new title" + BEL + "after", "after"),
    (ESC + "]2;new title" + ST + "after", "after"),
    (ESC + "]52;c;ZWNobyBwd25lZA==" + BEL + "after", "after"),
    (ESC + "]8;;https://evil.example" + ST + "link" + ESC + "]8;;" + ST, "link"),
    (ESC + "]11;?" + BEL + "x", "x"),
    # DCS (DECRQSS, sixel, tmux passthrough), SOS, PM, APC: only ST ends them, BEL does not
    (ESC + "P$qm" + ST + "x", "x"),
    (ESC + "Ptmux;" + ESC + ESC + "]52;c;eA==" + BEL + ST + "x", "x"),
    (ESC + "P1;2q#0;2;0;0;0" + BEL + "still dcs" + ST + "x", "x"),
    (ESC + "Xsos" + ST + ESC + "^pm" + ST + ESC + "_apc" + BEL + "still apc" + ST + "x", "x"),
    # terminal report requests
    (ESC + "[c" + ESC + "[0c" + ESC + "[>c" + ESC + "[=c" + "x", "x"),
    (ESC + "[5n" + ESC + "[6n" + ESC + "[?6n" + "x", "x"),
    (ESC + "[21t" + ESC + "[14t" + ESC + "[8;100;200t" + ESC + "[?1;2$p" + ESC + "[2$p" + "x", "x"),
    (ESC + "[x" + ESC + "[>0q" + "x", "x"),
    # modes that would outlive playback, and resets
    (ESC + "[?1000h" + ESC + "[?1006h" + ESC + "[?1h" + ESC + "[4h" + ESC + "[20h" + "x", "x"),
    (ESC + "[?6h" + ESC + "[?1049;1000h" + ESC + "=" + ESC + ">" + "x", "x"),
    (ESC + "c" + ESC + "[!p" + ESC + "[2 q" + ESC + "H" + ESC + "[3g" + ESC + "#8" + "x", "x"),
    (ESC + "%G" + ESC + " F" + ESC + ")0" + ESC + "(K" + "x", "x"),
    (ESC + "[3J" + "x", "x"),                        # erasing the scrollback
    (ESC + "[5;10;1;1;1;1$v" + ESC + "[1;1;2;2$z" + "x", "x"),   # rectangle operations
    # concealment, alone or among other attributes; colour index 8 is not concealment
    (ESC + "[8msecret", "secret"),
    (ESC + "[1;8;31mx", ESC + "[1;31mx"),
    (ESC + "[38;5;8;8mx", ESC + "[38;5;8mx"),
    # other C0 and C1 controls, DEL, bidi controls
    ("a" + BEL + "b\x0e\x0f\x00\x7f\x05c\x85\x88d", "abcd"),
    ("\u202edesrever\u202c \u2067iso\u2069 \u200fx", "desrever iso x"),
])
def test_dropped_families(text: str, left: str) -> None:
    reset = ESC + "[0m" if left.startswith(ESC + "[") else ""
    assert split_everywhere(text) == {left + reset}


def test_eight_bit_introducers_are_read_as_their_seven_bit_forms() -> None:
    text = "\x9b31mred\x9b0m \x9d0;title\x9c \x90$qm\x9c \x9f apc\x9c \x9b6n" + "end"
    assert filtered(text) == ESC + "[31mred" + ESC + "[0m    end" + ESC + "[0m"


def test_can_and_sub_cancel_a_sequence() -> None:
    assert filtered(ESC + "]0;tit\x18shown " + ESC + "[3\x1a1m") == "shown 1m"


def test_controls_inside_a_sequence_act_as_in_a_terminal() -> None:
    assert filtered(ESC + "[1\r\n5D" + ESC + "[3\x07C") == "\r\n" + ESC + "[15D" + ESC + "[3C"


def test_an_escape_inside_a_string_ends_it_and_starts_a_sequence() -> None:
    assert filtered(ESC + "]0;title" + ESC + "[1mbold") == ESC + "[1mbold" + ESC + "[0m"


def test_unterminated_sequences_at_the_end_are_dropped() -> None:
    for tail in (ESC, ESC + "[", ESC + "[12;", ESC + "]0;never ended", ESC + "P$q", ESC + "(",
                 "\x9b1", ESC + "]52;c;" + "A" * 10000):
        safe = SafeFilter()
        assert safe.feed("text" + tail) + safe.reset() == "text"


def test_overlong_sequences_are_dropped_whole() -> None:
    long_csi = ESC + "[" + "1;" * 5000 + "m"
    assert filtered(long_csi + "after") == "after"
    digits = ESC + "[" + "9" * 10000 + "A"
    assert filtered(digits + "after") == "after"


def test_a_clipboard_payload_of_megabytes_is_skipped_in_constant_memory() -> None:
    safe = SafeFilter()
    assert safe.feed(ESC + "]52;c;") == ""
    for _ in range(64):
        assert safe.feed("QUJD" * 16384) == ""
    assert len(safe._sequence) == 0
    assert safe.feed(BEL + "after") == "after"


def test_strings_end_at_a_newline_for_search() -> None:
    safe = SafeFilter(strings_end_at_newline=True)
    assert safe.feed(ESC + "]0;unterminated\r\ncommand shown\r\n") == "\r\ncommand shown\r\n"
    assert SafeFilter().feed(ESC + "]0;unterminated\r\ncommand hidden") == ""


DANGEROUS = (ESC + "]", ESC + "P", ESC + "_", ESC + "^", ESC + "X", ESC + "c", BEL,
             ESC + "[6n", ESC + "[c", ESC + "[8m", ESC + "[?1000h")
ALPHABET = st.sampled_from([ESC, "[", "]", "P", "_", "^", "X", "?", ";", "0", "1", "2", "5",
                            "6", "8", "9", "m", "n", "c", "h", "l", "t", "q", "A", "K", "\\",
                            BEL, "\x9b", "\x9c", "\x9d", "\x18", "\r", "\n", "\b", "a",
                            "\u202e", "$", " ", "("])


@settings(max_examples=400)
@given(st.lists(st.text(ALPHABET, max_size=30), max_size=6))
def test_no_dangerous_sequence_survives_whatever_the_split(pieces: list[str]) -> None:
    safe = SafeFilter()
    out = "".join(safe.feed(piece) for piece in pieces) + safe.reset()
    for dangerous in DANGEROUS:
        assert dangerous not in out
    assert not any(0x80 <= ord(char) < 0xA0 or char == "\u202e" for char in out)
    assert SafeFilter().feed(out) == out  # what passed is passed again unchanged
    whole = SafeFilter()
    assert whole.feed("".join(pieces)) + whole.reset() == out
