"""Parse asciicast v2 files as tsrecorder stores them: the header, event blocks, plain text.

Pure code over bytes and strings. Events are decoded a block of complete lines at a time (one
json call per block), because a recording holds one line per terminal write, often one character.

Every reader judges a file with the functions here, so they agree with each other and with the
bytes: `is_event`/`event_time` say what an event line is, `judge_end` whether the file ends
complete (the one definition of "truncated"), `looks_v1` names an asciicast v1 file.
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
HEADER_MAX = 1 << 20  # a longer first line is not a header
V1_WINDOW = 4 << 10  # how much of a file's start is looked at to name an asciicast v1 file
V1_VERSION_RE = re.compile(rb'"version"\s*:\s*1\s*[,}\r\n]')
KUBERNETES_KEYS = ("PodName", "Namespace", "Container", "SessionType")

# Why a recording counts as truncated (the detail of its `truncated` problem).
UNTERMINATED_EVENT = "the last event has no final newline"
INCOMPLETE_LINE = "the last line is incomplete"
BLANK_END = "the file ends with blank lines"
NOT_AN_EVENT_END = "the last line is not an event"
UNTERMINATED_HEADER = "the header line has no final newline"


class CastError(ValueError):
    """A recording that cannot be read as asciicast v2; `kind` names the problem."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Header:
    """The first line of a recording: when, who, from where, what (reference section 3)."""

    timestamp: float | None  # None when the header has none (optional in asciicast v2)
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
    # Set only for `kubectl exec`/`attach` sessions recorded by Tailscale's Kubernetes API
    # server proxy (the header's `kubernetes` object); the SSH fields above are then empty.
    pod: str = ""
    namespace: str = ""
    container: str = ""
    session_type: str = ""
    kubectl: bool = False

    @property
    def kind(self) -> str:
        """What was recorded: `ssh`, or `kubectl-exec`/`kubectl-attach` (`kubectl` if unnamed)."""
        if not self.kubectl:
            return "ssh"
        return f"kubectl-{self.session_type}" if self.session_type else "kubectl"

    @property
    def started(self) -> datetime.datetime | None:
        """The session's start as an aware UTC datetime; None when the header does not say."""
        if self.timestamp is None:
            return None
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | str) -> Any:
    """json.loads as RFC 8259 has it: NaN and Infinity are refused, as Go writes neither."""
    return json.loads(data, parse_constant=_no_constant)


def _kubernetes(raw: dict[str, Any]) -> dict[str, str]:
    """The `kubernetes` object's fields, matched without regard to case as Go's decoder does
    (tsrecorder's Go struct has no JSON tags, so the keys are `PodName`, `Namespace`, ...)."""
    value = raw.get("kubernetes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CastError("bad-header", "kubernetes is not an object")
    fields = {}
    for name, item in value.items():
        for known in KUBERNETES_KEYS:
            if name.lower() == known.lower():
                if not isinstance(item, str):
                    raise CastError("bad-header", f"kubernetes.{name} is not a string")
                fields[known] = item
    return fields


def looks_v1(start: bytes) -> bool:
    """Whether a file's first bytes (V1_WINDOW of them) are an asciicast v1 document: one JSON
    object (often spread over many lines) with `"version": 1` and its frames in `stdout`."""
    window = start[:V1_WINDOW]
    if not window.lstrip().startswith(b"{") or V1_VERSION_RE.search(window) is None:
        return False
    try:  # a v2 header line can mention "version": 1 only inside a string, but be sure
        first = loads(window.split(b"\n", 1)[0])
    except (ValueError, UnicodeDecodeError):
        return True
    return not (isinstance(first, dict) and first.get("version") == 2)


V1_DETAIL = ("an asciicast v1 file (one JSON document with stdout frames); tsrecorder "
             "writes v2 and tsops reads only v2 (asciinema convert makes a v2 file)")


def parse_header(line: bytes) -> Header:
    """Parse the header line (without its newline); raise CastError naming what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CastError("invalid-utf8", f"header byte {error.start} is not UTF-8") from None
    try:
        raw = loads(text)
    except ValueError:
        raise CastError("bad-header", "the first line is not JSON") from None
    if not isinstance(raw, dict):
        raise CastError("bad-header", "the first line is not a JSON object")
    if raw.get("version") == 1 and "stdout" in raw:
        raise CastError("asciicast-v1", V1_DETAIL)
    if raw.get("version") != 2:
        raise CastError("bad-header", f"version is {raw.get('version')!r}, expected 2")
    timestamp = raw.get("timestamp")
    if timestamp is not None and (not isinstance(timestamp, int | float)
                                  or isinstance(timestamp, bool) or not 0 <= timestamp < 1e11):
        raise CastError("bad-header", "timestamp is not a number of seconds since 1970")
    tags = raw.get("srcNodeTags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise CastError("bad-header", "srcNodeTags is not a list of strings")
    env = raw.get("env") or {}
    term = env.get("TERM", "") if isinstance(env, dict) else ""
    kubernetes = _kubernetes(raw)
    return Header(
        timestamp=None if timestamp is None else float(timestamp),
        width=_int(raw, "width"), height=_int(raw, "height"),
        command=_text(raw, "command"), ssh_user=_text(raw, "sshUser"),
        local_user=_text(raw, "localUser"), src_node=_text(raw, "srcNode"),
        src_node_id=_text(raw, "srcNodeID"), src_node_tags=tuple(tags),
        src_node_user=_text(raw, "srcNodeUser"), connection_id=_text(raw, "connectionID"),
        term=term if isinstance(term, str) else "",
        pod=kubernetes.get("PodName", ""), namespace=kubernetes.get("Namespace", ""),
        container=kubernetes.get("Container", ""),
        session_type=kubernetes.get("SessionType", ""),
        kubectl=raw.get("kubernetes") is not None,
    )


def is_event(value: Any) -> bool:
    """Whether a decoded line is an asciicast v2 event: [time, kind, text], of any kind."""
    return (isinstance(value, list) and len(value) == 3 and type(value[0]) in (int, float)
            and isinstance(value[1], str) and isinstance(value[2], str))


def _event(value: Any) -> tuple[float, str] | None:
    if not is_event(value):
        raise ValueError("not an asciicast v2 event")
    return (float(value[0]), value[2]) if value[1] == "o" else None


def event_time(line: bytes) -> float | None:
    """The time of an event line (without its newline), None when it is not an event.

    Invalid UTF-8 inside the text does not stop a line being an event (readers show U+FFFD).
    """
    try:
        value = loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return float(value[0]) if is_event(value) else None


def judge_end(last_line: bytes | None, rest: bytes) -> str:
    """Why a recording counts as truncated, or "" when it ends complete.

    `last_line` is the last newline-terminated line after the header (None when there is
    none), `rest` the bytes after the file's final newline. A recording is complete when it
    ends with exactly one newline after an event line, or after its header when it has no
    event at all. A last event without its newline is truncated (readers of the text still
    show it; the duration is the event before it), and so are trailing blank lines and a last
    line that is not an event.
    """
    if rest:
        if not rest.strip():
            return BLANK_END
        return UNTERMINATED_EVENT if event_time(rest) is not None else INCOMPLETE_LINE
    if last_line is None:
        return ""
    if not last_line.strip():
        return BLANK_END
    return "" if event_time(last_line) is not None else NOT_AN_EVENT_END


def ending_of(data: bytes, whole: bool) -> tuple[float | None, str] | None:
    """The time of the last complete event and the truncation reason ("" if none), from the
    final bytes of a recording's events: all of them after the header when `whole`, else a
    suffix that may start inside a line. None: the suffix is too short to tell, read more.
    """
    if not whole:
        cut = data.find(b"\n")
        if cut < 0:
            return None
        data = data[cut + 1:]
    lines = data.split(b"\n")
    rest, terminated = lines[-1], lines[:-1]
    if not terminated and not whole:
        return None
    reason = judge_end(terminated[-1] if terminated else None, rest)
    for line in reversed(terminated):
        at = event_time(line)
        if at is not None:
            return at, reason
    return (None, reason) if whole else None


def truncation_of(end: bytes, whole: bool) -> str | None:
    """Why a file counts as truncated ("" if not) from its last bytes, the same verdict as
    `ending_of` gives (for readers that hash rather than parse, as `seal` does). `whole`: the
    bytes are the entire file, header included. None: too few bytes to tell."""
    cut = end.find(b"\n")
    if cut < 0:
        return UNTERMINATED_HEADER if whole else None
    lines = end[cut + 1:].split(b"\n")
    if len(lines) == 1 and not whole and not lines[0]:
        return None  # the last line started before these bytes
    return judge_end(lines[-2] if len(lines) > 1 else None, lines[-1])


@dataclass
class BlockReport:
    """What was wrong in the event lines seen so far (counts; the file is still read), and
    the time of the last complete event of any kind (output, input, resize, marker)."""

    bad_lines: int = 0
    invalid_utf8: int = 0
    last_time: float | None = None


def decode_block(block: bytes, report: BlockReport) -> list[tuple[float, str]]:
    """Decode complete event lines (each ending in a newline) into output events.

    The fast path hands the whole block to one json call; a block with a bad line is redone
    line by line, so one damaged line costs only itself.
    """
    if not block:
        return []
    try:
        values = loads(b"[" + block[:-1].replace(b"\n", b",") + b"]")
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
    if values:
        report.last_time = float(values[-1][0])
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
            value = loads(text)
            event = _event(value)
        except ValueError:
            report.bad_lines += 1
            continue
        report.last_time = float(value[0])
        if event is not None:
            events.append(event)
    return events


@dataclass
class LineBlocks:
    """Split a byte stream into the header line and blocks of complete lines."""

    header: bytes | None = None
    last_line: bytes | None = None  # the last complete line after the header, so far
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
            if self.header is None and self._carried > HEADER_MAX:
                raise CastError("header-too-long",
                                f"no end of the first line in {HEADER_MAX} bytes")
            if self._carried > MAX_LINE:
                raise CastError("bad-event", f"a line longer than {MAX_LINE} bytes")
            return b""
        block = b"".join([*self._carry, chunk[: cut + 1]])
        rest = chunk[cut + 1:]
        self._carry = [rest] if rest else []
        self._carried = len(rest)
        if self.header is None:
            end = block.index(b"\n")
            if end > HEADER_MAX:
                raise CastError("header-too-long",
                                f"no end of the first line in {HEADER_MAX} bytes")
            self.header = block[:end]
            block = block[end + 1:]
        if block:
            self.last_line = block[block.rfind(b"\n", 0, len(block) - 1) + 1:-1]
        return block


def strip_controls(text: str) -> str:
    """Remove terminal escape sequences and control characters, keeping newlines and tabs."""
    if "\x1b" in text:
        text = ESCAPE_RE.sub("", text)
    return text.translate(CONTROLS)
