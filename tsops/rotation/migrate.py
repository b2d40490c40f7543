"""Copy every recording from the old destination to the new bucket, verified, resumable.

Each recording is read once from the source (hashed on the way), written under the same key
`<node ID>/<name>.cast`, read back and hashed again: it counts as copied only when both SHA-256
digests agree. What was verified is appended to a record file (mode 0600 in a 0700 directory),
so a rerun after an interruption skips it without reading it again; a recording already at the
destination but not in the record is read at both ends and compared. The source is only read:
nothing here writes to or deletes from it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from tsops.errors import ExitCode, TsopsError
from tsops.inventory.model import Storage
from tsops.probe import Probe, ProbeFailed
from tsops.recordings.store import S3Store, StoreError, is_recording_key
from tsops.remote import RemoteLike

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

SPOOL_BYTES = 8 << 20  # a recording larger than this goes through a temporary file
BATCH_BYTES = 4 << 20  # small files read over SSH together, up to this much per round trip
BATCH_FILES = 200
RECORD_FORMAT = 1
Say = Callable[[str], None]


class MigrationError(TsopsError):
    """The migration could not start or read its record (exit 1)."""


@dataclass(frozen=True)
class SourceObject:
    """One recording at the source: its key, size, digest when the source knows it, host."""

    key: str
    size: int
    sha256: str | None = None
    host: str = ""


@dataclass
class Fetched:
    """A recording read from the source into a spooled file, with its digests."""

    item: SourceObject
    file: IO[bytes]
    sha256: str
    md5_b64: str
    size: int


class RecordingSource(Protocol):
    """Where recordings are copied from (read only): a bucket, or recorder hosts' directories."""

    description: str

    def objects(self) -> list[SourceObject]:
        """Every recording, `<node>/<name>.cast`."""

    def batches(self, items: list[SourceObject]) -> list[list[SourceObject]]:
        """How the items are read: one per request, or several per round trip."""

    def fetch(self, batch: list[SourceObject]) -> Iterator[Fetched]:
        """Read a batch; each recording spooled and hashed."""


class RecordingTarget(Protocol):
    """Where recordings are copied to (the new bucket), and read back to be verified."""

    description: str

    def listing(self) -> dict[str, int]:
        """Every recording key already there, with its size."""

    def put(self, fetched: Fetched) -> None:
        """Write one recording under its key."""

    def sha256(self, key: str) -> str:
        """The SHA-256 of a recording as read back."""


def spool(chunks: Iterable[bytes]) -> tuple[IO[bytes], str, str, int]:
    """Stream chunks into a spooled temporary file; its SHA-256, base64 MD5 and size."""
    file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    for chunk in chunks:
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
        file.write(chunk)
    file.seek(0)
    return file, sha.hexdigest(), base64.b64encode(md5.digest()).decode(), size


class S3Source:
    """Recordings in a bucket, read with the operator's credentials (the recordings store)."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.store = S3Store(client, bucket)
        self.description = self.store.description

    def objects(self) -> list[SourceObject]:
        """Every recording key and size (ListObjectsV2, every page)."""
        try:
            return [SourceObject(info.key, info.size) for info in self.store.list()]
        except StoreError as error:
            raise MigrationError(error.message) from error

    def batches(self, items: list[SourceObject]) -> list[list[SourceObject]]:
        """One GET per recording."""
        return [[item] for item in items]

    def fetch(self, batch: list[SourceObject]) -> Iterator[Fetched]:
        """GET each recording, streamed into a spooled file."""
        for item in batch:
            file, sha, md5, size = spool(self.store.chunks(item.key))
            yield Fetched(item, file, sha, md5, size)


class SshSource:
    """Recordings in a local directory on each recorder host, read over SSH (root, read only)."""

    def __init__(self, directory: str, remotes: dict[str, RemoteLike]) -> None:
        self.directory = directory.rstrip("/") or "/"
        self.remotes = remotes
        self.locks = {name: threading.Lock() for name in remotes}
        self.description = f"{self.directory} on {', '.join(sorted(remotes))}"

    def _run(self, host: str, probe: Probe[T]) -> T:
        with self.locks[host]:
            try:
                return probe.run(self.remotes[host])
            except ProbeFailed as error:
                raise MigrationError(error.message) from error

    def _reading(self, script: str, parse: Callable[[str], T]) -> Probe[T]:
        return Probe(f"reading {self.directory}", script, parse, must_succeed=True)

    def objects(self) -> list[SourceObject]:
        """Keys, sizes and SHA-256 digests from each host, one round trip each."""
        found: list[SourceObject] = []
        for host in sorted(self.remotes):
            found += self._run(host, self._reading(listing_script(self.directory),
                                                   functools.partial(parse_listing, host)))
        return found

    def batches(self, items: list[SourceObject]) -> list[list[SourceObject]]:
        """Small files of one host together (up to 4 MiB, 200 files); large ones alone."""
        batches: list[list[SourceObject]] = []
        current: list[SourceObject] = []
        size = 0
        for item in sorted(items, key=lambda i: (i.host, i.key)):
            if current and (current[0].host != item.host or size + item.size > BATCH_BYTES
                            or len(current) >= BATCH_FILES):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            batches.append(current)
        return batches

    def fetch(self, batch: list[SourceObject]) -> Iterator[Fetched]:
        """Read a batch in one round trip (base64), or a large file in 4 MiB ranges."""
        host = batch[0].host
        if len(batch) == 1 and batch[0].size > BATCH_BYTES:
            item = batch[0]
            file, sha, md5, size = spool(self._ranges(item))
            yield Fetched(item, file, sha, md5, size)
            return
        contents = self._run(host, self._reading(
            read_script(self.directory, [i.key for i in batch]), parse_read))
        for item in batch:
            if item.key not in contents:
                raise MigrationError(f"{host}: {item.key} was not read")
            file, sha, md5, size = spool([contents[item.key]])
            yield Fetched(item, file, sha, md5, size)

    def _ranges(self, item: SourceObject) -> Iterator[bytes]:
        path = shlex.quote(f"{self.directory}/{item.key}")
        offset = 0
        while offset < item.size:
            script = (f"tail -c +{offset + 1} -- {path} | head -c {BATCH_BYTES} "
                      "| base64 -w0\n")
            data = self._run(item.host, self._reading(script, base64.b64decode))
            if not data:
                return
            offset += len(data)
            yield data


def listing_script(directory: str) -> str:
    """Sizes then digests of `<dir>/*/*.cast` (nothing when the directory is missing)."""
    where = shlex.quote(directory)
    return (f"cd {where} 2>/dev/null || exit 0\n"
            "find . -mindepth 2 -maxdepth 2 -type f -name '*.cast' -printf 'S %s %P\\n'\n"
            "find . -mindepth 2 -maxdepth 2 -type f -name '*.cast' -exec sha256sum {} + "
            "| sed 's/^/H /'\n")


def parse_listing(host: str, output: str) -> list[SourceObject]:
    """Read listing_script's output (pure)."""
    sizes: dict[str, int] = {}
    digests: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("S "):
            size, _, key = line[2:].partition(" ")
            sizes[key] = int(size)
        elif line.startswith("H "):
            match = re.match(r"^H ([0-9a-f]{64}) [ *]\./(.+)$", line)
            if match:
                digests[match.group(2)] = match.group(1)
    return [SourceObject(key, size, digests.get(key), host)
            for key, size in sorted(sizes.items()) if is_recording_key(key)]


def read_script(directory: str, keys: list[str]) -> str:
    """Print each key on a line, then its bytes in base64 on the next."""
    names = " ".join(shlex.quote(k) for k in keys)
    return (f"set -e\ncd {shlex.quote(directory)}\n"
            f"for f in {names}; do printf '%s\\n' \"$f\"; base64 -w0 -- \"$f\"; "
            "printf '\\n'; done\n")


def parse_read(output: str) -> dict[str, bytes]:
    """Read read_script's output (pure)."""
    lines = output.split("\n")
    return {lines[i]: base64.b64decode(lines[i + 1]) for i in range(0, len(lines) - 1, 2)
            if lines[i]}


# Above this size a recording goes up (or is copied) in parts, as S3 needs beyond 5 GiB for a
# single PUT; parts of 64 MiB keep a 500 GiB recording within S3's 10,000 parts.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 64 * 1024 * 1024


class BucketTarget:
    """The new bucket: list what is there, upload (or copy in place), read back and hash.

    Below the threshold a write is one PUT with Content-MD5; above it, boto3's managed transfer
    makes a multipart upload whose every part carries a SHA-256 checksum (an Object Lock bucket
    requires one or the other of a write, and either lets S3 refuse corrupted bytes). When the
    source is a bucket behind the same endpoint, `copy_from` names it and a recording above the
    threshold is copied server-side in parts (UploadPartCopy), so its bytes are not uploaded
    from the operator's machine; a small one is PUT, since its bytes were read to be hashed.
    """

    def __init__(self, client: S3Client, bucket: str, *, copy_from: str | None = None,
                 threshold: int = MULTIPART_THRESHOLD, chunk: int = MULTIPART_CHUNK) -> None:
        self.client = client
        self.bucket = bucket
        self.copy_from = copy_from
        self.store = S3Store(client, bucket)
        self.description = self.store.description
        self.threshold, self.chunk = threshold, chunk

    def listing(self) -> dict[str, int]:
        """Every recording key already there, with its size."""
        try:
            return {info.key: info.size for info in self.store.list()}
        except StoreError as error:
            raise MigrationError(error.message) from error

    def put(self, fetched: Fetched) -> None:
        """Upload (or copy server-side) one recording, in parts above the threshold."""
        from tsops.s3 import transfer_config

        config = transfer_config(self.threshold, self.chunk)
        extra = {"ContentType": "application/x-asciicast", "ChecksumAlgorithm": "SHA256"}
        key = fetched.item.key
        fetched.file.seek(0)
        if fetched.size < self.threshold:
            # One PUT with Content-MD5, which every S3 accepts for an Object Lock bucket.
            self.client.put_object(Bucket=self.bucket, Key=key, Body=fetched.file,
                                   ContentMD5=fetched.md5_b64,
                                   ContentType="application/x-asciicast")
            return
        if self.copy_from is not None:
            self.client.copy({"Bucket": self.copy_from, "Key": key}, self.bucket, key,
                             ExtraArgs={**extra, "MetadataDirective": "REPLACE"}, Config=config)
            return
        self.client.upload_fileobj(fetched.file, self.bucket, key, ExtraArgs=extra,
                                   Config=config)

    def sha256(self, key: str) -> str:
        """The SHA-256 of the object as read back."""
        digest = hashlib.sha256()
        for chunk in self.store.chunks(key):
            digest.update(chunk)
        return digest.hexdigest()


def state_dir() -> Path:
    """Where rotation records are kept: $XDG_STATE_HOME (~/.local/state)/tsops/rotations."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "tsops" / "rotations"


@dataclass
class MigrationRecord:
    """A rotation's source and every recording verified at the destination (JSON lines)."""

    path: Path
    source: Storage
    source_hosts: tuple[str, ...]
    target: str
    verified: dict[str, tuple[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, directory: Path, inventory: Path, source: Storage,
               source_hosts: tuple[str, ...], target: str) -> MigrationRecord:
        """Start a record for this inventory, source and target (an existing one is kept)."""
        path = record_path(directory, inventory, source.destination, target)
        if path.exists():
            return cls.read(path)
        _private_dir(directory)
        header = {"format": RECORD_FORMAT, "inventory": str(inventory.resolve()),
                  "source": source.model_dump(mode="json", exclude_defaults=True),
                  "source_hosts": list(source_hosts), "target": target,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
        return cls(path, source, source_hosts, target)

    @classmethod
    def read(cls, path: Path) -> MigrationRecord:
        """Load a record; a torn last line (a run killed mid-write) is ignored."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            header = json.loads(lines[0])
            source = Storage.model_validate(header["source"])
        except (OSError, ValueError, IndexError, KeyError) as error:
            raise MigrationError(f"{path}: not a readable rotation record ({error}); move it "
                                 "away to start the migration afresh") from error
        record = cls(path, source, tuple(header.get("source_hosts", ())), header["target"])
        for line in lines[1:]:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                record.verified[entry["key"]] = (entry["sha256"], int(entry["size"]))
        return record

    @classmethod
    def find(cls, directory: Path, inventory: Path, target: str) -> MigrationRecord | None:
        """The newest record of this inventory whose target is `target`, if any."""
        if not directory.is_dir():
            return None
        prefix = inventory_id(inventory)
        found = sorted(directory.glob(f"{prefix}-*.jsonl"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        for path in found:
            record = cls.read(path)
            if record.target == target:
                return record
        return None

    @classmethod
    def find_from(cls, directory: Path, inventory: Path, source: str) -> MigrationRecord | None:
        """The newest record of this inventory whose source is `source`, if any."""
        if not directory.is_dir():
            return None
        candidates = []
        for record_file in directory.glob("*.jsonl"):
            record = cls.read(record_file)
            if record.source.destination.rstrip("/") == source.rstrip("/") and \
                    record_file.name.startswith(inventory_id(inventory)):
                candidates.append((record_file.stat().st_mtime, record))
        return max(candidates, key=lambda c: c[0])[1] if candidates else None

    def add(self, key: str, sha256: str, size: int) -> None:
        """Append one verified recording (flushed at once: an interruption keeps it)."""
        line = json.dumps({"key": key, "sha256": sha256, "size": size}) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
            self.verified[key] = (sha256, size)


def inventory_id(inventory: Path) -> str:
    """The prefix of this inventory's record files."""
    return hashlib.sha256(str(inventory.resolve()).encode()).hexdigest()[:12]


def record_path(directory: Path, inventory: Path, source: str, target: str) -> Path:
    """The record file of one rotation of one inventory."""
    pair = hashlib.sha256(f"{source}\n{target}".encode()).hexdigest()[:12]
    return directory / f"{inventory_id(inventory)}-{pair}.jsonl"


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)


@dataclass
class MigrationReport:
    """Counts and bytes of one migration run."""

    source: str
    destination: str
    total: int = 0
    total_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def exit_code(self) -> ExitCode:
        """1 when any recording failed to copy or verify."""
        return ExitCode.FAILED if self.failed else ExitCode.OK

    def summary(self) -> str:
        """One line for the operator."""
        return (f"migration {self.source} -> {self.destination}: {self.total} recording(s), "
                f"{_size(self.total_bytes)}: {self.copied} copied ({_size(self.copied_bytes)}), "
                f"{self.present} already present, {len(self.failed)} failed, "
                f"in {self.seconds:.1f} s")

    def as_json(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"source": self.source, "destination": self.destination, "total": self.total,
                "total_bytes": self.total_bytes, "copied": self.copied,
                "copied_bytes": self.copied_bytes, "already_present": self.present,
                "failed": [{"key": k, "reason": r} for k, r in self.failed],
                "seconds": round(self.seconds, 3)}


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return f"{count} B"


# A long migration says how far it got this often (a line on stderr, also in CI logs).
PROGRESS_EVERY_S = 30.0


def migrate(source: RecordingSource, destination: RecordingTarget, record: MigrationRecord, *,
            workers: int = 8, say: Say = lambda message: None) -> MigrationReport:
    """Copy what is missing, verify every copy, and append each verified one to the record."""
    started = time.monotonic()
    report = MigrationReport(source.description, destination.description)
    items = source.objects()
    present = destination.listing()
    report.total = len(items)
    report.total_bytes = sum(i.size for i in items)
    todo: list[SourceObject] = []
    for item in items:
        known = record.verified.get(item.key)
        if known is not None and known[1] == item.size and present.get(item.key) == item.size \
                and (item.sha256 is None or item.sha256 == known[0]):
            report.present += 1
        else:
            todo.append(item)
    say(f"migration: {len(items)} recording(s) at {source.description}, {report.present} "
        f"verified before, {len(todo)} to copy or check")
    stop = threading.Event()

    def work(batch: list[SourceObject]) -> None:
        if stop.is_set():
            return
        try:
            for fetched in source.fetch(batch):
                with fetched.file:
                    _copy_one(fetched, destination, present, record, report)
        except Exception as error:  # one batch's failure must not stop the others
            with report._lock:
                done = {k for k, _ in report.failed} | set(record.verified)
                report.failed += [(i.key, _reason(error)) for i in batch if i.key not in done]

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    last_said = time.monotonic()
    try:
        pending: set[Future[None]] = {pool.submit(work, b) for b in source.batches(todo)}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a worker's KeyboardInterrupt or SystemExit stops the run
            if pending and time.monotonic() - last_said >= PROGRESS_EVERY_S:
                last_said = time.monotonic()
                say(f"migration: {report.copied + report.present} of {report.total} done "
                    f"({_size(report.copied_bytes)} copied, {len(report.failed)} failed), "
                    f"{time.monotonic() - started:.0f} s")
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        report.seconds = time.monotonic() - started
        say(f"interrupted: {report.summary()}; what was verified is kept in {record.path}: "
            "rerun to copy only what is missing")
        raise
    pool.shutdown(wait=True)
    report.seconds = time.monotonic() - started
    return report


def _copy_one(fetched: Fetched, destination: RecordingTarget, present: dict[str, int],
              record: MigrationRecord, report: MigrationReport) -> None:
    item = fetched.item
    if item.sha256 is not None and fetched.sha256 != item.sha256:
        raise MigrationError(f"{item.key} changed while it was read (a session still being "
                             "written?); rerun to copy it")
    if item.key in present:
        if destination.sha256(item.key) != fetched.sha256:
            raise MigrationError(f"a different {item.key} is already at "
                                 f"{destination.description}; not overwritten")
        record.add(item.key, fetched.sha256, fetched.size)
        with report._lock:
            report.present += 1
        return
    destination.put(fetched)
    back = destination.sha256(item.key)
    if back != fetched.sha256:
        raise MigrationError(f"{item.key}: read back with SHA-256 {back[:12]}..., sent "
                             f"{fetched.sha256[:12]}...")
    record.add(item.key, fetched.sha256, fetched.size)
    with report._lock:
        report.copied += 1
        report.copied_bytes += fetched.size


def _reason(error: Exception) -> str:
    if isinstance(error, TsopsError):
        return error.message
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
        return f"S3: {code}: {response.get('Error', {}).get('Message', '')}".rstrip(": ")
    return f"{type(error).__name__}: {error}"
