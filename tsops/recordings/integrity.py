"""`seal` and `verify`: a manifest of SHA-256 digests signed with an Ed25519 key.

The private key lives in the keyring (tsops.secrets), in a key file only its owner can read, or
in an environment variable (`KeySource`); the manifest names the public key, but `verify`
trusts only the public key derived from that source or given by the operator, so a forged
manifest signed with another key is caught.

Manifests form a chain: each names the SHA-256 of the previous manifest's bytes (`previous`),
so a recording sealed once and missing later, or a manifest taken out of the chain, is found.
"""

from __future__ import annotations

import base64
import datetime
import errno
import hashlib
import itertools
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.recordings.cast import INCOMPLETE_LINE, truncation_of
from tsops.recordings.catalog import WORKERS, Problem, parallel
from tsops.recordings.store import ObjectInfo, RecordingMissing, Store, StoreError

FORMAT = "tsops-recordings-manifest/2"  # /2 adds `previous`, the link of the chain
FORMATS = ("tsops-recordings-manifest/1", FORMAT)
DEFAULT_KEY_ENTRY = "tsops/recordings-seal-key"
KEY_FILE_MODE = 0o600
# The names `seal --manifest-dir` gives manifests: their time of sealing, so names sort in time.
MANIFEST_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z\.json$")


class ManifestError(UsageError):
    """The manifest file is unreadable or not a tsops manifest (exit 2)."""


class SignatureMismatch(TsopsError):
    """The manifest's signature does not verify with the trusted key (exit 3: tampering)."""

    exit_code = ExitCode.DRIFT


class ChainBroken(TsopsError):
    """A manifest's `previous` does not name the manifest before it (exit 3: tampering)."""

    exit_code = ExitCode.DRIFT


class KeySourceError(UsageError):
    """A key file or variable cannot be used: loose permissions, missing, not a key (exit 2)."""


@dataclass(frozen=True)
class KeySource:
    """Where the private sealing key is: a keyring entry (the default), a file, or a variable."""

    keyring: str = DEFAULT_KEY_ENTRY
    file: Path | None = None
    env: str | None = None

    @classmethod
    def chosen(cls, keyring: str | None = None, file: Path | None = None,
               env: str | None = None) -> KeySource:
        """The one source the options name (--key, --key-file, --key-env), or exit 2."""
        given = [name for name, value in (("--key", keyring), ("--key-file", file),
                                          ("--key-env", env)) if value is not None]
        if len(given) > 1:
            raise UsageError(f"give at most one of --key, --key-file, --key-env "
                             f"(got {', '.join(given)})")
        return cls(keyring or DEFAULT_KEY_ENTRY, file, env)

    def __str__(self) -> str:
        if self.file is not None:
            return f"key file {self.file}"
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"keyring entry {self.keyring}"


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


def decode_private_key(text: str) -> Ed25519PrivateKey | None:
    """A key from base64 of its 32 raw bytes, or from PEM (PKCS#8, as `openssl genpkey
    -algorithm ed25519` writes it); None when the text is neither."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            return None
        return key if isinstance(key, Ed25519PrivateKey) else None
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        return None


def load_private_key(text: str, entry: str) -> Ed25519PrivateKey:
    """Decode the keyring's value into a key."""
    key = decode_private_key(text)
    if key is None:
        raise TsopsError(f"keyring entry {entry} does not hold a tsops sealing key")
    return key


def read_key_file(path: Path) -> Ed25519PrivateKey:
    """The key in `path`, refused unless it is a regular file of yours, mode 0600 or stricter."""
    # O_NONBLOCK: a FIFO put in its place must not hang the nightly job before it is refused.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise KeySourceError(f"{path}: no such key file; create one with `tsops recordings "
                             f"new-key --key-file {path}`") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise KeySourceError(f"{path}: a symbolic link; give the key file itself, so its "
                                 "owner and mode are the ones checked") from None
        raise KeySourceError(f"{path}: cannot open the key file: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode):
            raise KeySourceError(f"{path}: not a regular file")
        if mode & ~KEY_FILE_MODE:
            raise KeySourceError(f"{path}: mode {mode:04o} is too open for a sealing key: it "
                                 f"must be 0600 or stricter (chmod 600 {path})")
        if info.st_uid != os.geteuid():
            raise KeySourceError(f"{path}: owned by uid {info.st_uid}, not by this user "
                                 f"(uid {os.geteuid()}): a sealing key file must be yours")
        data = file.read(64 << 10)
    try:
        key = decode_private_key(data.decode("ascii"))
    except UnicodeDecodeError:
        key = None
    if key is None:
        raise KeySourceError(f"{path}: not a sealing key (expected one line of base64 of a "
                             "32-byte Ed25519 private key, or PEM)")
    return key


def read_key_env(name: str) -> Ed25519PrivateKey:
    """The key in the environment variable `name` (base64 or PEM)."""
    text = os.environ.get(name)
    if not text:
        raise KeySourceError(f"--key-env {name}: the environment variable is not set")
    key = decode_private_key(text)
    if key is None:
        raise KeySourceError(f"--key-env {name}: not a sealing key (expected base64 of a "
                             "32-byte Ed25519 private key, or PEM)")
    return key


def create_key_file(path: Path) -> Ed25519PrivateKey:
    """Make a new key and write it to `path`, mode 0600; never over an existing file."""
    key = Ed25519PrivateKey.generate()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, KEY_FILE_MODE)
    except FileExistsError:
        raise KeySourceError(f"{path}: exists; a key file is never overwritten (move it away "
                             "first: manifests sealed with it need its public key)") from None
    except OSError as error:
        raise KeySourceError(f"{path}: cannot create the key file: {error.strerror}") from None
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        os.fchmod(file.fileno(), KEY_FILE_MODE)
        file.write(private_key_text(key) + "\n")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """Decode a public key given as base64 (or a file holding it, as `public-key` prints it)."""
    path = Path(text)
    where = "--public-key"
    if path.is_file():
        where = f"--public-key {path}"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"{where}: cannot read it: {error}") from None
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise UsageError(f"{where}: expected base64 of a 32-byte Ed25519 public key, "
                         "or a file holding it") from None


def seal(digests: dict[str, Digest], source: str, key: Ed25519PrivateKey,
         now: datetime.datetime | None = None,
         previous: Manifest | None = None) -> dict[str, Any]:
    """The signed manifest document for these digests, linked to the previous manifest."""
    moment = now or datetime.datetime.now(datetime.UTC)
    manifest = {
        "format": FORMAT,
        "source": source,
        "sealed_at": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "public_key": public_key_text(key.public_key()),
        "previous": None if previous is None else {
            "name": previous.path.name, "sha256": previous.sha256,
            "sealed_at": previous.manifest.get("sealed_at")},
        "recordings": {k: {"sha256": d.sha256, "size": d.size}
                       for k, d in sorted(digests.items())},
    }
    signature = base64.b64encode(key.sign(canonical(manifest))).decode()
    return {"manifest": manifest, "signature": signature}


def manifest_name(document: dict[str, Any]) -> str:
    """The file name `seal --manifest-dir` gives a manifest: its sealing time, e.g.
    20261202T031500Z.json."""
    return str(document["manifest"]["sealed_at"]).replace("-", "").replace(":", "") + ".json"


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and shape-check a manifest document (the signature is checked by `check`)."""
    return load_manifest(path).document


@dataclass(frozen=True)
class Manifest:
    """A manifest file as read: where, the SHA-256 of its bytes (what the next one names),
    and its document."""

    path: Path
    sha256: str
    document: dict[str, Any]

    @property
    def manifest(self) -> dict[str, Any]:
        """The signed part."""
        result: dict[str, Any] = self.document["manifest"]
        return result

    @property
    def previous(self) -> dict[str, Any] | None:
        """The link to the manifest before it (None for the first, and for format /1)."""
        link = self.manifest.get("previous")
        return link if isinstance(link, dict) else None


def load_manifest(path: Path) -> Manifest:
    """Read a manifest file and check its shape; exit 2 when it is not a tsops manifest."""
    try:
        data = path.read_bytes()
        document = json.loads(data.decode("utf-8"))
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: cannot read the manifest: {error}") from None
    manifest = document.get("manifest") if isinstance(document, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") not in FORMATS
            or not isinstance(document.get("signature"), str)
            or not isinstance(manifest.get("recordings"), dict)):
        raise ManifestError(f"{path}: not a tsops recordings manifest ({FORMAT})")
    for key, entry in manifest["recordings"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise ManifestError(f"{path}: recording {key}: expected sha256 and size")
    link = manifest.get("previous")
    if link is not None and not (isinstance(link, dict) and isinstance(link.get("sha256"), str)
                                 and isinstance(link.get("name"), str)):
        raise ManifestError(f"{path}: field manifest.previous: expected null or an object "
                            "with name and sha256")
    return Manifest(path, hashlib.sha256(data).hexdigest(), document)


def chain_files(directory: Path) -> list[Path]:
    """The manifests `seal --manifest-dir` wrote in `directory`, oldest first (by name)."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory)
                       if MANIFEST_NAME.match(entry.name) and entry.is_file())
    except OSError as error:
        raise ManifestError(f"{directory}: cannot list the manifest directory: "
                            f"{error.strerror}") from None
    return [directory / name for name in names]


@dataclass(frozen=True)
class Gone:
    """A recording sealed in one manifest and missing (or changed) in the next one."""

    key: str
    kind: str  # "deleted" or "altered"
    sealed_in: str
    then: str


def between(earlier: Manifest, later: Manifest) -> list[Gone]:
    """Recordings of `earlier` that `later` no longer has, or has with other bytes."""
    now = later.manifest["recordings"]
    found = []
    for key, entry in sorted(earlier.manifest["recordings"].items()):
        if key not in now:
            found.append(Gone(key, "deleted", str(earlier.path), str(later.path)))
        elif (now[key]["sha256"], now[key]["size"]) != (entry["sha256"], entry["size"]):
            found.append(Gone(key, "altered", str(earlier.path), str(later.path)))
    return found


def since(earlier: Manifest, digests: dict[str, Digest], now: str) -> list[Gone]:
    """Recordings of the previous manifest missing or changed in the digests about to be
    sealed (`now` names the new manifest)."""
    found = []
    for key, entry in sorted(earlier.manifest["recordings"].items()):
        current = digests.get(key)
        if current is None:
            found.append(Gone(key, "deleted", str(earlier.path), now))
        elif (current.sha256, current.size) != (entry["sha256"], entry["size"]):
            found.append(Gone(key, "altered", str(earlier.path), now))
    return found


def check_link(earlier: Manifest, later: Manifest) -> None:
    """Raise ChainBroken unless `later` names `earlier` (its SHA-256) as its previous."""
    link = later.previous
    if link is None:
        raise ChainBroken(f"{later.path} names no previous manifest, but {earlier.path} comes "
                          "before it: the chain was restarted or a manifest was put in")
    if link["sha256"] != earlier.sha256:
        raise ChainBroken(
            f"{later.path} names previous manifest {link['name']} with sha256 "
            f"{link['sha256'][:16]}..., but the manifest before it, {earlier.path}, has sha256 "
            f"{earlier.sha256[:16]}...: a link of the chain is missing or was altered")


def check_chain(chain: list[Manifest], trusted: Ed25519PublicKey, *,
                complete: bool) -> list[Gone]:
    """Check every signature and link of `chain` (oldest first) and return the recordings
    deleted or changed between two consecutive manifests.

    `complete`: the chain must start with a manifest that names no previous one (a directory
    of manifests); otherwise its first link is not followed (one manifest and its previous).
    """
    for member in chain:
        check_signature(member.document, trusted, member.path)
    if complete and chain and chain[0].previous is not None:
        first = chain[0]
        assert first.previous is not None
        raise ChainBroken(f"{first.path} names previous manifest {first.previous['name']}, "
                          f"which is not in {first.path.parent}: a link of the chain is missing")
    gone: list[Gone] = []
    for earlier, later in itertools.pairwise(chain):
        check_link(earlier, later)
        gone.extend(between(earlier, later))
    return gone


def check_signature(document: dict[str, Any], trusted: Ed25519PublicKey,
                    path: Path | None = None) -> None:
    """Raise SignatureMismatch unless the manifest was signed by the trusted key."""
    manifest = document["manifest"]
    which = f"{path}: the manifest" if path is not None else "the manifest"
    if manifest.get("public_key") != public_key_text(trusted):
        raise SignatureMismatch(f"{which} was sealed with another key than the one trusted "
                                f"(manifest names {manifest.get('public_key')})")
    try:
        trusted.verify(base64.b64decode(document["signature"]), canonical(manifest))
    except (InvalidSignature, ValueError):
        raise SignatureMismatch(f"{which}'s signature does not verify: the manifest was "
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


class ManifestExists(UsageError):
    """`seal` would replace a manifest and --force was not given (exit 2)."""


def refuse_existing(path: Path, force: bool) -> None:
    """Exit 2 before any work when `path` exists and --force was not given."""
    if not force and (path.exists() or path.is_symlink()):
        raise ManifestExists(f"{path}: a manifest is already there; seal never replaces one "
                             "without --force (choose another file, or --manifest-dir)")


def write_manifest(path: Path, document: dict[str, Any], force: bool) -> None:
    """Write the manifest: a new file (never over one, unless `force`: then atomically)."""
    data = (json.dumps(document, indent=1) + "\n").encode()
    if force:
        import tempfile

        try:
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".manifest-")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            Path(temporary).replace(path)
        except OSError as error:
            raise TsopsError(f"cannot write the manifest {path}: {error}") from None
        return
    refuse_existing(path, force=False)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ManifestExists(f"{path}: a manifest is already there; seal never replaces one "
                             "without --force") from None
    except OSError as error:
        raise TsopsError(f"cannot write the manifest {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
