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
from typing import Literal

from rich.text import Text

from tsops.cli import console
from tsops.cli.jsonout import utc_time
from tsops.errors import TsopsError, UsageError
from tsops.flows import recordings as flow
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.recordings.cast import CastError, strip_controls
from tsops.recordings.catalog import (
    Filter,
    Problem,
    Recording,
    find,
    parse_when,
)
from tsops.recordings.inert import SafeFilter, visible
from tsops.recordings.reader import Stream

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
        console.warning(visible(str(problem)))
        count += 1
    return count


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
        "start": utc_time(recording.started),
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
    flow.check_sort(sort)
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
    recordings, catalog = flow.chosen(store, chosen, hostnames, sort, reverse)
    report(catalog.problems)
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
            visible(r.id) + (" (truncated)" if r.truncated else ""),
            visible(hostnames.get(r.node, "-")), _when(r), _duration(r.duration),
            visible(header.ssh_user), visible(header.local_user),
            visible(header.src_node.split(".", 1)[0]), visible(header.source), _size(r.size),
            visible(header.command) or "(shell)",
        ))
    for line in columns(rows):
        console.line(line)
    console.line(f"{len(recordings)} recording(s) of {len(catalog.recordings)} in "
                 f"{store.description}; {len(catalog.problems)} problem(s)")


def run_show(source: RecordingsLocation, recording_id: str, output: OutputFormat) -> None:
    """Print what the header and the tail of one recording say."""
    store = flow.open_store(source)
    recording = flow.one(store, recording_id)
    if recording.truncated:
        report([Problem(recording.key, "truncated", "the last line is incomplete")])
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
    """Write one event per session (new ones only, with a checkpoint) on stdout."""
    from tsops.recordings.export import Checkpoint, write_event

    checkpoint = Checkpoint(checkpoint_path) if checkpoint_path else None
    store = flow.open_store(source)
    hostnames = (flow.node_names(source, console.ConsoleEvents(no_input=True)) if names
                 else {})
    recordings, catalog = flow.chosen(store, chosen, hostnames)
    report(catalog.problems)
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
    store = flow.open_store(source)
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
                    "id": recording.id, "start": utc_time(recording.started),
                    "line": match.line_number, "offset": match.offset, "text": match.line,
                    "before": match.before, "after": match.after,
                })
                continue
            where = (f"{visible(recording.id)} +{_duration(match.offset)} "
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
                console.line(f"{kind:<10}  {visible(key_name)}")
        console.line(
            f"{findings.intact} intact, {len(findings.missing)} missing, "
            f"{len(findings.altered)} altered, {len(findings.unexpected)} unexpected "
            f"(manifest sealed {checked.sealed_at})")
    if findings.drift:
        raise DriftFound(f"{checked.store} differs from the manifest {manifest}")
