"""The recordings of a destination, read from their first and last bytes only.

`list` must cost the same for a 1 KB and a 5 GB recording: a small file is read whole in one
request; a larger one gives its header from a ranged read of its head (grown only while the
first line is longer) and its duration from a ranged read of its tail.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from tsops.errors import UsageError
from tsops.recordings.cast import (
    HEADER_MAX,
    UNTERMINATED_HEADER,
    V1_DETAIL,
    CastError,
    Header,
    ending_of,
    looks_v1,
    parse_header,
)
from tsops.recordings.store import (
    ObjectInfo,
    RecordingMissing,
    ReportsUnread,
    Store,
    StoreError,
)

WHOLE = 32 << 10  # files up to this size are read in one request
HEAD = 8 << 10
TAIL = 8 << 10
WORKERS = 16

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Problem:
    """A recording that is damaged: its key, what kind of damage, and a detail."""

    key: str
    kind: str
    detail: str
    recorder: str = ""  # the recorder host it is on; with no key, the recorder itself

    def __str__(self) -> str:
        if not self.key:
            return f"{self.kind}: recorder {self.recorder}: {self.detail}"
        where = f" (on recorder {self.recorder})" if self.recorder else ""
        return f"{self.kind}: {self.key}: {self.detail}{where}"


@dataclass(frozen=True)
class Recording:
    """One readable recording: where it is, its header, and what its tail says."""

    key: str
    size: int
    header: Header
    duration: float | None  # time of the last complete event line; None when there is none
    truncated: bool  # the file does not end with one newline after a complete event
    ending: str = ""  # why it counts as truncated (tsops.recordings.cast.judge_end)
    recorder: str = ""  # the recorder host it was read from ("" for S3 or a local directory)

    @property
    def node(self) -> str:
        """The stable node ID of the SSH server it was recorded on."""
        return self.key.split("/", 1)[0]

    @property
    def id(self) -> str:
        """The ID operators type: the key without `.cast`."""
        return self.key.removesuffix(".cast")

    @property
    def started(self) -> datetime.datetime | None:
        """When the session started (UTC); None when the header does not say."""
        return self.header.started


@dataclass(frozen=True)
class Catalog:
    """Every recording found, and every file that could not be read as one."""

    recordings: tuple[Recording, ...]
    problems: tuple[Problem, ...]


def truncation(recording: Recording) -> Problem:
    """The `truncated` problem of a recording that does not end complete."""
    return Problem(recording.key, "truncated", recording.ending or "the last line is incomplete",
                   recording.recorder)


def unread(store: Store) -> list[Problem]:
    """What the store's last listing left out (files that cannot be recordings, recorders not
    reached), as problems; nothing for a store that lists everything or fails whole."""
    if not isinstance(store, ReportsUnread):
        return []
    return [Problem(u.key, u.kind, u.detail, u.recorder) for u in store.unread()]


def parallel(function: Callable[[T], R], items: Iterable[T], workers: int = WORKERS) -> Iterator[R]:
    """Map `function` over `items` on a thread pool, results in input order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(function, items)


def probe(store: Store, info: ObjectInfo) -> Recording | Problem:
    """Read the header and the duration of one recording from its first and last bytes."""
    try:
        found = _probe(store, info)
    except CastError as error:
        return Problem(info.key, error.kind, error.detail, info.recorder)
    except (StoreError, RecordingMissing, OSError) as error:
        return Problem(info.key, "unreadable", str(error), info.recorder)
    return replace(found, recorder=info.recorder) if info.recorder else found


def _probe(store: Store, info: ObjectInfo) -> Recording:
    if info.size == 0:
        raise CastError("empty", "the file is empty")
    head = store.read_range(info.key, 0, info.size if info.size <= WHOLE else HEAD)
    if looks_v1(head):
        raise CastError("asciicast-v1", V1_DETAIL)
    while b"\n" not in head and len(head) < min(info.size, HEADER_MAX + 1):
        head += store.read_range(info.key, len(head), len(head) * 3)
    end = head.find(b"\n")
    if end > HEADER_MAX or (end < 0 and len(head) > HEADER_MAX):
        raise CastError("header-too-long", f"no end of the first line in {HEADER_MAX} bytes")
    if end < 0:  # the whole file is one unterminated line
        return Recording(info.key, info.size, parse_header(head), None, True,
                         UNTERMINATED_HEADER)
    header = parse_header(head[:end])
    events_start = end + 1
    if len(head) == info.size:  # the whole file is in hand
        judged = ending_of(head[events_start:], whole=True)
    else:
        judged = _tail_ending(store, info, events_start)
    assert judged is not None  # a whole read always decides
    duration, ending = judged
    return Recording(info.key, info.size, header, duration, bool(ending), ending)


def _tail_ending(store: Store, info: ObjectInfo,
                 events_start: int) -> tuple[float | None, str] | None:
    """Judge the end from the last TAIL bytes, reading further back only while they hold no
    complete event line (a last write longer than the tail, or a damaged end)."""
    if events_start >= info.size:  # nothing after the header line (and no empty range GET)
        return ending_of(b"", whole=True)
    length = TAIL
    while True:
        start = max(events_start, info.size - length)
        judged = ending_of(store.read_range(info.key, start, info.size - start),
                           whole=start == events_start)
        if judged is not None:
            return judged
        length *= 4


def scan(store: Store, workers: int = WORKERS) -> Catalog:
    """Probe every recording of the store in parallel; damaged files become problems."""
    recordings: list[Recording] = []
    problems: list[Problem] = []
    for result in parallel(lambda info: probe(store, info), store.list(), workers):
        if isinstance(result, Problem):
            problems.append(result)
        else:
            recordings.append(result)
            if result.truncated:
                problems.append(truncation(result))
    return Catalog(tuple(recordings), tuple(unread(store) + problems))


def find(store: Store, recording_id: str) -> ObjectInfo:
    """The recording with this ID (`NODE/NAME`, `.cast` optional), or RecordingMissing."""
    key = recording_id if recording_id.endswith(".cast") else recording_id + ".cast"
    node = key.split("/", 1)[0]
    for info in store.list():
        if info.key == key:
            return info
        if info.node > node:
            break
    failures = [p for p in unread(store) if not p.key]
    if failures:  # perhaps on a recorder not read: not the operator's mistake
        raise StoreError(f"no recording {recording_id} in {store.description} as read; not "
                         "read: " + "; ".join(str(p) for p in failures))
    raise RecordingMissing(f"no recording {recording_id} in {store.description}")


RELATIVE_RE = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, option: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """Parse an ISO 8601 date or time (UTC unless it says otherwise) or an age like 24h or 7d."""
    now = now or datetime.datetime.now(datetime.UTC)
    match = RELATIVE_RE.match(text.strip())
    if match:
        return now - datetime.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: expected an ISO 8601 date or time (2026-11-25, "
            "2026-11-25T14:00:00Z) or an age such as 30m, 24h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Filter:
    """Which recordings a command looks at; an empty filter keeps every one."""

    nodes: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    command: str | None = None
    # kubectl sessions (Tailscale's Kubernetes API server proxy); each repeatable, exact
    pods: tuple[str, ...] = ()  # POD or NAMESPACE/POD
    namespaces: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    session_types: tuple[str, ...] = ()  # ssh, exec, attach

    def keeps(self, recording: Recording, names: dict[str, str] | None = None) -> bool:
        """Whether the recording passes every condition given."""
        header = recording.header
        if not self._keeps_kubernetes(header):
            return False
        if self.nodes:
            known = {recording.node, (names or {}).get(recording.node, "")}
            if not known & set(self.nodes):
                return False
        if self.users and not {header.ssh_user, header.local_user,
                               header.src_node_user} & set(self.users):
            return False
        started = recording.started  # a recording with no start passes no time bound
        if self.since is not None and (started is None or started < self.since):
            return False
        if self.until is not None and (started is None or started >= self.until):
            return False
        return self.command is None or self.command in header.command

    def _keeps_kubernetes(self, header: Header) -> bool:
        if self.pods and not {header.pod, f"{header.namespace}/{header.pod}"} & set(self.pods):
            return False
        if self.namespaces and header.namespace not in self.namespaces:
            return False
        if self.containers and header.container not in self.containers:
            return False
        session_type = header.session_type if header.kubectl else "ssh"
        return not self.session_types or session_type in self.session_types


def _start(recording: Recording) -> float:
    """The start for sorting: recordings without one come first."""
    return -1.0 if recording.header.timestamp is None else recording.header.timestamp


SORT_KEYS: dict[str, Callable[[Recording], tuple[object, ...]]] = {
    "start": lambda r: (_start(r), r.key),
    "node": lambda r: (r.node, _start(r)),
    "user": lambda r: (r.header.ssh_user, _start(r)),
    "duration": lambda r: (r.duration or 0.0, r.key),
    "size": lambda r: (r.size, r.key),
}


def duration_text(seconds: float | None) -> str:
    """A recording's length as H:MM:SS ("-" when unknown), as the list and the review UI show it."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def size_text(size: int) -> str:
    """A size in bytes as people read it: 512 B, 1.5 KiB, 3.2 MiB."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
