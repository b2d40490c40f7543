"""`recordings ...` below the CLI: where the recordings are, node names, sealing and checking.

The reading itself lives in tsops.recordings (a Store, a pure parser, a catalog that reads only
first and last bytes, search, export, integrity); this module resolves what the operator named
(--from or the inventory's storage) into a Store, and runs the seal and verify steps, returning
what they found for the CLI to show.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
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
    unread,
)
from tsops.recordings.store import LocalStore, S3Store, Store, parse_s3_url

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from tsops.inventory.load import LoadedInventory, Target
    from tsops.recordings.integrity import Findings, Gone, KeySource
    from tsops.recordings.remote_source import HostReader, RecorderHostsStore
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
    profile, timeout = None, None
    if where.inventory is not None:
        from tsops.inventory.load import load_inventory

        inventory = load_inventory(where.inventory)
        model = inventory.model
        storage = model.storage
        if storage is None:
            raise UsageError(f"{where.inventory}: has no storage section; use --from")
        if not storage.is_s3:
            return recorder_hosts(inventory, storage.destination)
        location = storage.destination
        endpoint = endpoint or storage.endpoint
        region = region or storage.region
        profile, timeout = storage.profile, model.timeouts.s3
    assert location is not None
    if location.startswith("s3://"):
        from tsops import s3

        bucket, prefix = parse_s3_url(location)
        return S3Store(s3.client(endpoint=endpoint, region=region, profile=profile,
                                 timeout=timeout), bucket, prefix)
    if "://" in location:
        raise UsageError(f"--from {location}: expected s3://BUCKET[/PREFIX] or a directory")
    return LocalStore(Path(location).expanduser())


def recorder_connector(inventory: LoadedInventory) -> Callable[[Target], HostReader]:
    """Management SSH connections to recorder hosts, with the inventory's ssh_config."""
    from tsops.remote import Remote

    configured = inventory.model.connection.ssh_config
    ssh_config = str(inventory.local_path(configured)) if configured else None
    return lambda target: Remote(target, ssh_config=ssh_config)


def recorder_hosts(inventory: LoadedInventory, directory: str) -> RecorderHostsStore:
    """The recordings of an inventory whose destination is a directory: that directory on
    each recorder host, read over SSH (closed when the command ends)."""
    import atexit

    from tsops.recordings.remote_source import RecorderHostsStore

    if not inventory.recorders:
        raise UsageError(f"{inventory.path}: storage.destination {directory} is a directory on "
                         "the recorders, and the inventory has no recorders; read a directory "
                         "here with --from DIR")
    connect = recorder_connector(inventory)
    store = RecorderHostsStore(directory, [connect(target) for target in inventory.recorders])
    atexit.register(store.close)
    return store


def from_recorders(store: Store) -> bool:
    """Whether the store reads recorder hosts (each recording then names its recorder)."""
    from tsops.recordings.remote_source import RecorderHostsStore

    return isinstance(store, RecorderHostsStore)


def recorder_failures(store: Store) -> list[Problem]:
    """The recorders a store of recorder hosts could not read (wholly or partly) in its last
    listing; none for other stores."""
    from tsops.recordings.remote_source import RecorderHostsStore

    if not isinstance(store, RecorderHostsStore):
        return []
    return [Problem(u.key, u.kind, u.detail, u.recorder) for u in store.failures()]


class RecordersUnread(TsopsError):
    """Some recorders could not be read: what was shown is incomplete (exit 1)."""


def incomplete(store: Store) -> RecordersUnread | None:
    """The error for a listing that missed recorders (shown after the output), or None."""
    failures = recorder_failures(store)
    if not failures:
        return None
    names = ", ".join(p.recorder for p in failures)
    return RecordersUnread(f"{len(failures)} recorder(s) not read ({names}): the output "
                           "holds only the recordings of the others")


def require_every_recorder(store: Store, action: str) -> None:
    """Refuse to seal or verify from a listing that missed recorders: a manifest must cover
    every recording, and a recorder not reached is not missing recordings."""
    failures = recorder_failures(store)
    if failures:
        raise RecordersUnread(f"cannot {action}: " + "; ".join(str(p) for p in failures))


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


def sealing_key(entry: str | KeySource, *, create: bool, events: Events) -> Ed25519PrivateKey:
    """The Ed25519 sealing key from its source: a key file, an environment variable, or the
    keyring entry (made and stored there when `create`; a file is made by `new-key` only)."""
    from tsops import secrets
    from tsops.recordings.integrity import (
        KeySource,
        load_private_key,
        private_key_text,
        read_key_env,
        read_key_file,
    )

    source = entry if isinstance(entry, KeySource) else KeySource(entry)
    if source.file is not None:
        return read_key_file(source.file)
    if source.env is not None:
        return read_key_env(source.env)
    text = secrets.fetch(source.keyring)
    if text is not None:
        return load_private_key(text, source.keyring)
    if not create:
        raise TsopsError(f"no sealing key in keyring entry {source.keyring}; seal first, or "
                         "pass --public-key, --key-file or --key-env")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    secrets.store(source.keyring, private_key_text(key))
    events.warning(f"created a new sealing key in keyring entry {source.keyring}")
    return key


def new_key(entry: KeySource) -> str:
    """Make a sealing key in a file (0600) or a keyring entry, never over one; its public key."""
    from tsops import secrets
    from tsops.recordings.integrity import create_key_file, private_key_text, public_key_text

    if entry.env is not None:
        raise UsageError("new-key writes a key file (--key-file) or a keyring entry (--key); "
                         "an environment variable is set from one of them")
    if entry.file is not None:
        return public_key_text(create_key_file(entry.file).public_key())
    if secrets.fetch(entry.keyring) is not None:
        raise UsageError(f"keyring entry {entry.keyring} already holds a key; a sealing key "
                         "is never replaced (delete it with `tsops secrets delete` first)")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    secrets.store(entry.keyring, private_key_text(key))
    return public_key_text(key.public_key())


def public_key(entry: KeySource, events: Events) -> str:
    """The verification key of the sealing key, as base64 (what --public-key takes)."""
    from tsops.recordings.integrity import public_key_text

    return public_key_text(sealing_key(entry, create=False, events=events).public_key())


@dataclass(frozen=True)
class Sealed:
    """What `seal` wrote, and what went missing since the previous manifest."""

    count: int
    store: str
    public_key: str
    problems: tuple[Problem, ...]
    path: Path | None = None
    previous: Path | None = None
    gone: tuple[Gone, ...] = ()


def _manifest_options(manifest: Path | None, directory: Path | None,
                      previous: Path | None) -> None:
    """Refuse a combination of --manifest, --manifest-dir and --previous that cannot work."""
    if (manifest is None) == (directory is None):
        raise UsageError("give exactly one of --manifest FILE or --manifest-dir DIR")
    if previous is not None and directory is not None:
        raise UsageError("--previous goes with --manifest; with --manifest-dir the previous "
                         "manifest is the newest one in the directory")
    if previous is not None and manifest is not None and previous.resolve() == manifest.resolve():
        raise UsageError(f"--previous {previous}: it is the manifest being written")


def seal(where: RecordingsLocation, manifest: Path | None, entry: str | KeySource,
         events: Events, *, previous: Path | None = None, directory: Path | None = None,
         force: bool = False, now: datetime.datetime | None = None) -> Sealed:
    """Hash every recording and write a manifest signed with the sealing key, linked to the
    previous manifest (--previous, or the newest in --manifest-dir)."""
    from tsops.recordings.integrity import (
        Manifest,
        chain_files,
        check_signature,
        digest_all,
        load_manifest,
        manifest_name,
        public_key_text,
        refuse_existing,
        since,
        write_manifest,
    )
    from tsops.recordings.integrity import seal as sign

    _manifest_options(manifest, directory, previous)
    if manifest is not None:
        refuse_existing(manifest, force)
    if directory is not None and directory.exists() and not directory.is_dir():
        raise UsageError(f"--manifest-dir {directory}: not a directory")
    key = sealing_key(entry, create=True, events=events)
    before: Manifest | None = None
    if previous is not None:
        before = load_manifest(previous)
    elif directory is not None and directory.is_dir():
        files = chain_files(directory)
        before = load_manifest(files[-1]) if files else None
    if before is not None:  # never chain onto a manifest someone else signed
        check_signature(before.document, key.public_key(), before.path)
    store = open_store(where)
    if before is not None and before.manifest.get("source") != store.description:
        raise UsageError(f"{before.path}: sealed {before.manifest.get('source')}, not "
                         f"{store.description}; chain manifests of one destination only")
    digests, problems = digest_all(store)
    require_every_recorder(store, "seal")
    problems = unread(store) + problems
    document = sign(digests, store.description, key, now, previous=before)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / manifest_name(document)
        if before is not None and manifest.name <= before.path.name:
            raise UsageError(f"{manifest}: not after the newest manifest {before.path.name} "
                             "(sealed in the same second, or the clock went back); seal again "
                             "later")
    assert manifest is not None
    write_manifest(manifest, document, force)
    gone = since(before, digests, str(manifest)) if before is not None else []
    return Sealed(len(digests), store.description, public_key_text(key.public_key()),
                  tuple(problems), manifest, None if before is None else before.path,
                  tuple(gone))


@dataclass(frozen=True)
class Checked:
    """What `verify` found: the comparison with the manifest, and damaged recordings."""

    findings: Findings
    store: str
    sealed_at: Any
    problems: tuple[Problem, ...]
    gone: tuple[Gone, ...] = ()
    chain: tuple[str, ...] = ()
    tampered: tuple[Tampered, ...] = ()  # S3 keys with more than one version


def verify(where: RecordingsLocation, manifest: Path | None, entry: str | KeySource,
           public_key: str | None, events: Events, *, previous: Path | None = None,
           directory: Path | None = None) -> Checked:
    """Check the manifests' signatures and links (a chain: --manifest-dir, or --manifest with
    --previous), what went between them, then compare the newest with the recordings now."""
    from tsops.recordings.integrity import (
        chain_files,
        check_chain,
        compare,
        digest_all,
        load_manifest,
        load_public_key,
    )

    _manifest_options(manifest, directory, previous)
    if directory is not None:
        if not directory.is_dir():
            raise UsageError(f"--manifest-dir {directory}: not a directory")
        paths = chain_files(directory)
        if not paths:
            raise UsageError(f"--manifest-dir {directory}: holds no manifest (files named "
                             "like 20261202T031500Z.json)")
    else:
        assert manifest is not None
        paths = [manifest] if previous is None else [previous, manifest]
    trusted: Ed25519PublicKey
    if public_key is not None:
        trusted = load_public_key(public_key)
    else:
        trusted = sealing_key(entry, create=False, events=events).public_key()
    chain = [load_manifest(path) for path in paths]
    gone = check_chain(chain, trusted, complete=directory is not None)
    newest = chain[-1]
    store = open_store(where)
    digests, problems = digest_all(store)
    require_every_recorder(store, "verify")
    problems = unread(store) + problems
    findings = compare(newest.manifest["recordings"], digests)
    return Checked(findings, store.description, newest.manifest.get("sealed_at"),
                   tuple(problems), tuple(gone), tuple(str(m.path) for m in chain),
                   tuple(tampered_in(store)))


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
        return found, tuple(unread(store))
    targets, catalog = chosen(store, keep)

    def without_truncation() -> Iterator[Result]:
        for result in scan_text(store, targets, pattern, context):
            result.problems[:] = [p for p in result.problems if p.kind != "truncated"]
            yield result

    return without_truncation(), tuple(catalog.problems)
