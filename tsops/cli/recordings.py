"""`tsops recordings ...`: review recorded sessions where tsrecorder stored them.

Everything a recording says is written by the person recorded: every header field, key and
line of output shown in a table or a report goes through `visible` (control and invisible
characters shown as `^[`, `M-^[`, `<U+202E>`), and `cat` and `play` write only what
`SafeFilter` lets through unless `--raw` is given. JSON output escapes by itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.text import Text

from tsops.cli import console
from tsops.cli.jsonout import utc_time
from tsops.errors import TsopsError, UsageError
from tsops.flows import recordings as flow
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.recordings.cast import CastError, Header, strip_controls
from tsops.recordings.catalog import (
    Filter,
    Problem,
    Recording,
    duration_text,
    find,
    parse_when,
    size_text,
    truncation,
)
from tsops.recordings.export import kubernetes_fields
from tsops.recordings.inert import SafeFilter, visible
from tsops.recordings.reader import Stream

if TYPE_CHECKING:
    from tsops.recordings.integrity import Gone, KeySource
    from tsops.recordings.store import Store

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


SESSION_TYPES = ("ssh", "exec", "attach")


def make_filter(nodes: list[str], users: list[str], since: str | None, until: str | None,
                command: str | None, pods: Sequence[str] = (), namespaces: Sequence[str] = (),
                containers: Sequence[str] = (), session_types: Sequence[str] = ()) -> Filter:
    """The filter the options describe (bad times and unknown session types exit 2)."""
    for session_type in session_types:
        if session_type not in SESSION_TYPES:
            raise UsageError(f"--session-type {session_type}: expected one of "
                             f"{', '.join(SESSION_TYPES)}")
    return Filter(
        nodes=tuple(nodes), users=tuple(users),
        since=parse_when(since, "--since") if since else None,
        until=parse_when(until, "--until") if until else None, command=command,
        pods=tuple(pods), namespaces=tuple(namespaces), containers=tuple(containers),
        session_types=tuple(session_types),
    )


def note(message: str) -> None:
    """A summary on stderr, where it stays out of piped data (never read as markup)."""
    console.err.print(Text(message))


def report(problems: Iterable[Problem]) -> int:
    """Print one warning line per damaged recording; return how many."""
    count = 0
    for problem in problems:
        console.warning(visible(str(problem)))
        count += 1
    return count


def _when(recording: Recording) -> str:
    started = recording.started
    return "-" if started is None else started.strftime("%Y-%m-%d %H:%M:%S")


def columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as aligned text columns, never cut (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]


def _session(header: Header) -> str:
    """The SESSION column: `ssh`, or a kubectl session's type and NAMESPACE/POD[/CONTAINER]."""
    if not header.kubectl:
        return "ssh"
    target = "/".join(part for part in (header.namespace, header.pod, header.container) if part)
    return f"{visible(header.kind)} {visible(target)}".rstrip()


def _iso_start(recording: Recording) -> str | None:
    """RFC 3339 UTC to the second; None when the header has no timestamp."""
    started = recording.started
    return None if started is None else utc_time(started)


def as_json(recording: Recording) -> dict[str, object]:
    """A recording as a JSON object (the fields of `list -o json` and `show -o json`)."""
    header = recording.header
    return {
        "id": recording.id, "node": recording.node,
        "start": _iso_start(recording),
        "duration": recording.duration, "ssh_user": header.ssh_user,
        "local_user": header.local_user, "src_node": header.src_node,
        "src_node_id": header.src_node_id, "src_node_user": header.src_node_user or None,
        "src_node_tags": list(header.src_node_tags), "command": header.command,
        "connection_id": header.connection_id, "terminal": header.term,
        "width": header.width, "height": header.height, "size": recording.size,
        "truncated": recording.truncated, **kubernetes_fields(header),
        "recorder": recording.recorder or None,
    }


def run_list(source: RecordingsLocation, chosen: Filter, sort: str, reverse: bool,
             output: OutputFormat, names: bool = False) -> None:
    """Print one row per recording, from headers and tails only."""
    flow.check_sort(sort)
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
    with console.working(f"reading the recordings of {store.description}"):
        recordings, catalog = flow.chosen(store, chosen, hostnames, sort, reverse)
    report(catalog.problems)
    if output == "json":
        listed = [{**as_json(r), "hostname": hostnames.get(r.node)} for r in recordings]
        console.line(json.dumps({"recordings": listed,
                                 "problems": [vars(p) for p in catalog.problems]}, indent=2))
        fail_if_incomplete(store, output)
        return
    rows: list[tuple[str, ...]] = [("ID", "NODE", "START (UTC)", "DURATION", "SESSION",
                                    "SSH USER", "LOCAL USER", "SOURCE", "FROM", "SIZE",
                                    "COMMAND")]
    for r in recordings:
        header = r.header
        rows.append((
            visible(r.id) + (" (truncated)" if r.truncated else ""),
            visible(hostnames.get(r.node, "-")), _when(r), duration_text(r.duration),
            _session(header), visible(header.ssh_user) or "-", visible(header.local_user) or "-",
            visible(header.src_node.split(".", 1)[0]), visible(header.source), size_text(r.size),
            visible(header.command) or "(shell)",
        ))
    if flow.from_recorders(store):  # which recorder host each recording is on
        rows = [(*row[:2], recorder, *row[2:]) for row, recorder in
                zip(rows, ["RECORDER", *(visible(r.recorder) for r in recordings)], strict=True)]
    for line in columns(rows):
        console.line(line)
    console.line(f"{len(recordings)} recording(s) of {len(catalog.recordings)} in "
                 f"{store.description}; {len(catalog.problems)} problem(s)")
    fail_if_incomplete(store, output)


def fail_if_incomplete(store: Store, output: OutputFormat) -> None:
    """Exit 1, after the output, when some recorders could not be read (one line on stderr;
    in JSON mode the document printed stays the only thing on stdout)."""
    error = flow.incomplete(store)
    if error is None:
        return
    if output == "json":
        console.error(error.message)
        raise SystemExit(int(error.exit_code))
    raise error


def run_show(source: RecordingsLocation, recording_id: str, output: OutputFormat) -> None:
    """Print what the header and the tail of one recording say."""
    store = flow.open_store(source)
    recording = flow.one(store, recording_id)
    if recording.truncated:
        report([truncation(recording)])
    fields = as_json(recording)
    if output == "json":
        console.line(json.dumps(fields, indent=2))
        return
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        shown = "-" if shown in (None, "") else visible(str(shown))
        console.line(f"{name:<{width}}  {shown}")


def _stream_problems(stream: Stream, known_truncated: bool) -> None:
    report(p for p in stream.problems() if p.kind != "truncated" or not known_truncated)


RAW_WARNING = ("--raw: the recording's escape sequences go to the terminal as recorded; the "
               "recorded session can retitle the window, set the clipboard, make the terminal "
               "answer, hide text or leave modes set")


def run_cat(source: RecordingsLocation, recording_id: str, plain: bool,
            raw: bool = False) -> None:
    """Write the recording's output text, without timing; --plain removes terminal escapes,
    --raw passes every sequence (the default passes the safe set only)."""
    if plain and raw:
        raise UsageError("--plain and --raw exclude each other")
    store = flow.open_store(source)
    info = find(store, recording_id)
    stream = Stream(store, info.key)
    out = console.out.file
    if raw:
        console.warning(RAW_WARNING)
    safe = SafeFilter()
    try:
        with writing(fatal=False):
            if plain:  # what the filter passes, less its escapes and controls
                for batch in stream.batches():
                    out.write(strip_controls(safe.feed("".join([text for _, text in batch]))))
            elif raw:
                for batch in stream.batches():
                    out.write("".join([text for _, text in batch]))
            else:
                try:
                    for batch in stream.batches():
                        out.write(safe.feed("".join([text for _, text in batch])))
                finally:
                    out.write(safe.reset())
            out.flush()
    except CastError as error:
        raise TsopsError(f"cannot read recording {recording_id}: {error}") from None
    _stream_problems(stream, False)


def run_play(source: RecordingsLocation, recording_id: str, speed: float,
             idle_limit: float | None, raw: bool = False) -> None:
    """Replay a recording in the terminal with its timing (the safe set of sequences only,
    unless --raw)."""
    from tsops.recordings.player import play_terminal, schedule

    if speed <= 0:
        raise UsageError("--speed must be greater than 0")
    if idle_limit is not None and idle_limit <= 0:
        raise UsageError("--idle-limit must be greater than 0")
    store = flow.open_store(source)
    info = find(store, recording_id)
    stream = Stream(store, info.key)
    safe = SafeFilter()
    if raw:
        console.warning(RAW_WARNING)
        events = (event for batch in stream.batches() for event in batch)
    else:
        events = ((at, safe.feed(text)) for batch in stream.batches() for at, text in batch)
    finished = False
    try:
        with writing(fatal=False):
            try:
                finished = play_terminal(schedule(events, speed, idle_limit), console.out.file)
            finally:
                if not raw:  # colours, modes and scroll region back as they were
                    console.out.file.write(safe.reset())
            console.out.file.write("\n")
    except CastError as error:
        raise TsopsError(f"cannot read recording {recording_id}: {error}") from None
    if not finished:
        note("stopped")
    _stream_problems(stream, False)


def run_export(source: RecordingsLocation, chosen: Filter, form: Literal["jsonl", "ecs"],
               with_text: bool, checkpoint_path: Path | None, names: bool = False) -> None:
    """Write one event per session (new ones only, with a checkpoint, and rewritten ones again,
    flagged) on stdout."""
    from tsops.recordings.export import Checkpoint, Pending, pending, write_event

    checkpoint = Checkpoint(checkpoint_path) if checkpoint_path else None
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
    with console.working(f"reading the recordings of {store.description}"):
        recordings, catalog = flow.chosen(store, chosen, hostnames)
    report(catalog.problems)
    adopted = 0
    if checkpoint is not None:
        todo, adopted = pending(checkpoint, store, recordings)
    else:
        todo = [Pending(recording, None) for recording in recordings]
    for item in todo:
        if item.rewritten:
            console.warning(f"rewritten: {visible(item.recording.key)}: exported before as "
                            f"version {item.previous}, now {item.version and item.version.token}"
                            "; exported again with rewritten=true")
    out = console.out.file
    shipped = 0
    with writing(fatal=True):
        for item in todo:
            report(write_event(out, store, item.recording, form, hostnames, with_text, item))
            shipped += 1
            if checkpoint is not None:
                checkpoint.record(item.recording.key, item.version)
        out.flush()
    if checkpoint is not None:
        checkpoint.save(store.description)
    rewritten = sum(1 for item in todo if item.rewritten)
    note(f"exported {shipped} session(s) from {store.description}"
         + (f", {rewritten} of them rewritten since exported" if rewritten else ""))
    if adopted:
        note(f"{adopted} session(s) exported by an older checkpoint: their current version is "
             "now recorded (a rewrite before this run cannot be told)")
    fail_if_incomplete(store, "json")


def run_search(source: RecordingsLocation, chosen: Filter, pattern_text: str, ignore_case: bool,
               context: int, output: OutputFormat) -> None:
    """Print every line of recorded output matching a regular expression."""
    store = flow.open_store(source)
    with console.working(f"searching the recordings of {store.description}"):
        results, problems = flow.search(store, chosen, pattern_text, ignore_case, context)
    report(problems)
    matched = found = searched = 0
    documents = []
    for result in results:
        report(result.problems)
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
                    "id": recording.id, "recorder": recording.recorder or None,
                    "start": _iso_start(recording),
                    "line": match.line_number, "offset": match.offset, "text": match.line,
                    "before": match.before, "after": match.after,
                })
                continue
            where = (f"{visible(recording.id)} +{duration_text(match.offset)} "
                     f"line {match.line_number}")
            if context:
                for line in match.before:
                    console.line(f"{where}-  {visible(line)}")
            console.line(f"{where}:  {visible(match.line)}")
            if context:
                for line in match.after:
                    console.line(f"{where}-  {visible(line)}")
                console.line("--")
    if output == "json":
        console.line(json.dumps({"matches": documents}, indent=2))
    note(f"{found} matching line(s) in {matched} of {searched} recording(s)")
    fail_if_incomplete(store, output)


def _gone(gone: Iterable[Gone]) -> None:
    """One line per recording sealed in one manifest and deleted or changed in the next."""
    for item in gone:
        console.line(f"{item.kind:<10}  {visible(item.key)}  (sealed in {item.sealed_in}, "
                     f"{'missing from' if item.kind == 'deleted' else 'changed in'} {item.then})")


def _tampered(gone: Sequence[Gone]) -> DriftFound:
    first = gone[0]
    return DriftFound(f"{len(gone)} recording(s) sealed in one manifest are deleted or changed "
                      f"in the next, e.g. {visible(first.key)}: {first.kind} between "
                      f"{first.sealed_in} and {first.then}")


def run_seal(source: RecordingsLocation, manifest: Path | None, entry: str | KeySource,
             previous: Path | None = None, directory: Path | None = None,
             force: bool = False) -> None:
    """Hash every recording and write a manifest signed with the sealing key, linked to the
    previous one; exit 3 (after writing) when recordings of the previous one are gone."""
    with console.working("hashing every recording"):
        sealed = flow.seal(source, manifest, entry, console.ConsoleEvents(),
                           previous=previous, directory=directory, force=force)
    report(sealed.problems)
    console.line(f"sealed {sealed.count} recording(s) of {sealed.store} in {sealed.path}")
    if sealed.previous is not None:
        console.line(f"previous manifest: {sealed.previous}")
    console.line(f"public key: {sealed.public_key}")
    _gone(sealed.gone)
    if sealed.gone:
        raise _tampered(sealed.gone)


def run_public_key(entry: KeySource) -> None:
    """Print the verification key (base64, one line) for `verify --public-key`."""
    console.line(flow.public_key(entry, console.ConsoleEvents(no_input=True)))
    note(f"the public key of the sealing key in {entry}; give it to auditors for "
         "`tsops recordings verify --public-key FILE`")


def run_new_key(entry: KeySource) -> None:
    """Make a sealing key (a 0600 file, or a keyring entry), never over one; print its
    public key."""
    public = flow.new_key(entry)
    console.line(public)
    note(f"created a sealing key in {entry}; the line above is its public key")


def run_verify(source: RecordingsLocation, manifest: Path | None, entry: str | KeySource,
               public_key: str | None, output: OutputFormat, previous: Path | None = None,
               directory: Path | None = None) -> None:
    """Check a sealed manifest (or a chain) against the recordings now; exit 3 when anything
    differs."""
    with console.working("hashing every recording"):
        checked = flow.verify(source, manifest, entry, public_key, console.ConsoleEvents(),
                              previous=previous, directory=directory)
    report(checked.problems)
    findings = checked.findings
    if output == "json":
        console.line(json.dumps({"intact": findings.intact, "missing": findings.missing,
                                 "altered": findings.altered,
                                 "unexpected": findings.unexpected,
                                 "between_manifests": [vars(g) for g in checked.gone],
                                 "chain": list(checked.chain),
                                 "tampered": [t.as_dict() for t in checked.tampered]},
                                indent=2))
    else:
        _gone(checked.gone)
        for kind, keys in (("missing", findings.missing), ("altered", findings.altered),
                           ("unexpected", findings.unexpected)):
            for key_name in keys:
                console.line(f"{kind:<10}  {visible(key_name)}")
        for found in checked.tampered:
            console.line(f"{'tampered':<10}  {visible(found.line())}")
        if len(checked.chain) > 1:
            console.line(f"chain of {len(checked.chain)} manifest(s) from {checked.chain[0]} "
                         f"to {checked.chain[-1]}: signatures and links good; "
                         f"{len(checked.gone)} recording(s) deleted or changed between them")
        console.line(
            f"{findings.intact} intact, {len(findings.missing)} missing, "
            f"{len(findings.altered)} altered, {len(findings.unexpected)} unexpected "
            f"(manifest sealed {checked.sealed_at})"
            + (f"; {len(checked.tampered)} tampered" if checked.tampered else ""))
    if checked.gone:
        raise _tampered(checked.gone)
    if findings.drift:
        raise DriftFound(f"{checked.store} differs from the manifest "
                         f"{checked.chain[-1] if checked.chain else manifest}")
    if checked.tampered:
        raise DriftFound(f"{checked.store}: {len(checked.tampered)} recording(s) rewritten "
                         "or deleted since they were written")
