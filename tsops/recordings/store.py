"""Where recordings are: a local directory or an S3 bucket (boto3 client passed in).

Keys are relative to the destination, `<stable node ID>/<name>.cast` as tsrecorder files them
(reference section 2). Every read is counted, so benchmarks and tests can check how many bytes
a command needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tsops.errors import TsopsError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1 << 20


class StoreError(TsopsError):
    """The destination cannot be listed or read (exit 1).

    From S3, `code` is S3's error code ("" when S3 was not reached) and `reason` what S3 or the
    transport said, for callers that explain a refusal in their own words.
    """

    def __init__(self, message: str, code: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or message


class RecordingMissing(UsageError):
    """No recording has the ID an operator gave (exit 2)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One recording file: its key below the destination and its size in bytes."""

    key: str
    size: int
    modified: float | None = None  # seconds since the epoch, when the listing tells
    recorder: str = ""  # the recorder host it was read from ("" for S3 or a local directory)

    @property
    def node(self) -> str:
        """The stable node ID of the SSH server: the directory the recording is filed under."""
        return self.key.split("/", 1)[0]


@dataclass(frozen=True)
class Unread:
    """What a listing left out: a file that cannot be a recording (its name, its type), or a
    whole recorder that could not be read (`key` is then "")."""

    key: str
    kind: str
    detail: str
    recorder: str = ""


class Store(Protocol):
    """The one seam to where recordings are kept."""

    description: str

    def list(self) -> Iterator[ObjectInfo]:
        """Every `<node>/<name>.cast` below the destination, in key order."""

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start`."""

    def read_tail(self, key: str, length: int) -> bytes:
        """The last `length` bytes (the whole file when it is shorter)."""

    def chunks(self, key: str) -> Iterator[bytes]:
        """The whole file as a stream of chunks (constant memory)."""

    @property
    def bytes_read(self) -> int:
        """Bytes read from recordings so far."""


@runtime_checkable
class ReportsUnread(Protocol):
    """A store whose listing can leave things out (recorder hosts): what and why."""

    def unread(self) -> list[Unread]:
        """What the last listing left out."""


def is_recording_key(key: str) -> bool:
    """Whether a relative key is where tsrecorder files a recording: `<node>/<name>.cast`."""
    node, _, name = key.partition("/")
    return bool(node) and bool(name) and "/" not in name and name.endswith(".cast")


class _Counter:
    """A thread-safe byte counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, count: int) -> None:
        with self._lock:
            self.value += count


class LocalStore:
    """Recordings in a local directory (tsrecorder's `--dst /path`)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise UsageError(f"{root}: not a directory")
        self.root = root
        self.description = str(root)
        self._read = _Counter()

    @property
    def bytes_read(self) -> int:
        """Bytes read from recordings so far."""
        return self._read.value

    def list(self) -> Iterator[ObjectInfo]:
        """Every `<node>/<name>.cast` below the directory, in key order."""
        try:
            nodes = [entry for entry in os.scandir(self.root) if entry.is_dir()]
        except OSError as error:
            raise StoreError(f"cannot list {self.root}: {error}") from None
        for node in sorted(nodes, key=lambda entry: entry.name):
            try:
                files = sorted(os.scandir(node.path), key=lambda entry: entry.name)
            except OSError as error:
                raise StoreError(f"cannot list {node.path}: {error}") from None
            for entry in files:
                if entry.name.endswith(".cast") and entry.is_file():
                    stat = entry.stat()
                    yield ObjectInfo(f"{node.name}/{entry.name}", stat.st_size, stat.st_mtime)

    def _path(self, key: str) -> Path:
        if not is_recording_key(key):
            raise RecordingMissing(f"{key}: not a recording key (expected NODE/NAME.cast)")
        return self.root / key

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start`."""
        with self._path(key).open("rb") as file:
            file.seek(start)
            data = file.read(length)
        self._read.add(len(data))
        return data

    def read_tail(self, key: str, length: int) -> bytes:
        """The last `length` bytes (the whole file when it is shorter)."""
        with self._path(key).open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - length))
            data = file.read(length)
        self._read.add(len(data))
        return data

    def chunks(self, key: str) -> Iterator[bytes]:
        """The whole file as a stream of 1 MiB chunks."""
        with self._path(key).open("rb") as file:
            while chunk := file.read(CHUNK):
                self._read.add(len(chunk))
                yield chunk


class S3Store:
    """Recordings in an S3 bucket, below an optional prefix, read with the client given."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.description = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._read = _Counter()

    @property
    def bytes_read(self) -> int:
        """Bytes read from recordings so far."""
        return self._read.value

    def _failed(self, action: str, error: Exception) -> StoreError:
        from tsops.s3 import error_code, explain

        kind, why, _ = explain(error)  # one line with the remedy; credential problems exit 2
        failed = StoreError(f"cannot {action} {self.description}: {why}", error_code(error),
                            str(error))
        failed.exit_code = kind.exit_code
        return failed

    def list(self, node: str = "") -> Iterator[ObjectInfo]:
        """Every `<node>/<name>.cast` below the prefix (only `node`'s when given), in key order
        (S3 lists keys sorted)."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self.prefix + (f"{node}/" if node else "")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix):]
                    if is_recording_key(key):
                        yield ObjectInfo(key, item["Size"], item["LastModified"].timestamp())
        except (BotoCoreError, ClientError) as error:
            raise self._failed("list", error) from None

    def _get(self, key: str, byte_range: str | None = None) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        if not is_recording_key(key):
            raise RecordingMissing(f"{key}: not a recording key (expected NODE/NAME.cast)")
        try:
            if byte_range is None:
                response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            else:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=self.prefix + key, Range=byte_range)
            body = response["Body"]
            try:
                for chunk in body.iter_chunks(CHUNK):
                    self._read.add(len(chunk))
                    yield chunk
            finally:
                body.close()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "InvalidRange":  # an empty object has no byte 0
                return
            if code in ("NoSuchKey", "404"):
                raise RecordingMissing(f"no recording {key} in {self.description}") from None
            raise self._failed(f"read {key} from", error) from None
        except BotoCoreError as error:
            raise self._failed(f"read {key} from", error) from None

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start` (one ranged GET)."""
        return b"".join(self._get(key, f"bytes={start}-{start + length - 1}"))

    def read_tail(self, key: str, length: int) -> bytes:
        """The last `length` bytes (one suffix-ranged GET)."""
        return b"".join(self._get(key, f"bytes=-{length}"))

    def chunks(self, key: str) -> Iterator[bytes]:
        """The whole object as a stream of 1 MiB chunks."""
        return self._get(key)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split `s3://bucket[/prefix]` into bucket and prefix; raise UsageError when malformed."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket or not all(c.isalnum() or c in ".-" for c in bucket):
        raise UsageError(f"{url}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")
