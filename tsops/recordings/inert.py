"""Recorded text made inert for review: shown visibly, or filtered down to a safe set.

The recorded person controls a session's header fields and its output, and whoever reviews it
reads them in a terminal. Two tools, both pure code over strings:

- `visible(text)` for every field and line tsops prints in `list`, `show`, `search` and
  warnings: control characters in caret notation as `cat -v` shows them (ESC `^[`, BEL `^G`,
  tab `^I`, newline `^J`, DEL `^?`), C1 controls (U+0080-U+009F) as `M-` and the caret form of
  the code point less 0x80 (U+009B `M-^[`), and invisible format characters (bidi overrides and
  isolates, zero-width characters, line and paragraph separators, lone surrogates) as
  `<U+202E>`. Nothing else changes, so ordinary text, including non-ASCII, reads as it is.
- `SafeFilter`, a state machine for `play` and `cat`: it passes text, newline, carriage
  return, backspace, tab, colours and attributes (SGR, less concealment), cursor movement and
  erasing within the screen, and a few screen modes that it undoes at the end (`reset()`); it
  drops everything else: OSC (window title, clipboard, hyperlinks), DCS, SOS, PM, APC,
  terminal report requests (DA, DSR/CPR, DECRQM, window operations), and any mode that would
  outlive the playback. Sequences may be split across events; an unterminated one at the end
  is dropped.
"""

from __future__ import annotations

import re
import unicodedata

# Anything that is not printable ASCII: the only places where `visible` has work to do.
_NOT_PLAIN = re.compile(r"[^\x20-\x7e]")
_INVISIBLE = frozenset(("Cf", "Zl", "Zp", "Cs"))


def _shown(char: str) -> str:
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if code < 0xA0:  # C1: cat -v's M- prefix on the caret form of the 7-bit control
        low = code - 0x80
        return "M-^" + (chr(low + 0x40) if low < 0x20 else "?")
    if unicodedata.category(char) in _INVISIBLE:
        return f"<U+{code:04X}>"
    return char


def visible(text: str) -> str:
    """The text with every control and invisible format character shown visibly."""
    if not _NOT_PLAIN.search(text):
        return text
    return _NOT_PLAIN.sub(lambda found: _shown(found.group()), text)


# --- play and cat -------------------------------------------------------------------------

# Characters the filter must look at; runs of anything else pass in one slice.
_SPECIAL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_PASSED_C0 = "\n\r\b\t"
# Bidi controls are dropped: the text reads in the order it was written.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# 8-bit C1 introducers, read as their 7-bit ESC forms.
_C1_INTRODUCERS = {"\x9b": "[", "\x9d": "]", "\x90": "P", "\x98": "X", "\x9e": "^",
                   "\x9f": "_"}
# CSI finals passed (no private marker, no intermediates, numeric parameters): cursor
# movement, erase, insert/delete within the screen, scrolling, SGR.
_CSI_PASSED = frozenset("ABCDEFGHJKLMPSTX@`adefm")
# DEC private modes passed with h/l, each undone by reset(): cursor visibility, alternate
# screen, bracketed paste, auto-wrap.
_MODES_PASSED = {"25": "\x1b[?25h", "47": "\x1b[?47l", "1047": "\x1b[?1047l",
                 "1049": "\x1b[?1049l", "2004": "\x1b[?2004l", "7": "\x1b[?7h"}
_MAX_SEQUENCE = 256  # a longer control sequence is dropped whole
# A complete CSI with nothing inside that a terminal would act on mid-sequence: read in one
# match (parameters and intermediates, then the final), else character by character.
_WHOLE_CSI = re.compile(r"\x1b\[([0-?]{0,200}[ -/]{0,16})([@-~])")

# States
_TEXT, _ESC, _CSI, _ESC_INTERMEDIATE, _STRING, _STRING_ESC = range(6)


def _without_conceal(parameters: str) -> str | None:
    """SGR parameters less 8 (conceal): extended colours (38/48/58;5;N or ;2;R;G;B) kept."""
    items = parameters.split(";")
    kept: list[str] = []
    index = 0
    while index < len(items):
        item = items[index]
        if item in ("38", "48", "58") and index + 1 < len(items):
            width = {"5": 2, "2": 4}.get(items[index + 1], 1)
            kept.extend(items[index:index + 1 + width])
            index += 1 + width
            continue
        if item.split(":", 1)[0] != "8":
            kept.append(item)
        index += 1
    if not kept and parameters:
        return None  # only concealment: nothing to pass
    return ";".join(kept)


class SafeFilter:
    """Feed recorded output in pieces; get back only the safe sequences, then `reset()`.

    The state machine follows the shape of a VT500 parser (ground, escape, CSI, escape
    intermediate, control string), so that it ends a sequence where a terminal would: it never
    passes a byte that a terminal would take as part of a dropped sequence.
    """

    def __init__(self, *, strings_end_at_newline: bool = False) -> None:
        # For search: a control string (OSC, DCS, ...) also ends at a carriage return or
        # newline (which then act), so an unterminated one cannot hide the rest of a session.
        self._strings_end_at_newline = strings_end_at_newline
        self._state = _TEXT
        self._sequence: list[str] = []  # the CSI or ESC sequence being read (not strings)
        self._length = 0
        self._string_ends_on_bel = False  # OSC ends on BEL too; DCS, SOS, PM, APC only on ST
        self._set_modes: dict[str, str] = {}
        self._scroll_region = False
        self._charset = False
        self._styled = False

    @property
    def idle(self) -> bool:
        """Whether no sequence is under way (the next text starts fresh)."""
        return self._state == _TEXT

    def feed(self, text: str) -> str:
        """The safe part of the next piece of output."""
        out: list[str] = []
        position = 0
        size = len(text)
        while position < size:
            if self._state == _TEXT:
                found = _SPECIAL.search(text, position)
                if found is None:
                    out.append(text[position:])
                    break
                start = found.start()
                if start > position:
                    out.append(text[position:start])
                whole = _WHOLE_CSI.match(text, start) if text[start] == "\x1b" else None
                if whole is not None:  # a complete CSI in this piece: one C-level match
                    self._finish_csi(whole.group(1), whole.group(2), out)
                    position = whole.end()
                    continue
                self._ground(text[start], out)
                position = start + 1
                continue
            self._step(text[position], out)
            position += 1
        return "".join(out)

    def reset(self) -> str:
        """End of playback: drop an unfinished sequence, undo the colours and modes it passed
        (nothing when it passed none)."""
        self._state = _TEXT
        self._sequence = []
        self._length = 0
        undo = ["\x1b[0m"] if self._styled else []
        if self._scroll_region:
            undo.append("\x1b[r")
        if self._charset:
            undo.append("\x1b(B")
        undo.extend(self._set_modes.values())
        self._set_modes.clear()
        self._scroll_region = self._charset = self._styled = False
        return "".join(undo)

    # -- states ----------------------------------------------------------------------------

    def _ground(self, char: str, out: list[str]) -> None:
        if char in _PASSED_C0:
            out.append(char)
        elif char == "\x1b":
            self._begin(_ESC)
        elif char in _C1_INTRODUCERS:
            self._introduce(_C1_INTRODUCERS[char])
        # every other C0 and C1 control, DEL and bidi control is dropped

    def _begin(self, state: int) -> None:
        self._state = state
        self._sequence = []
        self._length = 0

    def _introduce(self, kind: str) -> None:
        """After ESC (or its 8-bit form): `[` a CSI, `]` an OSC, P X ^ _ other strings."""
        if kind == "[":
            self._begin(_CSI)
        else:
            self._begin(_STRING)
            self._string_ends_on_bel = kind == "]"

    def _step(self, char: str, out: list[str]) -> None:
        code = ord(char)
        if char in "\x18\x1a":  # CAN and SUB cancel any sequence
            self._begin(_TEXT)
            return
        state = self._state
        if state in (_STRING, _STRING_ESC):
            self._in_string(char, out)
            return
        if char == "\x1b":
            self._begin(_ESC)
            return
        if code < 0x20 or 0x80 <= code < 0xA0:
            if char in _C1_INTRODUCERS:
                self._introduce(_C1_INTRODUCERS[char])
            elif char in _PASSED_C0:
                out.append(char)  # a terminal executes C0 controls inside a sequence
            return
        if code == 0x7F:
            return
        self._length += 1
        if state == _ESC:
            self._after_escape(char, out)
        elif state == _CSI:
            self._in_csi(char, out)
        else:
            self._in_escape_intermediate(char, out)

    def _after_escape(self, char: str, out: list[str]) -> None:
        if char in "[]PX^_":
            self._introduce(char)
        elif "\x20" <= char <= "\x2f":
            self._state = _ESC_INTERMEDIATE
            self._sequence = [char]
        else:
            self._state = _TEXT
            if char in "78MDE":  # save/restore cursor, reverse index, index, next line
                out.append("\x1b" + char)

    def _in_escape_intermediate(self, char: str, out: list[str]) -> None:
        if "\x20" <= char <= "\x2f":
            self._sequence.append(char)
            if self._length > _MAX_SEQUENCE:
                self._begin(_TEXT)
            return
        self._state = _TEXT
        if self._sequence == ["("] and char in "B0":  # G0: ASCII or DEC line drawing
            out.append("\x1b(" + char)
            self._charset = char == "0"
        # other charsets, DECALN, C1 mode switches and the rest are dropped

    def _in_csi(self, char: str, out: list[str]) -> None:
        if "\x20" <= char <= "\x3f":
            if self._length > _MAX_SEQUENCE:  # keep consuming, but never pass it
                self._sequence = ["\x00"]
            else:
                self._sequence.append(char)
            return
        self._state = _TEXT
        if "\x40" <= char <= "\x7e":
            self._finish_csi("".join(self._sequence), char, out)
        # anything else ends the sequence malformed: dropped

    def _finish_csi(self, parameters: str, final: str, out: list[str]) -> None:
        if parameters.startswith("?") and final in "hl":
            modes = parameters[1:].split(";")
            if modes and all(mode in _MODES_PASSED for mode in modes):
                out.append(f"\x1b[{parameters}{final}")
                for mode in modes:
                    # auto-wrap (7) and the cursor (25) are on by default, the others off
                    changed = final == "l" if mode in ("7", "25") else final == "h"
                    if changed:
                        self._set_modes[mode] = _MODES_PASSED[mode]
                    else:
                        self._set_modes.pop(mode, None)
            return
        if final == "r" and all(c in "0123456789;" for c in parameters):
            out.append(f"\x1b[{parameters}r")  # scroll region: in the screen, undone at end
            self._scroll_region = parameters not in ("", ";")
            return
        if final not in _CSI_PASSED:
            return
        if final == "m":
            shown = _without_conceal(parameters)
            if shown is not None and all(c in "0123456789;:" for c in parameters):
                out.append(f"\x1b[{shown}m")
                self._styled = True
            return
        if not all(c in "0123456789;" for c in parameters):
            return
        if final == "J" and parameters == "3":  # erasing the scrollback is outside the screen
            return
        out.append(f"\x1b[{parameters}{final}")

    def _in_string(self, char: str, out: list[str]) -> None:
        """Inside OSC, DCS, SOS, PM or APC: everything dropped, up to the terminator."""
        if self._state == _STRING_ESC:
            if char == "\\":
                self._begin(_TEXT)
                return
            # ESC then something else ends the string and starts a new sequence, as in a
            # terminal: that sequence is filtered like any other.
            self._begin(_ESC)
            self._step(char, out)
            return
        if char == "\x1b":
            self._state = _STRING_ESC
        elif char in "\r\n" and self._strings_end_at_newline:
            self._begin(_TEXT)
            out.append(char)
        elif char == "\x9c" or (char == "\x07" and self._string_ends_on_bel):
            self._begin(_TEXT)
