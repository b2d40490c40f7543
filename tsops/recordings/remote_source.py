"""Recordings in a local directory on each recorder host, read over SSH and merged.

With `storage.destination` a directory, tsrecorder writes on its own host; the operator's
machine has none of it. This store reads every recorder's directory through tsops's SSH layer
(tsops.remote, `sudo -n` per the host's settings): a listing is one command per host, run on
all recorders at once, and a recording's bytes are one command per read, streamed.

The listing carries what `list` needs from each file (tsops.recordings.catalog): the whole of a
file up to WHOLE bytes, else its first HEAD and last TAIL bytes, the same bytes `list` reads
from S3. The catalog's reads are then answered from those bytes without another round trip.
The script uses POSIX sh and GNU coreutils and findutils (stat, head, tail, find), a constant
number of processes per few thousand files (`find -exec ... +`), and frames its output so that
no file can break it:

- names travel NUL-terminated (no name holds a NUL); one that is not valid UTF-8, holds a
  control or format character, or is not `NODE/NAME.cast` is reported and never read;
- contents are cut by each file's size from `stat` and end at a random boundary chosen for this
  listing (a file written earlier cannot hold it); the sizes, mtimes and ctimes are read again
  after the contents, and a file that changed in between (a session being recorded) is listed
  with its new size and read on demand instead;
- symbolic links are never followed (`find` without -L; a read refuses a link or special file)
  and are reported, as are other non-files named like recordings;
- recently written files (RECENT_MINUTES) are listed without contents: they are still growing.
"""

from __future__ import annotations

import secrets
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tsops.recordings.catalog import HEAD, TAIL, WHOLE
from tsops.recordings.store import (
    ObjectInfo,
    RecordingMissing,
    StoreError,
    Unread,
    _Counter,
    is_recording_key,
)

if TYPE_CHECKING:
    from tsops.inventory.load import Target

MAGIC = b"TSOPS-LISTING 1\n"
RECENT_MINUTES = 2  # files modified this recently are still being written: no contents cached
CHANNELS = 8  # SSH channels at once per recorder (OpenSSH allows 10 sessions per connection)
MISSING_EXIT = 44  # a read found no file at the key
NOT_A_FILE_EXIT = 45  # a read found a link or a special file at the key
TYPES = {"d": "directory", "l": "symbolic link", "p": "named pipe", "s": "socket",
         "b": "block device", "c": "character device", "D": "door"}


class HostReader(Protocol):
    """What the store needs of a recorder connection: tsops.remote.Remote, or a test's fake."""

    target: Target

    @property
    def name(self) -> str:
        """The inventory name of the host."""

    def stream(self, script: str, *, privileged: bool = True,
               what: str = "a command") -> Iterator[bytes]: ...

    def close(self) -> None: ...


def listing_script(directory: str, boundary: str) -> str:
    """The one command that lists a recorder's directory (see the module's docstring)."""

    def stat(tag: str) -> str:
        return f"stat --printf '{tag}%s %.9Y %.9Z %n\\0' -- \"$@\" 2>/dev/null"

    def batch(kind: str, head: int, tail: int) -> str:
        steps = [f"printf 'B{kind}\\0'", stat("S"), "printf 'H\\0'"]
        if head:
            steps.append(f"head -q -c {head} -- \"$@\" 2>/dev/null")
        steps += [f"printf '%s' {boundary}", "printf 'T\\0'"]
        if tail:
            steps.append(f"tail -q -c {tail} -- \"$@\" 2>/dev/null")
        steps += [f"printf '%s' {boundary}", stat("A"), "exit 0"]
        return shlex.quote("\n".join(steps))

    casts = "find . -mindepth 2 -maxdepth 2 -name '*.cast'"
    # One threshold for every find; settled files first, then recent ones: a file that changes
    # between two finds is listed twice (the parser keeps its last entry), never missed.
    recent = '-newermt "$since"'
    return "\n".join([
        "LC_ALL=C; export LC_ALL",
        f"cd -- {shlex.quote(directory)} || exit 3",
        f"since=@$(( $(date +%s) - {RECENT_MINUTES * 60} ))",
        f"printf '{MAGIC.decode().strip()}\\n'",
        "rc=0",
        "find . -mindepth 1 -maxdepth 1 -type l -printf 'L%P\\0' || rc=1",
        f"{casts} ! -type f -printf 'N%y%P\\0' || rc=1",
        f"{casts} -type f ! {recent} -size -{WHOLE + 1}c "
        f"-exec sh -c {batch('whole', WHOLE, 0)} tsops {{}} + || rc=1",
        f"{casts} -type f ! {recent} -size +{WHOLE}c "
        f"-exec sh -c {batch('ends', HEAD, TAIL)} tsops {{}} + || rc=1",
        f"{casts} -type f {recent} -exec sh -c {batch('recent', 0, 0)} tsops {{}} + || rc=1",
        "printf 'E%d\\0' $rc",
        "exit $rc",
    ]) + "\n"


@dataclass
class Listed:
    """One recording as a listing found it, with the bytes it carried."""

    key: str
    size: int
    modified: float | None
    stat: tuple[int, int, int]  # size, mtime and ctime in ns: a version for export
    recorder: str = ""
    head: bytes = b""  # the first len(head) bytes
    tail: bytes = b""  # the last len(tail) bytes

    def cached(self, start: int, length: int) -> bytes | None:
        """Bytes [start, start + length) from what the listing carried, or None."""
        end = min(start + length, self.size)
        if start >= end:
            return b""
        if end <= len(self.head):
            return self.head[start:end]
        tail_start = self.size - len(self.tail)
        if self.tail and start >= tail_start:
            return self.tail[start - tail_start:end - tail_start]
        if self.tail and len(self.head) >= tail_start:  # head and tail meet
            return (self.head[:tail_start] + self.tail)[start:end]
        return None


@dataclass
class Listing:
    """What one recorder's listing found."""

    recorder: str
    entries: dict[str, Listed] = field(default_factory=dict)  # by key
    unread: list[Unread] = field(default_factory=list)
    complete: bool = False  # the end marker came, with status 0


class ListingError(ValueError):
    """The output is not what listing_script prints (cut off, or another program's)."""


def shown_name(raw: bytes) -> str:
    """A file name for messages: undecodable bytes as \\xNN (controls are shown by the CLI)."""
    return raw.decode("utf-8", "backslashreplace")


def key_of(raw: bytes) -> str | None:
    """The recording key of a listed path (`./NODE/NAME.cast`), or None when it is not a name
    tsrecorder writes: not UTF-8, a character that is not printable, not NODE/NAME.cast."""
    try:
        key = raw.removeprefix(b"./").decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not key.isprintable():  # control, format, separator (but space) characters
        return None
    if key.startswith("-") or not is_recording_key(key):
        return None
    return key


def _ns(text: bytes) -> int:
    """`1796196009.115651947` as nanoseconds."""
    whole, _, fraction = text.partition(b".")
    return int(whole) * 1_000_000_000 + int((fraction + b"000000000")[:9] or b"0")


def _until(data: bytes, pos: int, end: bytes) -> tuple[bytes, int]:
    found = data.find(end, pos)
    if found < 0:
        raise ListingError("the listing was cut off")
    return data[pos:found], found + len(end)


Stat = tuple[int, int, int]


def _stats(data: bytes, pos: int, tag: int) -> tuple[list[tuple[bytes, Stat, bytes]], int]:
    """Consecutive `<tag>SIZE MTIME CTIME NAME\\0` records: (name, stat, mtime text)."""
    found = []
    while pos < len(data) and data[pos] == tag:
        record, pos = _until(data, pos + 1, b"\0")
        parts = record.split(b" ", 3)
        if len(parts) != 4 or not parts[0].isdigit():
            raise ListingError("a malformed stat record")
        found.append((parts[3], (int(parts[0]), _ns(parts[1]), _ns(parts[2])), parts[1]))
    return found, pos


def _expected(kind: bytes, size: int) -> tuple[int, int]:
    """How many bytes of a file of `size` a batch of `kind` prints: head, tail."""
    if kind == b"whole":
        return min(size, WHOLE), 0
    if kind == b"ends":
        return min(size, HEAD), min(size, TAIL)
    return 0, 0


def parse_listing(data: bytes, boundary: bytes, recorder: str) -> Listing:
    """Read listing_script's output (pure); ListingError when it is not that or cut off."""
    if not data.startswith(MAGIC):
        raise ListingError("not the output of tsops's listing script")
    listing = Listing(recorder)
    pos = len(MAGIC)
    while pos < len(data):
        tag, pos = data[pos], pos + 1
        if tag == ord("L"):
            name, pos = _until(data, pos, b"\0")
            listing.unread.append(Unread(shown_name(name), "symlink", "a symbolic link at the "
                                         "top of the directory: not followed", recorder))
        elif tag == ord("N"):
            kind, (name, pos) = chr(data[pos]), _until(data, pos + 1, b"\0")
            listing.unread.append(Unread(shown_name(name), "not-a-file", f"a "
                                         f"{TYPES.get(kind, 'special file')} named like a "
                                         "recording: not read", recorder))
        elif tag == ord("B"):
            pos = _batch(data, pos, boundary, listing)
        elif tag == ord("E"):
            status, pos = _until(data, pos, b"\0")
            listing.complete = status == b"0"
            if pos != len(data):
                raise ListingError("output after the end of the listing")
            return listing
        else:
            raise ListingError(f"an unknown record at byte {pos - 1}")
    raise ListingError("the listing was cut off")


def _batch(data: bytes, pos: int, boundary: bytes, listing: Listing) -> int:
    kind, pos = _until(data, pos, b"\0")
    before, pos = _stats(data, pos, ord("S"))
    if data[pos:pos + 2] != b"H\0":
        raise ListingError("a batch without its contents")
    heads, pos = _until(data, pos + 2, boundary)
    if data[pos:pos + 2] != b"T\0":
        raise ListingError("a batch without its ends")
    tails, pos = _until(data, pos + 2, boundary)
    after_records, pos = _stats(data, pos, ord("A"))
    after = {name: (stat, mtime) for name, stat, mtime in after_records}
    lengths = [_expected(kind, stat[0]) for _, stat, _ in before]
    # Contents are cut by the sizes read before them; when the lengths do not add up (a file
    # vanished or grew between stat and read), nothing of this batch is taken from them.
    trusted = (sum(h for h, _ in lengths) == len(heads)
               and sum(t for _, t in lengths) == len(tails))
    head_at = tail_at = 0
    for (name, stat, _), (head_length, tail_length) in zip(before, lengths, strict=True):
        head = heads[head_at:head_at + head_length]
        tail = tails[tail_at:tail_at + tail_length]
        head_at, tail_at = head_at + head_length, tail_at + tail_length
        if name not in after:
            continue  # gone since it was found
        now, mtime = after[name]
        key = key_of(name)
        if key is None:
            listing.unread.append(Unread(shown_name(name.removeprefix(b"./")), "bad-name",
                                         "not a name tsrecorder writes (NODE/NAME.cast, "
                                         "printable UTF-8): not read", listing.recorder))
            continue
        same = trusted and now == stat
        listing.entries.pop(key, None)  # listed twice (it changed between finds): the later
        listing.entries[key] = Listed(key, now[0], float(mtime), now, listing.recorder,
                                      head if same else b"", tail if same else b"")
    return pos


class RecorderHostsStore:
    """Recordings in a directory on each recorder host, read over SSH and merged by key.

    A recorder that cannot be read is reported (`unread`, key "") and the others are still
    listed; `failures` names them for the caller's exit code.
    """

    def __init__(self, directory: str, remotes: Sequence[HostReader], concurrency: int = 32,
                 boundary: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        if not remotes:
            raise ValueError("no recorder hosts")
        self.directory = directory.rstrip("/") or "/"
        self.remotes = {remote.name: remote for remote in remotes}
        self.concurrency = concurrency
        self.description = f"{self.directory} on {', '.join(self.remotes)}"
        self._boundary = boundary
        self._channels = {name: threading.BoundedSemaphore(CHANNELS) for name in self.remotes}
        self._lock = threading.Lock()
        self._entries: dict[str, Listed] = {}
        self._unread: list[Unread] = []
        self._listed = False
        self._read = _Counter()

    @property
    def bytes_read(self) -> int:
        """Bytes of recordings handed out so far (from the listing's bytes or read)."""
        return self._read.value

    def unread(self) -> list[Unread]:
        """What the last listing left out: files that cannot be recordings, duplicates, and
        recorders that could not be read (key "")."""
        with self._lock:
            return list(self._unread)

    def failures(self) -> list[Unread]:
        """The recorders the last listing could not read (wholly or partly)."""
        return [u for u in self.unread() if not u.key]

    def list(self) -> Iterator[ObjectInfo]:
        """Every `<node>/<name>.cast` of every recorder, in key order (one command per host,
        all hosts at once)."""
        self.refresh()
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.key)
        for entry in entries:
            yield ObjectInfo(entry.key, entry.size, entry.modified, entry.recorder)

    def refresh(self) -> None:
        """List every recorder again."""
        from tsops.runner import Runner

        remotes = list(self.remotes.values())
        by_target = {remote.target.name: remote for remote in remotes}
        listings = Runner(self.concurrency).each(
            [remote.target for remote in remotes],
            lambda target: self._list_host(by_target[target.name]))
        entries: dict[str, Listed] = {}
        unread: list[Unread] = []
        for listing in listings:  # in inventory order: the first recorder's copy is read
            unread += listing.unread
            for entry in listing.entries.values():
                first = entries.get(entry.key)
                if first is not None:
                    unread.append(Unread(entry.key, "duplicate", f"also on recorder "
                                         f"{first.recorder}, whose copy is read",
                                         entry.recorder))
                    continue
                entries[entry.key] = entry
        with self._lock:
            self._entries, self._unread, self._listed = entries, unread, True

    def _list_host(self, remote: HostReader) -> Listing:
        from tsops.remote import CommandFailed, HostUnreachable

        boundary = self._boundary()
        chunks: list[bytes] = []
        failed: CommandFailed | None = None
        try:
            with self._channels[remote.name]:
                for chunk in remote.stream(listing_script(self.directory, boundary),
                                           what=f"listing {self.directory}"):
                    chunks.append(chunk)
        except HostUnreachable as error:
            return Listing(remote.name, unread=[Unread("", "unreachable", error.reason,
                                                       remote.name)])
        except CommandFailed as error:
            failed = error
        data = b"".join(chunks)
        try:
            listing = parse_listing(data, boundary.encode(), remote.name)
        except ListingError as error:
            detail = _failure(failed) if failed is not None else str(error)
            return Listing(remote.name, unread=[Unread("", "unreadable", f"listing "
                                                       f"{self.directory}: {detail}",
                                                       remote.name)])
        if not listing.complete:
            detail = _failure(failed) if failed is not None else "find reported an error"
            listing.unread.insert(0, Unread("", "incomplete", f"listing {self.directory}: "
                                            f"{detail}; the recordings found are listed",
                                            remote.name))
        return listing

    def _entry(self, key: str) -> Listed:
        if not is_recording_key(key):
            raise RecordingMissing(f"{key}: not a recording key (expected NODE/NAME.cast)")
        with self._lock:
            listed, entry = self._listed, self._entries.get(key)
        if entry is None and not listed:
            self.refresh()
            with self._lock:
                entry = self._entries.get(key)
        if entry is None:
            raise RecordingMissing(f"no recording {key} in {self.description}")
        return entry

    def _stream(self, key: str, body: str, what: str) -> Iterator[bytes]:
        """One command reading `key` on its recorder (never a link or a special file)."""
        from tsops.remote import CommandFailed, HostUnreachable

        entry = self._entry(key)
        remote = self.remotes[entry.recorder]
        where = f"{key} on recorder {entry.recorder}"
        try:
            with self._channels[entry.recorder]:
                for chunk in remote.stream(read_script(self.directory, key, body),
                                           what=f"reading {key}"):
                    self._read.add(len(chunk))
                    yield chunk
        except HostUnreachable as error:
            raise StoreError(f"cannot read {where}: {error.reason}") from None
        except CommandFailed as error:
            if error.result.exited == MISSING_EXIT:
                raise RecordingMissing(f"no recording {where} any more") from None
            raise StoreError(f"cannot read {where}: {_failure(error)}") from None

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start`: from the listing's bytes, else one
        command."""
        cached = self._entry(key).cached(start, length)
        if cached is not None:
            self._read.add(len(cached))
            return cached
        return b"".join(self._stream(
            key, f'tail -c +{start + 1} -- "$f" | head -c {length}', f"reading {key}"))

    def read_tail(self, key: str, length: int) -> bytes:
        """The last `length` bytes (the whole file when it is shorter)."""
        entry = self._entry(key)
        cached = entry.cached(max(0, entry.size - length), length)
        if cached is not None:
            self._read.add(len(cached))
            return cached
        return b"".join(self._stream(key, f'tail -c {length} -- "$f"', f"reading {key}"))

    def chunks(self, key: str) -> Iterator[bytes]:
        """The whole file, streamed by one command."""
        return self._stream(key, 'exec cat -- "$f"', f"reading {key}")

    def stat(self, key: str) -> tuple[int, int, int]:
        """Size, mtime and ctime (ns) of a recording as last listed (a version's stat)."""
        return self._entry(key).stat

    def close(self) -> None:
        """Close every recorder connection."""
        for remote in self.remotes.values():
            remote.close()


def read_script(directory: str, key: str, body: str) -> str:
    """A command that runs `body` on the regular file at `key` ("$f"), refusing a link, a
    special file or a key whose directory is a link."""
    return (f"cd -- {shlex.quote(directory)} || exit 3\n"
            f"f={shlex.quote(key)}\n"
            "if [ ! -e \"$f\" ] && [ ! -L \"$f\" ]; then echo 'no such file' >&2; "
            f"exit {MISSING_EXIT}; fi\n"
            "if [ -L \"$f\" ] || [ -L \"${f%/*}\" ] || [ ! -f \"$f\" ]; then "
            "echo 'a symbolic link or a special file: not read' >&2; "
            f"exit {NOT_A_FILE_EXIT}; fi\n"
            f"{body}\n")


def _failure(error: object) -> str:
    """`exit N: last line of stderr` of a CommandFailed."""
    from tsops.remote import CommandFailed

    assert isinstance(error, CommandFailed)
    lines = (error.result.stderr.strip() or error.result.stdout.strip()).splitlines()
    return f"exit {error.result.exited}: {lines[-1] if lines else 'no output'}"
