"""Seal status per recording, from a manifest `recordings seal` wrote and a trusted key.

The list compares each recording's size with the manifest's (no read); the player page hashes
the one recording shown and compares its SHA-256, as `recordings verify` does for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsops.recordings.catalog import Problem
from tsops.recordings.integrity import (
    Manifest,
    check_signature,
    digest,
    load_manifest,
    load_public_key,
)
from tsops.recordings.store import ObjectInfo, Store


@dataclass(frozen=True)
class SealStatus:
    """What the manifest says of one recording: a short label, a sentence, and whether it is
    good (True), bad (False) or not known (None)."""

    label: str
    detail: str
    good: bool | None


class Seal:
    """A manifest whose signature verified with the trusted key."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.entries: dict[str, dict[str, Any]] = manifest.manifest["recordings"]
        self.sealed_at = str(manifest.manifest.get("sealed_at", ""))
        self.source = str(manifest.manifest.get("source", ""))
        self.path = manifest.path

    @classmethod
    def load(cls, path: Path, public_key: str) -> Seal:
        """Read the manifest and check its signature with the key given (SignatureMismatch,
        exit 3, when it does not verify; ManifestError, exit 2, when it is no manifest)."""
        manifest = load_manifest(path)
        check_signature(manifest.document, load_public_key(public_key), path)
        return cls(manifest)

    def listed(self, key: str, size: int) -> SealStatus:
        """The status from the listing alone: sealed, size changed, or not in the manifest."""
        entry = self.entries.get(key)
        if entry is None:
            return SealStatus("not sealed", f"not in the manifest sealed {self.sealed_at}", None)
        if entry["size"] != size:
            return SealStatus("altered", f"{size} bytes now, {entry['size']} when sealed "
                              f"{self.sealed_at}", False)
        return SealStatus("sealed", f"in the manifest sealed {self.sealed_at} with this size; "
                          "the recording's page checks its SHA-256", True)

    def checked(self, store: Store, info: ObjectInfo) -> SealStatus:
        """The status from the recording's SHA-256, read now (the whole file)."""
        entry = self.entries.get(info.key)
        if entry is None:
            return self.listed(info.key, info.size)
        found = digest(store, info)
        if isinstance(found, Problem):
            return SealStatus("not checked", f"cannot read it to hash it: {found.detail}", None)
        if (found.sha256, found.size) != (entry["sha256"], entry["size"]):
            return SealStatus("altered", f"SHA-256 {found.sha256[:16]}... differs from the "
                              f"manifest sealed {self.sealed_at}", False)
        return SealStatus("intact", f"SHA-256 {found.sha256[:16]}... as sealed "
                          f"{self.sealed_at}", True)

    def missing(self, present: set[str]) -> list[str]:
        """Keys the manifest seals that the source no longer lists."""
        return sorted(set(self.entries) - present)
