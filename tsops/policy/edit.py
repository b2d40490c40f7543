"""Span-local edits of a HuJSON tree: insert, replace and remove items in the file's own style."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tsops.policy.hujson import Array, Document, Element, Member, Node, Object, Splice


@dataclass(frozen=True)
class Style:
    """How the file is laid out, so that inserted text looks like its neighbours."""

    newline: str
    unit: str
    trailing_commas: bool
    multiline: bool


@dataclass(frozen=True)
class Item:
    """A new array element (key None) or object member to insert, with an optional marker."""

    value: Any
    key: str | None = None
    marker: str | None = None


@dataclass(frozen=True)
class Marked:
    """An object to render with a marker comment as its first line (e.g. a new ssh rule)."""

    value: dict[str, Any]
    marker: str


def detect_style(document: Document) -> Style:
    """Infer newline, indentation unit and trailing-comma habit from the document.

    The newline is the one most of the file's lines end with (a stray CRLF line pasted into an
    LF file does not make every inserted line CRLF); the file counts as written on one line
    when its value is, whatever newline ends the file.
    """
    text = document.text
    crlf = text.count("\r\n")
    newline = "\r\n" if crlf > text.count("\n") - crlf else "\n"
    unit = ""
    top = document.value
    if isinstance(top, Object):
        for member in top.members:
            candidate = member.before.rsplit("\n", 1)[1] if "\n" in member.before else ""
            if candidate and candidate.strip(" \t") == "":
                unit = candidate
                break
    if not unit or unit.startswith("\t"):
        unit = "\t"
    trailing = _trailing_habit(text, document.value)
    multiline = "\n" in text[top.start:top.end]
    return Style(newline, unit, True if trailing is None else trailing, multiline)


def _trailing_habit(text: str, node: Node) -> bool | None:
    """Whether multi-line containers end with a comma after their last item (None: no sign)."""
    if isinstance(node, Array | Object):
        items: list[Element] | list[Member] = (
            node.elements if isinstance(node, Array) else node.members
        )
        if items and "\n" in text[items[-1].value.end:node.end]:
            return items[-1].comma
        for item in items:
            found = _trailing_habit(text, item.value)
            if found is not None:
                return found
    return None


def line_start(text: str, offset: int) -> int:
    """Offset of the first character of the line holding `offset`."""
    return text.rfind("\n", 0, offset) + 1


def line_indent(text: str, offset: int) -> str:
    """The leading whitespace of the line holding `offset`."""
    start = line_start(text, offset)
    line = text[start:offset]
    return line[: len(line) - len(line.lstrip(" \t"))]


def first_on_line(text: str, offset: int) -> bool:
    """Whether only whitespace precedes `offset` on its line."""
    return text[line_start(text, offset):offset].strip(" \t") == ""


def end_of_line(text: str, offset: int, limit: int) -> int:
    """Skip spaces and same-line comments after `offset`; return the newline found, else offset."""
    index = offset
    while index < limit:
        char = text[index]
        if char in " \t":
            index += 1
        elif text.startswith("//", index):
            newline = text.find("\n", index)
            if newline < 0 or newline > limit:
                return offset
            return newline - 1 if text[newline - 1] == "\r" else newline
        elif text.startswith("/*", index):
            close = text.find("*/", index)
            if "\n" in text[index:close]:
                return offset
            index = close + 2
        elif text.startswith("\r\n", index) or char == "\n":
            return index
        else:
            return offset
    return offset


def render(value: Any, indent: str, style: Style, marker: str | None = None) -> str:
    """Render a value at `indent`: objects and arrays of objects one item per line."""
    if isinstance(value, Marked):
        return render(value.value, indent, style, value.marker)
    if isinstance(value, dict):
        inner = indent + style.unit
        lines = [f"{inner}{marker}"] if marker else []
        keys = list(value)
        for position, key in enumerate(keys):
            comma = "," if position < len(keys) - 1 or style.trailing_commas else ""
            lines.append(f"{inner}{json.dumps(key, ensure_ascii=False)}: "
                         f"{render(value[key], inner, style)}{comma}")
        if not lines:
            return "{}"
        return "{" + style.newline + style.newline.join(lines) + style.newline + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list | Marked) for v in value):
        inner = indent + style.unit
        lines = []
        for position, item in enumerate(value):
            comma = "," if position < len(value) - 1 or style.trailing_commas else ""
            lines.append(f"{inner}{render(item, inner, style)}{comma}")
        return "[" + style.newline + style.newline.join(lines) + style.newline + indent + "]"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def render_compact(value: Any, marker: str | None = None) -> str:
    """Render a value on one line (for containers written on one line)."""
    if isinstance(value, Marked):
        return render_compact(value.value, value.marker)
    if isinstance(value, dict):
        note = f"/* {marker.removeprefix('//').split(' (')[0].strip()} */ " if marker else ""
        return "{" + note + ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {render_compact(v)}" for k, v in value.items()
        ) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render_compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _item_text(item: Item, indent: str, style: Style, compact: bool) -> str:
    value = (render_compact(item.value, item.marker) if compact
             else render(item.value, indent, style, item.marker))
    if item.key is None:
        return value
    return f"{json.dumps(item.key, ensure_ascii=False)}: {value}"


def _starts(node: Array | Object) -> list[int]:
    if isinstance(node, Array):
        return [e.value.start for e in node.elements]
    return [m.key_start for m in node.members]


def insert_last(text: str, node: Array | Object, items: list[Item], style: Style,
                removed: Collection[int] = ()) -> list[Splice]:
    """Splices that append items at the end of a container, in the container's own style.

    `removed` lists the indices of elements that other splices remove: the items go after the
    last element that stays, so that no two splices overlap.
    """
    if not items:
        return []
    existing: list[Element] | list[Member] = (
        [e for i, e in enumerate(node.elements) if i not in removed]
        if isinstance(node, Array) else node.members
    )
    close = node.end - 1
    if not existing:
        indent = line_indent(text, node.start)
        if not style.multiline:
            return [Splice(close, close, ", ".join(_item_text(i, "", style, True) for i in items))]
        inner = indent + style.unit
        comma_last = "," if style.trailing_commas else ""
        body = ("," + style.newline).join(inner + _item_text(i, inner, style, False)
                                          for i in items) + comma_last
        if first_on_line(text, close):
            start = line_start(text, close)
            return [Splice(start, start, body + style.newline)]
        return [Splice(close, close, style.newline + body + style.newline + indent)]
    last = existing[-1]
    starts = [e.value.start for e in existing] if isinstance(node, Array) else _starts(node)
    if "\n" not in text[node.start:starts[0]]:
        compact = ", ".join(_item_text(i, "", style, True) for i in items)
        if last.comma:
            return [Splice(last.end, last.end, f" {compact},")]
        return [Splice(last.value.end, last.value.end, f", {compact}")]
    indent = line_indent(text, starts[-1])
    splices: list[Splice] = []
    if last.comma:
        anchor = last.end
        comma_last = ","
    else:
        splices.append(Splice(last.value.end, last.value.end, ","))
        anchor = last.value.end
        comma_last = ""
    at = end_of_line(text, anchor, close)
    lines = [indent + _item_text(i, indent, style, False) for i in items]
    body = ("," + style.newline).join(lines) + comma_last
    if at == anchor and not last.comma:
        # The new comma sits at `anchor` too: insert the items after it in the same splice.
        splices = [Splice(anchor, anchor, "," + style.newline + body)]
    else:
        splices.append(Splice(at, at, style.newline + body))
    return splices


def replace_value(text: str, node: Node, value: Any, style: Style,
                  marker: str | None = None) -> Splice:
    """A splice that rewrites one value in place, indented like the line it starts on."""
    if first_on_line(text, node.start) or (style.multiline and "\n" in text[node.start:node.end]):
        rendered = render(value, line_indent(text, node.start), style, marker)
    else:
        rendered = render_compact(value, marker)
    return Splice(node.start, node.end, rendered)


def remove_element(text: str, element: Element) -> list[Splice]:
    """Splices that remove one array element and its comma, keeping comments around them.

    The value and its comma are removed separately, so that comments between them stay; each
    takes its whole line with it when nothing else is on that line.
    """
    splices = []
    end = element.value.end
    if element.comma:
        comma = element.value.end + len(element.after)
        if comma == end:
            end += 1
        else:
            splices.append(_span_or_line(text, comma, comma + 1))
    return [_span_or_line(text, element.value.start, end), *splices]


def _span_or_line(text: str, start: int, end: int) -> Splice:
    """Remove text[start:end], or its whole line when only whitespace surrounds it."""
    if first_on_line(text, start):
        rest = re.match(r"[ \t]*\r?\n", text[end:])
        if rest:
            return Splice(line_start(text, start), end + rest.end(), "")
    return Splice(start, end, "")


def insert_after(text: str, node: Array, index: int, items: list[Item],
                 style: Style) -> list[Splice]:
    """Splices that insert items right after element `index`, which is followed by others."""
    if not items:
        return []
    element = node.elements[index]
    assert element.comma, "only an element followed by others"
    close = node.end - 1
    after_next = node.elements[index + 1].value.start
    if "\n" not in text[element.end:after_next]:
        compact = ", ".join(_item_text(i, "", style, True) for i in items)
        return [Splice(element.end, element.end, f" {compact},")]
    indent = line_indent(text, element.value.start)
    at = end_of_line(text, element.end, close)
    lines = [indent + _item_text(i, indent, style, False) + "," for i in items]
    return [Splice(at, at, style.newline + style.newline.join(lines))]


def insert_first(text: str, node: Array, items: list[Item], style: Style) -> list[Splice]:
    """Splices that insert items before the first element of a non-empty array (and before
    the comments above it)."""
    if not items:
        return []
    first = node.elements[0]
    close = node.end - 1
    at = end_of_line(text, node.start + 1, close)
    if at == node.start + 1 and not text.startswith(("\n", "\r\n"), at):
        compact = ", ".join(_item_text(i, "", style, True) for i in items)
        return [Splice(first.value.start, first.value.start, f"{compact}, ")]
    indent = line_indent(text, first.value.start)
    if not first_on_line(text, first.value.start):
        indent = line_indent(text, node.start) + style.unit
    lines = [indent + _item_text(i, indent, style, False) + "," for i in items]
    return [Splice(at, at, style.newline + style.newline.join(lines))]
