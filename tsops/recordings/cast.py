"""Parse asciicast v2 files as Tailscale SSH writes them: the header, event blocks, plain text.

Pure code over bytes and strings. Events are decoded a block of complete lines at a time (one
json call per block), because a recording holds one line per terminal write, often one character.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

# Terminal escape sequences: CSI, OSC (ended by BEL or ST), charset selection, two-byte ESC
# sequences. The pattern starts with a literal ESC so the regex engine can skip ahead fast.
ESCAPE_RE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"
    r"|\][^\x07\x1b\n]*(?:\x07|\x1b\\)"
    r"|[()*+][0-9A-Za-z]"
    r"|[@-Z\\-_=>78])"
)
# C0 controls other than newline and tab, DEL and the C1 controls (so "\r\n" becomes "\n",
# and no 8-bit control reaches a terminal).
CONTROLS = dict.fromkeys([*range(0, 9), *range(11, 32), *range(127, 160)])
TIME, KIND, TEXT = itemgetter(0), itemgetter(1), itemgetter(2)
MAX_LINE = 64 << 20  # a longer line is not a terminal write: the file is damaged


class CastError(ValueError):
    """A recording that cannot be read as asciicast v2; `kind` names the problem."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Header:
    """The first line of a recording: when, who, from where, what (reference section 3)."""

    timestamp: float
    width: int = 0
    height: int = 0
    command: str = ""
    ssh_user: str = ""
    local_user: str = ""
    src_node: str = ""
    src_node_id: str = ""
    src_node_tags: tuple[str, ...] = ()
    src_node_user: str = ""
    connection_id: str = ""
    term: str = ""

    @property
    def started(self) -> datetime.datetime:
        """The session's start as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.timestamp, datetime.UTC)

    @property
    def source(self) -> str:
        """Who connected: the source node's owner, or its tags when the node is tagged."""
        return self.src_node_user or ",".join(self.src_node_tags)


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CastError("bad-header", f"{key} is not a string")
    return value


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CastError("bad-header", f"{key} is not an integer")
    return value


def parse_header(line: bytes) -> Header:
    """Parse the header line (without its newline); raise CastError naming what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CastError("invalid-utf8", f"header byte {error.start} is not UTF-8") from None
    try:
        raw = json.loads(text)
    except ValueError:
        raise CastError("bad-header", "the first line is not JSON") from None
    if not isinstance(raw, dict):
        raise CastError("bad-header", "the first line is not a JSON object")
    if raw.get("version") != 2:
        raise CastError("bad-header", f"version is {raw.get('version')!r}, expected 2")
    timestamp = raw.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or timestamp < 0:
        raise CastError("bad-header", "timestamp is missing or not a number")
    tags = raw.get("srcNodeTags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise CastError("bad-header", "srcNodeTags is not a list of strings")
    env = raw.get("env") or {}
    term = env.get("TERM", "") if isinstance(env, dict) else ""
    return Header(
        timestamp=float(timestamp), width=_int(raw, "width"), height=_int(raw, "height"),
        command=_text(raw, "command"), ssh_user=_text(raw, "sshUser"),
        local_user=_text(raw, "localUser"), src_node=_text(raw, "srcNode"),
        src_node_id=_text(raw, "srcNodeID"), src_node_tags=tuple(tags),
        src_node_user=_text(raw, "srcNodeUser"), connection_id=_text(raw, "connectionID"),
        term=term if isinstance(term, str) else "",
    )


def _event(value: Any) -> tuple[float, str] | None:
    if (not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], int | float)
            or not isinstance(value[1], str) or not isinstance(value[2], str)):
        raise ValueError("not an asciicast v2 event")
    return (float(value[0]), value[2]) if value[1] == "o" else None


@dataclass
class BlockReport:
    """What was wrong in the event lines seen so far (counts; the file is still read)."""

    bad_lines: int = 0
    invalid_utf8: int = 0


def decode_block(block: bytes, report: BlockReport) -> list[tuple[float, str]]:
    """Decode complete event lines (each ending in a newline) into output events.

    The fast path hands the whole block to one json call; a block with a bad line is redone
    line by line, so one damaged line costs only itself.
    """
    if not block:
        return []
    try:
        values = json.loads(b"[" + block[:-1].replace(b"\n", b",") + b"]")
        # Shape checks with C-level set/map calls: every value a 3-item list, each time a
        # number, each kind and text a string.
        if set(map(type, values)) != {list} or set(map(len, values)) != {3}:
            raise ValueError("not asciicast v2 events")
        if (set(map(type, map(TIME, values))) - {float, int}
                or set(map(type, map(KIND, values))) != {str}
                or set(map(type, map(TEXT, values))) != {str}):
            raise ValueError("not asciicast v2 events")
    except (ValueError, UnicodeDecodeError):
        return _decode_lines(block, report)
    return [(at, text) for at, kind, text in values if kind == "o"]


def _decode_lines(block: bytes, report: BlockReport) -> list[tuple[float, str]]:
    events: list[tuple[float, str]] = []
    for line in block.split(b"\n")[:-1]:
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            report.invalid_utf8 += 1
            text = line.decode("utf-8", errors="replace")
        try:
            event = _event(json.loads(text))
        except ValueError:
            report.bad_lines += 1
            continue
        if event is not None:
            events.append(event)
    return events


@dataclass
class LineBlocks:
    """Split a byte stream into the header line and blocks of complete lines."""

    header: bytes | None = None
    _carry: list[bytes] = field(default_factory=list)
    _carried: int = 0

    @property
    def tail(self) -> bytes:
        """The bytes after the last newline: a line still incomplete."""
        return b"".join(self._carry)

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk; return the complete event lines it finishes (maybe empty)."""
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._carry.append(chunk)
            self._carried += len(chunk)
            if self._carried > MAX_LINE:
                raise CastError("bad-event", f"a line longer than {MAX_LINE} bytes")
            return b""
        block = b"".join([*self._carry, chunk[: cut + 1]])
        rest = chunk[cut + 1:]
        self._carry = [rest] if rest else []
        self._carried = len(rest)
        if self.header is None:
            end = block.index(b"\n")
            self.header = block[:end]
            block = block[end + 1:]
        return block


def strip_controls(text: str) -> str:
    """Remove terminal escape sequences and control characters, keeping newlines and tabs."""
    if "\x1b" in text:
        text = ESCAPE_RE.sub("", text)
    return text.translate(CONTROLS)
