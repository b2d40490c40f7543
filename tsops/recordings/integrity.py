"""`seal` and `verify`: a manifest of SHA-256 digests signed with an Ed25519 key.

The private key lives in the keyring (tsops.secrets); the manifest names the public key, but
`verify` trusts only the public key derived from the keyring or given by the operator, so a
forged manifest signed with another key is caught.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.recordings.cast import INCOMPLETE_LINE, truncation_of
from tsops.recordings.catalog import WORKERS, Problem, parallel
from tsops.recordings.store import ObjectInfo, RecordingMissing, Store, StoreError

FORMAT = "tsops-recordings-manifest/1"
DEFAULT_KEY_ENTRY = "tsops/recordings-seal-key"


class ManifestError(UsageError):
    """The manifest file is unreadable or not a tsops manifest (exit 2)."""


class SignatureMismatch(TsopsError):
    """The manifest's signature does not verify with the trusted key (exit 3: tampering)."""

    exit_code = ExitCode.DRIFT


@dataclass(frozen=True)
class Digest:
    """One file's SHA-256 and size, plus what its bytes showed about its shape."""

    key: str
    sha256: str
    size: int
    problems: tuple[Problem, ...] = ()


def digest(store: Store, info: ObjectInfo) -> Digest | Problem:
    """Hash one recording, streaming it; note an empty, headerless or cut-off file."""
    sha = hashlib.sha256()
    size = 0
    first = b""
    before_last = last = b""  # the last two chunks: enough to judge how the file ends
    try:
        for chunk in store.chunks(info.key):
            if not size:
                first = chunk[:4096]
            sha.update(chunk)
            size += len(chunk)
            before_last, last = last, chunk
    except (StoreError, RecordingMissing, OSError) as error:
        return Problem(info.key, "unreadable", str(error))
    end = before_last + last
    reason = truncation_of(end, whole=len(end) == size)
    if reason is None:  # a last line longer than a chunk: judged by the final byte
        reason = "" if end.endswith(b"\n") else INCOMPLETE_LINE
    problems = []
    if size == 0:
        problems.append(Problem(info.key, "empty", "the file is empty"))
    elif not first.startswith(b"{"):
        problems.append(Problem(info.key, "bad-header", "the first line is not a JSON object"))
    elif reason:
        problems.append(Problem(info.key, "truncated", reason))
    return Digest(info.key, sha.hexdigest(), size, tuple(problems))


def digest_all(store: Store, workers: int = WORKERS) -> tuple[dict[str, Digest], list[Problem]]:
    """Hash every recording of the store in parallel."""
    digests: dict[str, Digest] = {}
    problems: list[Problem] = []
    for result in parallel(lambda info: digest(store, info), store.list(), workers):
        if isinstance(result, Problem):
            problems.append(result)
        else:
            digests[result.key] = result
            problems.extend(result.problems)
    return digests, problems


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes that are signed: the manifest as sorted, compact JSON."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def public_key_text(key: Ed25519PublicKey) -> str:
    """A public key as base64 of its 32 raw bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def private_key_text(key: Ed25519PrivateKey) -> str:
    """A private key as base64 of its 32 raw bytes (what the keyring holds)."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def load_private_key(text: str, entry: str) -> Ed25519PrivateKey:
    """Decode the keyring's value into a key."""
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise TsopsError(f"keyring entry {entry} does not hold a tsops sealing key") from None


def load_public_key(text: str) -> Ed25519PublicKey:
    """Decode a public key given as base64 (or a file holding it)."""
    path = Path(text)
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise UsageError("--public-key: expected base64 of a 32-byte Ed25519 public key, "
                         "or a file holding it") from None


def seal(digests: dict[str, Digest], source: str, key: Ed25519PrivateKey,
         now: datetime.datetime | None = None) -> dict[str, Any]:
    """The signed manifest document for these digests."""
    moment = now or datetime.datetime.now(datetime.UTC)
    manifest = {
        "format": FORMAT,
        "source": source,
        "sealed_at": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "public_key": public_key_text(key.public_key()),
        "recordings": {k: {"sha256": d.sha256, "size": d.size}
                       for k, d in sorted(digests.items())},
    }
    signature = base64.b64encode(key.sign(canonical(manifest))).decode()
    return {"manifest": manifest, "signature": signature}


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and shape-check a manifest document (the signature is checked by `check`)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: cannot read the manifest: {error}") from None
    manifest = document.get("manifest") if isinstance(document, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(document.get("signature"), str)
            or not isinstance(manifest.get("recordings"), dict)):
        raise ManifestError(f"{path}: not a tsops recordings manifest ({FORMAT})")
    for key, entry in manifest["recordings"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise ManifestError(f"{path}: recording {key}: expected sha256 and size")
    result: dict[str, Any] = document
    return result


def check_signature(document: dict[str, Any], trusted: Ed25519PublicKey) -> None:
    """Raise SignatureMismatch unless the manifest was signed by the trusted key."""
    manifest = document["manifest"]
    if manifest.get("public_key") != public_key_text(trusted):
        raise SignatureMismatch("the manifest was sealed with another key than the one trusted "
                                f"(manifest names {manifest.get('public_key')})")
    try:
        trusted.verify(base64.b64decode(document["signature"]), canonical(manifest))
    except (InvalidSignature, ValueError):
        raise SignatureMismatch("the manifest's signature does not verify: the manifest was "
                                "changed after it was sealed") from None


@dataclass
class Findings:
    """What differs between a sealed manifest and the recordings now."""

    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    intact: int = 0

    @property
    def drift(self) -> bool:
        """Whether anything differs."""
        return bool(self.missing or self.altered or self.unexpected)


def compare(sealed: dict[str, Any], digests: dict[str, Digest]) -> Findings:
    """Compare the manifest's recordings with the digests computed now."""
    findings = Findings()
    for key, entry in sorted(sealed.items()):
        now = digests.get(key)
        if now is None:
            findings.missing.append(key)
        elif now.sha256 != entry["sha256"] or now.size != entry["size"]:
            findings.altered.append(key)
        else:
            findings.intact += 1
    findings.unexpected = sorted(set(digests) - set(sealed))
    return findings
