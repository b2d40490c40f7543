"""`export`: one event per session for a SIEM, as tsops JSON lines or Elastic Common Schema.

Events are written one by one; with the session text the text is streamed into the event's
JSON string, so a 500 MB recording never sits in memory. A checkpoint file remembers the
recordings already shipped, so a scheduled job sends only new sessions.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Literal

from tsops.errors import UsageError
from tsops.recordings.cast import CastError, Header
from tsops.recordings.catalog import Problem, Recording
from tsops.recordings.reader import Stream, plain_pieces
from tsops.recordings.store import RecordingMissing, Store, StoreError

Format = Literal["jsonl", "ecs"]
TEXT_SLOT = "\x00tsops-text\x00"  # replaced by the streamed text; cannot occur in JSON output


def _iso(moment: datetime.datetime | None) -> str | None:
    if moment is None:  # a header without a timestamp (not written by tsrecorder)
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def session_event(recording: Recording, form: Format, names: dict[str, str],
                  with_text: bool) -> dict[str, Any]:
    """The event for one session, without its text (a placeholder marks where it goes)."""
    header = recording.header
    start = recording.started
    end = start and start + datetime.timedelta(seconds=recording.duration or 0.0)
    hostname = names.get(recording.node, "")
    if form == "jsonl":
        event: dict[str, Any] = {
            "id": recording.id, "node": recording.node, "hostname": hostname or None,
            "start": _iso(start), "end": _iso(end), "duration": recording.duration,
            "ssh_user": header.ssh_user, "local_user": header.local_user,
            "src_node": header.src_node, "src_node_id": header.src_node_id,
            "src_node_user": header.src_node_user or None,
            "src_node_tags": list(header.src_node_tags), "command": header.command,
            "connection_id": header.connection_id, "terminal": header.term,
            "size": recording.size, "truncated": recording.truncated,
            **kubernetes_fields(header),
        }
        if with_text:
            event["text"] = TEXT_SLOT
        return event
    source: dict[str, Any] = {"address": header.src_node, "domain": header.src_node}
    if header.src_node_user:
        source["user"] = {"name": header.src_node_user}
    event = {
        "@timestamp": _iso(start),
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "event", "category": ["session"], "type": ["info"],
            "action": "ssh-session-recorded", "dataset": "tailscale.ssh",
            "provider": "tsrecorder", "module": "tsops", "id": header.connection_id,
            "start": _iso(start), "end": _iso(end),
            "duration": int((recording.duration or 0.0) * 1e9),
        },
        "user": {"name": header.ssh_user, "target": {"name": header.local_user}},
        "host": {"id": recording.node, **({"hostname": hostname} if hostname else {})},
        "source": source,
        "process": {"command_line": header.command},
        "file": {"path": recording.key, "size": recording.size},
        "labels": {"src_node_id": header.src_node_id,
                   "src_node_tags": ",".join(header.src_node_tags),
                   "truncated": str(recording.truncated).lower()},
        "related": {"user": sorted({u for u in (header.ssh_user, header.local_user,
                                                header.src_node_user) if u})},
    }
    if header.kubectl:
        _ecs_kubernetes(event, header)
    if with_text:
        event["tsops"] = {"text": TEXT_SLOT}
    return event


def kubernetes_fields(header: Header) -> dict[str, Any]:
    """The session kind and, for a kubectl session, its pod, namespace and container (flat
    fields of `list -o json`, `show` and `export --format jsonl`; None for SSH sessions)."""
    return {"session": header.kind, "pod": header.pod or None,
            "namespace": header.namespace or None, "container": header.container or None}


def _ecs_kubernetes(event: dict[str, Any], header: Header) -> None:
    """ECS orchestrator.* and container.* for a `kubectl exec`/`attach` session."""
    event["event"]["action"] = "kubectl-session-recorded"
    event["event"]["dataset"] = "tailscale.kubectl"
    # no SSH or local user: the person is the source node's owner (none for a tagged node)
    if header.src_node_user and not header.ssh_user:
        event["user"] = {"name": header.src_node_user}
    elif not header.ssh_user:
        del event["user"]
    orchestrator: dict[str, Any] = {"type": "kubernetes",
                                    "resource": {"type": "pod", "name": header.pod}}
    if header.namespace:
        orchestrator["namespace"] = header.namespace
    event["orchestrator"] = orchestrator
    if header.container:
        event["container"] = {"name": header.container}
    event["labels"]["session_type"] = header.session_type


def _line_safe(encoded: str) -> str:
    """Escape the two line separators that JSON allows raw but line splitters break on."""
    return encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def write_event(out: IO[str], store: Store, recording: Recording, form: Format,
                names: dict[str, str], with_text: bool) -> list[Problem]:
    """Write one session's event as one JSON line; return the problems met reading its text."""
    encoded = _line_safe(json.dumps(session_event(recording, form, names, with_text),
                                    ensure_ascii=False, separators=(",", ":")))
    if not with_text:
        out.write(encoded + "\n")
        return []
    before, after = encoded.split(json.dumps(TEXT_SLOT, ensure_ascii=False), 1)
    out.write(before + '"')
    stream = Stream(store, recording.key)
    problems: list[Problem] = []
    try:
        for piece in plain_pieces(stream):
            out.write(_line_safe(json.dumps(piece, ensure_ascii=False)[1:-1]))
    except CastError as error:
        problems.append(Problem(recording.key, error.kind, error.detail))
    except (StoreError, RecordingMissing, OSError) as error:
        problems.append(Problem(recording.key, "unreadable", str(error)))
    out.write('"' + after + "\n")
    problems.extend(p for p in stream.problems() if p.kind != "truncated" or
                    not recording.truncated)
    return problems


class Checkpoint:
    """The recordings already exported, kept in a small JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exported: set[str] = set()
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                keys = data["exported"]
                if data.get("version") != 1 or not isinstance(keys, list):
                    raise ValueError
                self.exported = {str(key) for key in keys}
            except (ValueError, KeyError, TypeError, OSError):
                raise UsageError(f"{path}: not a tsops export checkpoint (delete it to start "
                                 "over, which exports every session again)") from None

    def save(self, source: str) -> None:
        """Write the checkpoint (a temporary file renamed over the old one)."""
        data = {"version": 1, "source": source,
                "saved": _iso(datetime.datetime.now(datetime.UTC)),
                "exported": sorted(self.exported)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint-")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file)
        Path(temporary).replace(self.path)
