"""`tsops recordings ...`: review recorded sessions where tsrecorder stored them."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.text import Text

from tsops.cli import console
from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.recordings.cast import CastError
from tsops.recordings.catalog import (
    SORT_KEYS,
    WORKERS,
    Catalog,
    Filter,
    Problem,
    Recording,
    find,
    parse_when,
    probe,
    scan,
)
from tsops.recordings.reader import Stream, plain_pieces
from tsops.recordings.store import LocalStore, ObjectInfo, S3Store, Store, parse_s3_url

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

OutputFormat = Literal["table", "json"]


class DriftFound(TsopsError):
    """Verification found recordings missing, altered or unexpected (exit 3)."""

    exit_code = ExitCode.DRIFT


@dataclass(frozen=True)
class Source:
    """Where to read recordings, as the operator named it."""

    location: str | None = None
    inventory: Path | None = None
    endpoint: str | None = None
    region: str | None = None


def open_store(source: Source) -> Store:
    """The store named by --from, or by the inventory's storage destination."""
    if (source.location is None) == (source.inventory is None):
        raise UsageError("give exactly one of --from (s3://BUCKET[/PREFIX] or a directory) "
                         "or --inventory FILE")
    location, endpoint, region = source.location, source.endpoint, source.region
    if source.inventory is not None:
        from tsops.inventory.load import load_inventory

        storage = load_inventory(source.inventory).model.storage
        if storage is None:
            raise UsageError(f"{source.inventory}: has no storage section; use --from")
        location = storage.destination
        endpoint = endpoint or storage.endpoint
        region = region or storage.region
    assert location is not None
    if location.startswith("s3://"):
        import boto3
        from botocore.config import Config

        bucket, prefix = parse_s3_url(location)
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region,
            config=Config(max_pool_connections=WORKERS + 4, retries={"mode": "standard"}),
        )
        return S3Store(client, bucket, prefix)
    if "://" in location:
        raise UsageError(f"--from {location}: expected s3://BUCKET[/PREFIX] or a directory")
    return LocalStore(Path(location).expanduser())


@contextmanager
def writing(*, fatal: bool) -> Iterator[None]:
    """Turn a closed or full standard output into a clean stop (fatal: an error, exit 1)."""
    try:
        yield
    except BrokenPipeError:
        # The reader went away (`| head`): point stdout at /dev/null so the final flush at exit
        # does not fail again, then stop.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        if fatal:
            raise TsopsError("standard output was closed before every event was written; "
                             "the checkpoint is unchanged") from None
    except OSError as error:
        raise TsopsError(f"cannot write to standard output: {error.strerror}") from None


def make_filter(nodes: list[str], users: list[str], since: str | None, until: str | None,
                command: str | None) -> Filter:
    """The filter the options describe (bad times exit 2)."""
    return Filter(
        nodes=tuple(nodes), users=tuple(users),
        since=parse_when(since, "--since") if since else None,
        until=parse_when(until, "--until") if until else None, command=command,
    )


def note(message: str) -> None:
    """A summary on stderr, where it stays out of piped data (never read as markup)."""
    console.err.print(Text(message))


def report(problems: Iterable[Problem]) -> int:
    """Print one warning line per damaged recording; return how many."""
    count = 0
    for problem in problems:
        console.warning(str(problem))
        count += 1
    return count


def _catalog(store: Store, chosen: Filter,
             names: dict[str, str] | None = None) -> tuple[list[Recording], Catalog]:
    catalog = scan(store)
    report(catalog.problems)
    return [r for r in catalog.recordings if chosen.keeps(r, names)], catalog


def node_names(source: Source) -> dict[str, str]:
    """Host names of the tailnet's nodes by stable node ID, from the inventory's API access.

    Only asked for (--names) with --inventory; when the API cannot be reached the IDs are shown
    and a warning says why.
    """
    if source.inventory is None:
        raise UsageError("--names needs --inventory (its tailnet credentials name the nodes)")
    from tsops.context import RunContext

    try:
        with RunContext.open(source.inventory,
                             events=console.ConsoleEvents(no_input=True)) as context:
            devices = context.api.list_devices()
    except TsopsError as error:
        if isinstance(error, UsageError):
            raise
        console.warning(f"showing node IDs, not names: {error.message}")
        return {}
    return {d.node_id: d.hostname or d.name.split(".", 1)[0] for d in devices if d.node_id}


def _when(recording: Recording) -> str:
    return recording.started.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as aligned text columns, never cut (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]


def as_json(recording: Recording) -> dict[str, object]:
    """A recording as a JSON object (the fields of `list -o json` and `show -o json`)."""
    header = recording.header
    return {
        "id": recording.id, "node": recording.node,
        "start": recording.started.isoformat().replace("+00:00", "Z"),
        "duration": recording.duration, "ssh_user": header.ssh_user,
        "local_user": header.local_user, "src_node": header.src_node,
        "src_node_id": header.src_node_id, "src_node_user": header.src_node_user or None,
        "src_node_tags": list(header.src_node_tags), "command": header.command,
        "connection_id": header.connection_id, "terminal": header.term,
        "width": header.width, "height": header.height, "size": recording.size,
        "truncated": recording.truncated,
    }


def run_list(source: Source, chosen: Filter, sort: str, reverse: bool,
             output: OutputFormat, names: bool = False) -> None:
    """Print one row per recording, from headers and tails only."""
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort}: expected one of {', '.join(SORT_KEYS)}")
    store = open_store(source)
    hostnames = node_names(source) if names else {}
    recordings, catalog = _catalog(store, chosen, hostnames)
    recordings.sort(key=SORT_KEYS[sort], reverse=reverse)
    if output == "json":
        listed = [{**as_json(r), "hostname": hostnames.get(r.node)} for r in recordings]
        console.line(json.dumps({"recordings": listed,
                                 "problems": [vars(p) for p in catalog.problems]}, indent=2))
        return
    rows = [("ID", "NODE", "START (UTC)", "DURATION", "SSH USER", "LOCAL USER", "SOURCE", "FROM",
             "SIZE", "COMMAND")]
    for r in recordings:
        header = r.header
        rows.append((
            r.id + (" (truncated)" if r.truncated else ""), hostnames.get(r.node, "-"),
            _when(r), _duration(r.duration),
            header.ssh_user, header.local_user, header.src_node.split(".", 1)[0],
            header.source, _size(r.size), header.command or "(shell)",
        ))
    for line in columns(rows):
        console.line(line)
    console.line(f"{len(recordings)} recording(s) of {len(catalog.recordings)} in "
                 f"{store.description}; {len(catalog.problems)} problem(s)")


def _one(store: Store, recording_id: str) -> Recording:
    result = probe(store, find(store, recording_id))
    if isinstance(result, Problem):
        raise TsopsError(f"cannot read recording {recording_id}: {result.kind}: {result.detail}")
    if result.truncated:
        report([Problem(result.key, "truncated", "the last line is incomplete")])
    return result


def run_show(source: Source, recording_id: str, output: OutputFormat) -> None:
    """Print what the header and the tail of one recording say."""
    store = open_store(source)
    recording = _one(store, recording_id)
    fields = as_json(recording)
    if output == "json":
        console.line(json.dumps(fields, indent=2))
        return
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        console.line(f"{name:<{width}}  {'-' if shown in (None, '') else shown}")


def _stream_problems(stream: Stream, known_truncated: bool) -> None:
    report(p for p in stream.problems() if p.kind != "truncated" or not known_truncated)


def run_cat(source: Source, recording_id: str, plain: bool) -> None:
    """Write the recording's output text, without timing; --plain removes terminal escapes."""
    store = open_store(source)
    info = find(store, recording_id)
    stream = Stream(store, info.key)
    out = console.out.file
    try:
        with writing(fatal=False):
            if plain:
                for piece in plain_pieces(stream):
                    out.write(piece)
            else:
                for batch in stream.batches():
                    out.write("".join([text for _, text in batch]))
            out.flush()
    except CastError as error:
        raise TsopsError(f"cannot read recording {recording_id}: {error}") from None
    _stream_problems(stream, False)


def run_play(source: Source, recording_id: str, speed: float, idle_limit: float | None) -> None:
    """Replay a recording in the terminal with its timing."""
    from tsops.recordings.player import play_terminal, schedule

    if speed <= 0:
        raise UsageError("--speed must be greater than 0")
    if idle_limit is not None and idle_limit <= 0:
        raise UsageError("--idle-limit must be greater than 0")
    store = open_store(source)
    info = find(store, recording_id)
    stream = Stream(store, info.key)
    events = (event for batch in stream.batches() for event in batch)
    finished = False
    try:
        with writing(fatal=False):
            finished = play_terminal(schedule(events, speed, idle_limit), console.out.file)
            console.out.file.write("\n")
    except CastError as error:
        raise TsopsError(f"cannot read recording {recording_id}: {error}") from None
    if not finished:
        note("stopped")
    _stream_problems(stream, False)


def run_export(source: Source, chosen: Filter, form: Literal["jsonl", "ecs"], with_text: bool,
               checkpoint_path: Path | None, names: bool = False) -> None:
    """Write one event per session (new ones only, with a checkpoint) on stdout."""
    from tsops.recordings.export import Checkpoint, write_event

    checkpoint = Checkpoint(checkpoint_path) if checkpoint_path else None
    store = open_store(source)
    hostnames = node_names(source) if names else {}
    recordings, _ = _catalog(store, chosen, hostnames)
    recordings.sort(key=SORT_KEYS["start"])
    out = console.out.file
    shipped = 0
    with writing(fatal=True):
        for recording in recordings:
            if checkpoint is not None and recording.key in checkpoint.exported:
                continue
            report(write_event(out, store, recording, form, hostnames, with_text))
            shipped += 1
            if checkpoint is not None:
                checkpoint.exported.add(recording.key)
        out.flush()
    if checkpoint is not None:
        checkpoint.save(store.description)
    note(f"exported {shipped} session(s) from {store.description}")


def run_search(source: Source, chosen: Filter, pattern_text: str, ignore_case: bool,
               context: int, output: OutputFormat) -> None:
    """Print every line of recorded output matching a regular expression."""
    from tsops.recordings.search import compile_pattern, search

    if context < 0:
        raise UsageError("--context must be 0 or more")
    pattern = compile_pattern(pattern_text, ignore_case)
    store = open_store(source)
    targets: list[Recording] | list[ObjectInfo]
    from_catalog = chosen != Filter()
    if not from_catalog:  # nothing to select: read each file once, header included
        targets = list(store.list())
    else:
        targets, _ = _catalog(store, chosen)
        targets.sort(key=SORT_KEYS["start"])
    matched = found = searched = 0
    documents = []
    for result in search(store, targets, pattern, context):
        report(p for p in result.problems  # a catalog already reported truncation
               if p.kind != "truncated" or not from_catalog)
        if result.recording is None:
            continue
        searched += 1
        recording = result.recording
        if result.matches:
            matched += 1
        for match in result.matches:
            found += 1
            if output == "json":
                documents.append({
                    "id": recording.id, "start": _when(recording),
                    "line": match.line_number, "offset": match.offset, "text": match.line,
                    "before": match.before, "after": match.after,
                })
                continue
            where = f"{recording.id} +{_duration(match.offset)} line {match.line_number}"
            if context:
                for line in match.before:
                    console.line(f"{where}-  {line}")
            console.line(f"{where}:  {match.line}")
            if context:
                for line in match.after:
                    console.line(f"{where}-  {line}")
                console.line("--")
    if output == "json":
        console.line(json.dumps({"matches": documents}, indent=2))
    note(f"{found} matching line(s) in {matched} of {searched} recording(s)")


def _private_key(entry: str, create: bool) -> Ed25519PrivateKey:
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
    console.warning(f"created a new sealing key in keyring entry {entry}")
    return key


def run_seal(source: Source, manifest: Path, entry: str) -> None:
    """Hash every recording and write a manifest signed with the keyring's Ed25519 key."""
    from tsops.recordings.integrity import digest_all, public_key_text, seal

    key = _private_key(entry, create=True)
    store = open_store(source)
    digests, problems = digest_all(store)
    report(problems)
    document = seal(digests, store.description, key)
    try:
        manifest.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    except OSError as error:
        raise TsopsError(f"cannot write the manifest {manifest}: {error}") from None
    console.line(f"sealed {len(digests)} recording(s) of {store.description} in {manifest}")
    console.line(f"public key: {public_key_text(key.public_key())}")


def run_verify(source: Source, manifest: Path, entry: str, public_key: str | None,
               output: OutputFormat) -> None:
    """Check a sealed manifest against the recordings now; exit 3 when anything differs."""
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
        trusted = _private_key(entry, create=False).public_key()
    check_signature(document, trusted)
    store = open_store(source)
    digests, problems = digest_all(store)
    report(problems)
    findings = compare(document["manifest"]["recordings"], digests)
    if output == "json":
        console.line(json.dumps({"intact": findings.intact, "missing": findings.missing,
                                 "altered": findings.altered,
                                 "unexpected": findings.unexpected}, indent=2))
    else:
        for kind, keys in (("missing", findings.missing), ("altered", findings.altered),
                           ("unexpected", findings.unexpected)):
            for key_name in keys:
                console.line(f"{kind:<10}  {key_name}")
        console.line(
            f"{findings.intact} intact, {len(findings.missing)} missing, "
            f"{len(findings.altered)} altered, {len(findings.unexpected)} unexpected "
            f"(manifest sealed {document['manifest'].get('sealed_at')})")
    if findings.drift:
        raise DriftFound(f"{store.description} differs from the manifest {manifest}")
