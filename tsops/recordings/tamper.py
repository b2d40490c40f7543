"""Tampering: a recording key in the bucket with more than one version.

tsrecorder writes each recording once, to a key of its own (`<node ID>/<time>.cast`) and never
deletes one. In a versioned bucket a second version of such a key, or a delete marker, is an
overwrite or a deletion by someone else: the forged or missing file is what every reader sees,
and the original survives only as a noncurrent version. `status`, `verify` and `recordings
verify` report such keys (exit 3). tsops's own canaries (render.WRITE_CHECK_PREFIX) are
rewritten on purpose and are not recordings.

`findings()` is pure (a listing in, findings out); `list_versions()` is the one S3 call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tsops.recordings.store import S3Store, StoreError, is_recording_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# The key prefix of tsops's health-gate canaries (tsops.recorders.render.WRITE_CHECK_PREFIX;
# not imported, so reading recordings does not load the recorder's renderers).
CANARY_PREFIX = "tsops-canary/"


@dataclass(frozen=True)
class VersionEntry:
    """One item of a version listing: an object version or a delete marker."""

    key: str
    version_id: str
    delete_marker: bool = False
    latest: bool = False
    modified: float | None = None


@dataclass(frozen=True)
class Tampered:
    """A recording key with more than one version (delete markers counted), or deleted."""

    key: str
    versions: int
    delete_markers: int
    deleted: bool  # the latest entry is a delete marker: readers no longer see the recording

    def line(self) -> str:
        """One line naming the key and what was found."""
        markers = f", {self.delete_markers} delete marker(s)" if self.delete_markers else ""
        now = "deleted" if self.deleted else "overwritten"
        return (f"{self.key}: {self.versions} version(s){markers}: {now} after it was "
                "recorded (tsrecorder writes a recording once); the original is a "
                "noncurrent version")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"key": self.key, "versions": self.versions,
                "delete_markers": self.delete_markers, "deleted": self.deleted}


def is_watched(key: str) -> bool:
    """Whether a key (relative to the destination) is a recording tamper detection watches."""
    return is_recording_key(key) and not key.startswith(CANARY_PREFIX)


def findings(entries: Iterable[VersionEntry]) -> list[Tampered]:
    """Every recording key with more than one entry or any delete marker, in key order."""
    by_key: dict[str, list[VersionEntry]] = {}
    for entry in entries:
        if is_watched(entry.key):
            by_key.setdefault(entry.key, []).append(entry)
    found = []
    for key in sorted(by_key):
        items = by_key[key]
        markers = sum(1 for e in items if e.delete_marker)
        if len(items) > 1 or markers:
            latest = next((e for e in items if e.latest), None)
            found.append(Tampered(key, len(items) - markers, markers,
                                  latest is not None and latest.delete_marker))
    return found


def entries_of(page: dict[str, Any], prefix: str = "") -> Iterator[VersionEntry]:
    """The versions and delete markers of one ListObjectVersions page, keys made relative."""
    for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
        for item in page.get(kind, []):
            key = str(item["Key"])
            if not key.startswith(prefix):
                continue
            modified = item.get("LastModified")
            yield VersionEntry(key[len(prefix):], str(item.get("VersionId", "null")), marker,
                               bool(item.get("IsLatest")),
                               modified.timestamp() if modified is not None else None)


def list_versions(client: S3Client, bucket: str, prefix: str = "") -> Iterator[VersionEntry]:
    """Every version and delete marker below `prefix`, page by page (s3:ListBucketVersions)."""
    from tsops.s3 import error_code, errors, explain

    paginator = client.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from entries_of(dict(page), prefix)
    except errors() as error:
        kind, why, _ = explain(error)  # one line with the remedy; credential problems exit 2
        failed = StoreError(f"cannot list the versions of s3://{bucket}/{prefix}".rstrip("/")
                            + f": {why}", error_code(error), str(error))
        failed.exit_code = kind.exit_code
        raise failed from None


def tampered(store: S3Store) -> list[Tampered]:
    """The tampered recordings of an S3 store (its prefix respected)."""
    return findings(list_versions(store.client, store.bucket, store.prefix))
