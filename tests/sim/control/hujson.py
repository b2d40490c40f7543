"""A strict HuJSON reader: JSON plus `//` and `/* */` comments and trailing commas, nothing more."""

from __future__ import annotations

import json
from typing import Any


class HuJSONError(ValueError):
    """The text is not HuJSON; the message names the line and column."""


def _position(text: str, index: int) -> str:
    """Return `line L column C` (both 1-based) for an offset into text."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line} column {column}"


def _blank_comments(text: str) -> str:
    """Replace every comment outside strings with spaces, keeping offsets and newlines."""
    out = list(text)
    index = 0
    in_string = False
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "\\":
                index += 2
                continue
            if char == '"':
                in_string = False
            index += 1
            continue
        if char == '"':
            in_string = True
            index += 1
            continue
        if text.startswith("//", index):
            end = text.find("\n", index)
            end = len(text) if end == -1 else end
        elif text.startswith("/*", index):
            close = text.find("*/", index + 2)
            if close == -1:
                raise HuJSONError(f"unterminated /* comment at {_position(text, index)}")
            end = close + 2
        else:
            index += 1
            continue
        for blank in range(index, end):
            if out[blank] != "\n":
                out[blank] = " "
        index = end
    return "".join(out)


def _drop_trailing_commas(text: str) -> str:
    """Blank each comma that follows a value and precedes `]` or `}` (text has no comments)."""
    out = list(text)
    in_string = False
    last_significant = ""
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "\\":
                index += 2
                continue
            if char == '"':
                in_string = False
                last_significant = '"'
            index += 1
            continue
        if char == '"':
            in_string = True
        elif char == "," and last_significant not in ("", "[", "{", ",", ":"):
            following = text[index + 1 :].lstrip(" \t\r\n")
            if following[:1] in ("]", "}"):
                out[index] = " "
                index += 1
                continue
        if not char.isspace():
            last_significant = char
        index += 1
    return "".join(out)


def _refuse_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which Python's json accepts but JSON does not."""
    raise HuJSONError(f"{name} is not valid JSON")


def standardize(text: str) -> str:
    """Return text as plain JSON with the same offsets, or raise HuJSONError."""
    return _drop_trailing_commas(_blank_comments(text))


def loads(text: str) -> Any:
    """Parse HuJSON text into Python values, raising HuJSONError on anything that is not HuJSON."""
    plain = standardize(text)
    try:
        return json.loads(plain, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise HuJSONError(f"invalid HuJSON: {error.msg} at {_position(text, error.pos)}") from None
    except RecursionError:
        # Go's decoders refuse such input too ("exceeded max depth"); answer it as bad input,
        # not as a simulator crash.
        raise HuJSONError("invalid HuJSON: exceeded max depth") from None
