"""A concrete syntax tree for HuJSON that prints back byte for byte, and span-local edits.

HuJSON is JSON plus `//` and `/* */` comments and a trailing comma after a value, nothing more
(reference section 4). Every node keeps its source offsets and the exact text around it
("trivia": whitespace and comments), so that `print_tree(parse(text)) == text` and an edit
replaces or inserts only the bytes it owns. Anything JSON5 adds (single quotes, bare keys, hex,
NaN) is refused, as the Tailscale API refuses it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tsops.errors import ExitCode, TsopsError

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_WHITESPACE = " \t\r\n"
MAX_DEPTH = 64  # a policy file nests about 6 deep; this stops far before Python's recursion limit


class HuJSONError(TsopsError):
    """The text is not HuJSON; `line` and `column` (1-based) say where."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, line: int, column: int, source: str = "") -> None:
        super().__init__(f"{source}{':' if source else ''}{line}:{column}: {message}")
        self.reason = message
        self.line = line
        self.column = column


@dataclass
class Scalar:
    """A string, number, true, false or null, with its exact source text."""

    raw: str
    value: Any
    start: int
    end: int


@dataclass
class Element:
    """One array item: the trivia before it, the value, the trivia before its comma."""

    before: str
    value: Node
    after: str
    comma: bool

    @property
    def end(self) -> int:
        """Offset just past the value, its trailing trivia and its comma."""
        return self.value.end + len(self.after) + (1 if self.comma else 0)


@dataclass
class Member:
    """One object member: `before "key" before_colon : after_colon value after ,`."""

    before: str
    key_raw: str
    key: str
    key_start: int
    before_colon: str
    after_colon: str
    value: Node
    after: str
    comma: bool

    @property
    def end(self) -> int:
        """Offset just past the value, its trailing trivia and its comma."""
        return self.value.end + len(self.after) + (1 if self.comma else 0)


@dataclass
class Array:
    """`[` elements tail `]`; `tail` is the trivia after the last comma (or all of it if empty)."""

    start: int
    end: int
    elements: list[Element] = field(default_factory=list)
    tail: str = ""


@dataclass
class Object:
    """`{` members tail `}`; `tail` is the trivia after the last comma (or all of it if empty)."""

    start: int
    end: int
    members: list[Member] = field(default_factory=list)
    tail: str = ""

    def get(self, key: str) -> Member | None:
        """The member named `key` (the last one if repeated, as the Go decoder keeps)."""
        found = None
        for member in self.members:
            if member.key == key:
                found = member
        return found


Node = Scalar | Array | Object


@dataclass
class Document:
    """A whole HuJSON text: trivia, one value, trivia."""

    text: str
    before: str
    value: Node
    after: str


def position(text: str, offset: int) -> tuple[int, int]:
    """Return (line, column), both 1-based, of an offset into text."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


class _Parser:
    """A recursive-descent parser that records every byte into the tree."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, message: str, offset: int | None = None) -> HuJSONError:
        line, column = position(self.text, self.pos if offset is None else offset)
        return HuJSONError(message, line, column)

    def trivia(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in _WHITESPACE:
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = len(text) if newline < 0 else newline
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = close + 2
            else:
                break
        return text[start:self.pos]

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def document(self) -> Document:
        if self.text.startswith("\ufeff"):
            raise self.fail("a byte order mark is not allowed")
        before = self.trivia()
        if not self.peek():
            raise self.fail("expected a value, found the end of the text")
        value = self.value()
        after = self.trivia()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r} after the value")
        return Document(self.text, before, value, after)

    def value(self) -> Node:
        char = self.peek()
        if char in ("{", "["):
            if self.depth >= MAX_DEPTH:
                raise self.fail(f"nested more than {MAX_DEPTH} levels deep")
            self.depth += 1
            node = self.object() if char == "{" else self.array()
            self.depth -= 1
            return node
        if char == '"':
            start = self.pos
            raw, value = self.string()
            return Scalar(raw, value, start, self.pos)
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                start = self.pos
                self.pos += len(word)
                self.no_word_follows(start)
                return Scalar(word, literal, start, self.pos)
        match = _NUMBER.match(self.text, self.pos)
        if match:
            start = self.pos
            self.pos = match.end()
            self.no_word_follows(start)
            raw = match.group()
            number: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            return Scalar(raw, number, start, self.pos)
        if not char:
            raise self.fail("expected a value, found the end of the text")
        raise self.fail(f"expected a value, found {char!r}")

    def no_word_follows(self, start: int) -> None:
        char = self.peek()
        if char and (char.isalnum() or char in "._+-"):
            raise self.fail(f"invalid value starting {self.text[start:self.pos + 1]!r}", start)

    def string(self) -> tuple[str, str]:
        start = self.pos
        self.pos += 1
        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.fail("unterminated string", start)
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                break
            if char == "\\":
                self.pos += 2
            elif char < " ":
                raise self.fail("control character in a string (escape it)")
            else:
                self.pos += 1
        raw = text[start:self.pos]
        try:
            decoded: str = json.loads(raw)
        except ValueError as error:
            raise self.fail("invalid escape in a string", start) from error
        return raw, decoded

    def array(self) -> Array:
        start = self.pos
        self.pos += 1
        node = Array(start, start)
        while True:
            before = self.trivia()
            if self.peek() == "]":
                node.tail = before
                break
            value = self.value()
            after = self.trivia()
            char = self.peek()
            if char == ",":
                self.pos += 1
                node.elements.append(Element(before, value, after, True))
            elif char == "]":
                node.elements.append(Element(before, value, after, False))
                break
            else:
                raise self.fail(f"expected ',' or ']' in an array, found {_shown(char)}")
        self.pos += 1
        node.end = self.pos
        return node

    def object(self) -> Object:
        start = self.pos
        self.pos += 1
        node = Object(start, start)
        while True:
            before = self.trivia()
            char = self.peek()
            if char == "}":
                node.tail = before
                break
            if char != '"':
                raise self.fail(f"expected a quoted key or '}}', found {_shown(char)}")
            key_start = self.pos
            key_raw, key = self.string()
            before_colon = self.trivia()
            if self.peek() != ":":
                raise self.fail(f"expected ':' after the key, found {_shown(self.peek())}")
            self.pos += 1
            after_colon = self.trivia()
            value = self.value()
            after = self.trivia()
            char = self.peek()
            member = Member(before, key_raw, key, key_start, before_colon, after_colon, value,
                            after, char == ",")
            node.members.append(member)
            if char == ",":
                self.pos += 1
            elif char == "}":
                break
            else:
                raise self.fail(f"expected ',' or '}}' in an object, found {_shown(char)}")
        self.pos += 1
        node.end = self.pos
        return node


def _shown(char: str) -> str:
    return repr(char) if char else "the end of the text"


def parse(text: str) -> Document:
    """Parse HuJSON text into a tree; raise HuJSONError naming line and column."""
    return _Parser(text).document()


def print_node(node: Node) -> str:
    """The exact source text of a node, rebuilt from the tree."""
    if isinstance(node, Scalar):
        return node.raw
    if isinstance(node, Array):
        inner = "".join(e.before + print_node(e.value) + e.after + ("," if e.comma else "")
                        for e in node.elements)
        return "[" + inner + node.tail + "]"
    inner = "".join(
        m.before + m.key_raw + m.before_colon + ":" + m.after_colon + print_node(m.value)
        + m.after + ("," if m.comma else "")
        for m in node.members
    )
    return "{" + inner + node.tail + "}"


def print_tree(document: Document) -> str:
    """The exact text of a document, rebuilt from the tree (the identity on parsed text)."""
    return document.before + print_node(document.value) + document.after


def to_python(node: Node) -> Any:
    """The plain value of a node (dicts, lists, str, int, float, bool, None)."""
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Array):
        return [to_python(e.value) for e in node.elements]
    return {m.key: to_python(m.value) for m in node.members}


def loads(text: str) -> Any:
    """Parse HuJSON text into plain values."""
    return to_python(parse(text).value)


def comments(trivia: str) -> list[str]:
    """The comments inside a stretch of trivia, each with its `//` or `/* */`."""
    found: list[str] = []
    index = 0
    while index < len(trivia):
        if trivia.startswith("//", index):
            end = trivia.find("\n", index)
            end = len(trivia) if end < 0 else end
            found.append(trivia[index:end].rstrip("\r"))
            index = end
        elif trivia.startswith("/*", index):
            end = trivia.index("*/", index + 2) + 2
            found.append(trivia[index:end])
            index = end
        else:
            index += 1
    return found


def all_comments(node: Node | Document) -> list[str]:
    """Every comment in a tree, in source order."""
    if isinstance(node, Document):
        return [*comments(node.before), *all_comments(node.value), *comments(node.after)]
    if isinstance(node, Scalar):
        return []
    found: list[str] = []
    if isinstance(node, Array):
        for element in node.elements:
            found += comments(element.before) + all_comments(element.value)
            found += comments(element.after)
    else:
        for member in node.members:
            found += comments(member.before) + comments(member.before_colon)
            found += comments(member.after_colon) + all_comments(member.value)
            found += comments(member.after)
    return found + comments(node.tail)


@dataclass(frozen=True)
class Splice:
    """Replace text[start:end] with `text`; an insertion has start == end."""

    start: int
    end: int
    text: str


def apply_splices(text: str, splices: list[Splice]) -> str:
    """Apply non-overlapping splices to text; everything outside them is kept byte for byte."""
    ordered = sorted(splices, key=lambda s: (s.start, s.end))
    out: list[str] = []
    cursor = 0
    for splice in ordered:
        if splice.start < cursor:
            raise ValueError(f"overlapping edits at offset {splice.start}")
        out.append(text[cursor:splice.start])
        out.append(splice.text)
        cursor = splice.end
    out.append(text[cursor:])
    return "".join(out)
