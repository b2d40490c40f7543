"""`recordings ...` below the CLI: where the recordings are, node names, sealing and checking.

The reading itself lives in tsops.recordings (a Store, a pure parser, a catalog that reads only
first and last bytes, search, export, integrity); this module resolves what the operator named
(--from or the inventory's storage) into a Store, and runs the seal and verify steps, returning
what they found for the CLI to show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.events import Events
from tsops.recordings.catalog import (
    SORT_KEYS,
    Catalog,
    Filter,
    Problem,
    Recording,
    find,
    probe,
    scan,
)
from tsops.recordings.store import LocalStore, S3Store, Store, parse_s3_url

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from tsops.recordings.integrity import Findings
    from tsops.recordings.search import Result
    from tsops.recordings.tamper import Tampered


class DriftFound(TsopsError):
    """Verification found recordings missing, altered or unexpected (exit 3)."""

    exit_code = ExitCode.DRIFT


@dataclass(frozen=True)
class RecordingsLocation:
    """Where to read recordings, as the operator named it: --from, or an inventory's storage."""

    location: str | None = None
    inventory: Path | None = None
    endpoint: str | None = None
    region: str | None = None


def open_store(where: RecordingsLocation) -> Store:
    """The store named by --from, or by the inventory's storage destination."""
    if (where.location is None) == (where.inventory is None):
        raise UsageError("give exactly one of --from (s3://BUCKET[/PREFIX] or a directory) "
                         "or --inventory FILE")
    location, endpoint, region = where.location, where.endpoint, where.region
    if where.inventory is not None:
        from tsops.inventory.load import load_inventory

        storage = load_inventory(where.inventory).model.storage
        if storage is None:
            raise UsageError(f"{where.inventory}: has no storage section; use --from")
        location = storage.destination
        endpoint = endpoint or storage.endpoint
        region = region or storage.region
    assert location is not None
    if location.startswith("s3://"):
        from tsops import s3

        bucket, prefix = parse_s3_url(location)
        return S3Store(s3.client(endpoint=endpoint, region=region), bucket, prefix)
    if "://" in location:
        raise UsageError(f"--from {location}: expected s3://BUCKET[/PREFIX] or a directory")
    return LocalStore(Path(location).expanduser())


def node_names(where: RecordingsLocation, events: Events) -> dict[str, str]:
    """Host names of the tailnet's nodes by stable node ID, from the inventory's API access.

    Only with --inventory; when the API cannot be reached the IDs are shown and a warning says
    why.
    """
    if where.inventory is None:
        raise UsageError("--names needs --inventory (its tailnet credentials name the nodes)")
    from tsops.context import RunContext

    try:
        with RunContext.open(where.inventory, events=events) as context:
            devices = context.api.list_devices()
    except TsopsError as error:
        if isinstance(error, UsageError):
            raise
        events.warning(f"showing node IDs, not names: {error.message}")
        return {}
    return {d.node_id: d.hostname or d.name.split(".", 1)[0] for d in devices if d.node_id}


def sealing_key(entry: str, *, create: bool, events: Events) -> Ed25519PrivateKey:
    """The Ed25519 sealing key kept in the keyring entry; made and stored when `create`."""
    from tsops import secrets
    from tsops.recordings.integrity import load_private_key, private_key_text

    text = secrets.fetch(entry)
    if text is not None:
        return load_private_key(text, entry)
    if not create:
        raise TsopsError(f"no sealing key in keyring entry {entry}; seal first, or pass "
                         "--public-key")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    secrets.store(entry, private_key_text(key))
    events.warning(f"created a new sealing key in keyring entry {entry}")
    return key


@dataclass(frozen=True)
class Sealed:
    """What `seal` wrote."""

    count: int
    store: str
    public_key: str
    problems: tuple[Problem, ...]


def seal(where: RecordingsLocation, manifest: Path, entry: str, events: Events) -> Sealed:
    """Hash every recording and write a manifest signed with the keyring's Ed25519 key."""
    import json

    from tsops.recordings.integrity import digest_all, public_key_text
    from tsops.recordings.integrity import seal as sign

    key = sealing_key(entry, create=True, events=events)
    store = open_store(where)
    digests, problems = digest_all(store)
    document = sign(digests, store.description, key)
    try:
        manifest.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    except OSError as error:
        raise TsopsError(f"cannot write the manifest {manifest}: {error}") from None
    return Sealed(len(digests), store.description, public_key_text(key.public_key()),
                  tuple(problems))


@dataclass(frozen=True)
class Checked:
    """What `verify` found: the comparison with the manifest, and damaged recordings."""

    findings: Findings
    store: str
    sealed_at: Any
    problems: tuple[Problem, ...]
    tampered: tuple[Tampered, ...] = ()  # S3 keys with more than one version


def verify(where: RecordingsLocation, manifest: Path, entry: str, public_key: str | None,
           events: Events) -> Checked:
    """Check a sealed manifest's signature, then compare it with the recordings now."""
    from tsops.recordings.integrity import (
        check_signature,
        compare,
        digest_all,
        load_public_key,
        read_manifest,
    )

    document = read_manifest(manifest)
    trusted: Ed25519PublicKey
    if public_key is not None:
        trusted = load_public_key(public_key)
    else:
        trusted = sealing_key(entry, create=False, events=events).public_key()
    check_signature(document, trusted)
    store = open_store(where)
    digests, problems = digest_all(store)
    findings = compare(document["manifest"]["recordings"], digests)
    return Checked(findings, store.description, document["manifest"].get("sealed_at"),
                   tuple(problems), tuple(tampered_in(store)))


def tampered_in(store: Store) -> list[Tampered]:
    """The rewritten or deleted recordings of an S3 store (a local folder keeps no versions)."""
    if not isinstance(store, S3Store):
        return []
    from tsops.recordings.tamper import tampered

    return tampered(store)


def check_sort(sort: str) -> None:
    """Refuse an unknown sort key (before anything is read)."""
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort}: expected one of {', '.join(SORT_KEYS)}")


def chosen(store: Store, keep: Filter, names: dict[str, str] | None = None,
           sort: str = "start", reverse: bool = False) -> tuple[list[Recording], Catalog]:
    """The recordings the filter keeps, sorted, and the whole catalog (with its problems)."""
    check_sort(sort)
    catalog = scan(store)
    kept = [r for r in catalog.recordings if keep.keeps(r, names)]
    kept.sort(key=SORT_KEYS[sort], reverse=reverse)
    return kept, catalog


def one(store: Store, recording_id: str) -> Recording:
    """The recording `recording_id` names, read from its header and tail."""
    result = probe(store, find(store, recording_id))
    if isinstance(result, Problem):
        raise TsopsError(f"cannot read recording {recording_id}: {result.kind}: {result.detail}")
    return result


def search(store: Store, keep: Filter, pattern_text: str, ignore_case: bool,
           context: int) -> tuple[Iterator[Result], tuple[Problem, ...]]:
    """Every recording's matching lines, and the problems the catalog found (given once).

    Without a filter each file is read once, header included; with one, the catalog chooses
    (and has reported truncation already, so the search does not report it again).
    """
    from tsops.recordings.search import compile_pattern
    from tsops.recordings.search import search as scan_text

    if context < 0:
        raise UsageError("--context must be 0 or more")
    pattern = compile_pattern(pattern_text, ignore_case)
    if keep == Filter():
        found = scan_text(store, list(store.list()), pattern, context)
        return found, ()
    targets, catalog = chosen(store, keep)

    def without_truncation() -> Iterator[Result]:
        for result in scan_text(store, targets, pattern, context):
            result.problems[:] = [p for p in result.problems if p.kind != "truncated"]
            yield result

    return without_truncation(), tuple(catalog.problems)
