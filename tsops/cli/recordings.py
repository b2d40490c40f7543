"""`tsops recordings ...`: review recorded sessions where tsrecorder stored them."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from rich.text import Text

from tsops.cli import console
from tsops.errors import TsopsError, UsageError
from tsops.flows import recordings as flow
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.recordings.cast import CastError
from tsops.recordings.catalog import (
    SORT_KEYS,
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
from tsops.recordings.store import ObjectInfo, Store

OutputFormat = Literal["table", "json"]


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


def run_list(source: RecordingsLocation, chosen: Filter, sort: str, reverse: bool,
             output: OutputFormat, names: bool = False) -> None:
    """Print one row per recording, from headers and tails only."""
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort}: expected one of {', '.join(SORT_KEYS)}")
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
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


def run_show(source: RecordingsLocation, recording_id: str, output: OutputFormat) -> None:
    """Print what the header and the tail of one recording say."""
    store = flow.open_store(source)
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


def run_cat(source: RecordingsLocation, recording_id: str, plain: bool) -> None:
    """Write the recording's output text, without timing; --plain removes terminal escapes."""
    store = flow.open_store(source)
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


def run_play(source: RecordingsLocation, recording_id: str, speed: float,
             idle_limit: float | None) -> None:
    """Replay a recording in the terminal with its timing."""
    from tsops.recordings.player import play_terminal, schedule

    if speed <= 0:
        raise UsageError("--speed must be greater than 0")
    if idle_limit is not None and idle_limit <= 0:
        raise UsageError("--idle-limit must be greater than 0")
    store = flow.open_store(source)
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


def run_export(source: RecordingsLocation, chosen: Filter, form: Literal["jsonl", "ecs"],
               with_text: bool, checkpoint_path: Path | None, names: bool = False) -> None:
    """Write one event per session (new ones only, with a checkpoint) on stdout."""
    from tsops.recordings.export import Checkpoint, write_event

    checkpoint = Checkpoint(checkpoint_path) if checkpoint_path else None
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
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


def run_search(source: RecordingsLocation, chosen: Filter, pattern_text: str, ignore_case: bool,
               context: int, output: OutputFormat) -> None:
    """Print every line of recorded output matching a regular expression."""
    from tsops.recordings.search import compile_pattern, search

    if context < 0:
        raise UsageError("--context must be 0 or more")
    pattern = compile_pattern(pattern_text, ignore_case)
    store = flow.open_store(source)
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


def run_seal(source: RecordingsLocation, manifest: Path, entry: str) -> None:
    """Hash every recording and write a manifest signed with the keyring's Ed25519 key."""
    sealed = flow.seal(source, manifest, entry, console.ConsoleEvents())
    report(sealed.problems)
    console.line(f"sealed {sealed.count} recording(s) of {sealed.store} in {manifest}")
    console.line(f"public key: {sealed.public_key}")


def run_verify(source: RecordingsLocation, manifest: Path, entry: str, public_key: str | None,
               output: OutputFormat) -> None:
    """Check a sealed manifest against the recordings now; exit 3 when anything differs."""
    checked = flow.verify(source, manifest, entry, public_key, console.ConsoleEvents())
    report(checked.problems)
    findings = checked.findings
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
            f"(manifest sealed {checked.sealed_at})")
    if findings.drift:
        raise DriftFound(f"{checked.store} differs from the manifest {manifest}")
