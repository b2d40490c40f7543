"""`export`: one event per session for a SIEM, as tsops JSON lines or Elastic Common Schema.

Events are written one by one; with the session text the text is streamed into the event's
JSON string, so a 500 MB recording never sits in memory. A checkpoint file remembers the
recordings already shipped and which version of each (`Version`: the S3 VersionId, or for a
directory the SHA-256 of the bytes), so a scheduled job sends only new sessions, and sends a
rewritten one again, flagged `rewritten` for the SIEM to alert on.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from tsops.errors import UsageError
from tsops.recordings.cast import CastError, Header
from tsops.recordings.catalog import Problem, Recording
from tsops.recordings.reader import Stream, plain_pieces
from tsops.recordings.store import LocalStore, RecordingMissing, S3Store, Store, StoreError

if TYPE_CHECKING:
    from tsops.recordings.remote_source import RecorderHostsStore

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
            **kubernetes_fields(header), "recorder": recording.recorder or None,
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
    if recording.recorder:  # the recorder host the recording was read from
        event["observer"] = {"hostname": recording.recorder, "type": "recorder"}
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


@dataclass(frozen=True)
class Version:
    """Which version of a recording's bytes: `s3:<VersionId>` (an S3 bucket with versioning),
    `etag:<ETag>` (one without), or `sha256:<hex>` (a directory; `stat` is the size, mtime and
    ctime in nanoseconds it was hashed at, so an unchanged file is not read again)."""

    token: str
    stat: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Pending:
    """A recording to export: its version now, and the version exported before when it was
    rewritten since (None for a new one)."""

    recording: Recording
    version: Version | None
    previous: str | None = None

    @property
    def rewritten(self) -> bool:
        """Whether this recording was exported before with other bytes."""
        return self.previous is not None


def flag_version(event: dict[str, Any], form: Format, pending: Pending) -> None:
    """Add the version fields: `rewritten`, the version, and the one exported before."""
    token = pending.version.token if pending.version is not None else None
    if form == "jsonl":
        event.update({"rewritten": pending.rewritten, "version": token,
                      "previous_version": pending.previous})
        return
    labels = event["labels"]
    labels["rewritten"] = str(pending.rewritten).lower()
    if token is not None:
        labels["recording_version"] = token
    if pending.previous is not None:
        labels["previous_version"] = pending.previous
        event["event"].update({"kind": "alert", "type": ["change"],
                               "action": "ssh-session-recording-rewritten"})


def write_event(out: IO[str], store: Store, recording: Recording, form: Format,
                names: dict[str, str], with_text: bool,
                pending: Pending | None = None) -> list[Problem]:
    """Write one session's event as one JSON line; return the problems met reading its text."""
    event = session_event(recording, form, names, with_text)
    flag_version(event, form, pending or Pending(recording, None))
    encoded = _line_safe(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
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


CHECKPOINT_VERSION = 2


class Checkpoint:
    """The recordings already exported and the version of each, in a small JSON file written
    atomically. A version 1 file (keys only, from older tsops) is read: its recordings count as
    exported, and their version now is taken as the one exported (`adopt`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, Version | None] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.seen = self._parse(data)
            except (ValueError, KeyError, TypeError, AttributeError, OSError):
                raise UsageError(f"{path}: not a tsops export checkpoint (delete it to start "
                                 "over, which exports every session again)") from None

    @staticmethod
    def _parse(data: dict[str, Any]) -> dict[str, Version | None]:
        """The versions a checkpoint file holds (None: exported, version unknown)."""
        exported = data["exported"]
        if data.get("version") == 1 and isinstance(exported, list):
            return {str(key): None for key in exported}
        if data.get("version") != CHECKPOINT_VERSION or not isinstance(exported, dict):
            raise ValueError
        seen: dict[str, Version | None] = {}
        for key, entry in exported.items():
            token, stat = entry["version"], entry.get("stat")
            if token is None:  # exported, its version not known (an older checkpoint)
                seen[key] = None
            elif isinstance(token, str):
                seen[key] = Version(token, None if stat is None else (
                    int(stat[0]), int(stat[1]), int(stat[2])))
            else:
                raise ValueError
        return seen

    @property
    def exported(self) -> set[str]:
        """The keys of every recording exported so far."""
        return set(self.seen)

    def record(self, key: str, version: Version | None) -> None:
        """Remember that this version of `key` was exported (or is known)."""
        self.seen[key] = version

    def save(self, source: str) -> None:
        """Write the checkpoint (a temporary file renamed over the old one)."""
        exported = {key: {"version": v.token if v else None,
                          "stat": list(v.stat) if v and v.stat else None}
                    for key, v in sorted(self.seen.items())}
        data = {"version": CHECKPOINT_VERSION, "source": source,
                "saved": _iso(datetime.datetime.now(datetime.UTC)), "exported": exported}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint-")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file)
        Path(temporary).replace(self.path)


def _s3_versions(store: S3Store, keys: set[str]) -> dict[str, Version]:
    """The current version of each key, from one listing of the bucket's versions (or a HEAD
    per key when the credentials may not list versions)."""
    from botocore.exceptions import BotoCoreError, ClientError

    found: dict[str, Version] = {}

    def token(version_id: str | None, etag: str) -> Version:
        if version_id and version_id != "null":
            return Version(f"s3:{version_id}")
        return Version(f"etag:{etag.strip(chr(34))}")

    try:
        paginator = store.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=store.bucket, Prefix=store.prefix):
            for item in page.get("Versions", []):
                key = item["Key"][len(store.prefix):]
                if item.get("IsLatest") and key in keys:
                    found[key] = token(item.get("VersionId"), item.get("ETag", ""))
        return found
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "AccessDenied":
            raise StoreError(f"cannot list the versions in {store.description}: {error}") from None
    except BotoCoreError as error:
        raise StoreError(f"cannot list the versions in {store.description}: {error}") from None
    for key in sorted(keys):
        try:
            head = store.client.head_object(Bucket=store.bucket, Key=store.prefix + key)
        except (BotoCoreError, ClientError) as error:
            raise StoreError(f"cannot read the version of {key} in {store.description}: "
                             f"{error}") from None
        found[key] = token(head.get("VersionId"), head.get("ETag", ""))
    return found


def _local_version(store: LocalStore, key: str, known: Version | None) -> Version:
    """A file's version: the SHA-256 of its bytes, hashed again only when its size, mtime or
    ctime changed (a write always changes ctime, which no user process can set back)."""
    info = (store.root / key).stat()
    return _hashed(store, key, (info.st_size, info.st_mtime_ns, info.st_ctime_ns), known)


def _host_version(store: RecorderHostsStore, key: str, known: Version | None) -> Version:
    """A recorder host's file, as _local_version, with the stat its listing carried."""
    return _hashed(store, key, store.stat(key), known)


def _hashed(store: Store, key: str, now: tuple[int, int, int], known: Version | None) -> Version:
    """The version `known` when the file's stat is still `now`, else its bytes hashed anew."""
    if known is not None and known.stat == now:
        return known
    sha = hashlib.sha256()
    for chunk in store.chunks(key):
        sha.update(chunk)
    return Version(f"sha256:{sha.hexdigest()}", now)


def versions(store: Store, keys: Iterable[str],
             known: dict[str, Version | None]) -> dict[str, Version]:
    """The current version of each key (an S3 bucket, a local directory, recorder hosts)."""
    from tsops.recordings.remote_source import RecorderHostsStore

    wanted = set(keys)
    if isinstance(store, S3Store):
        return _s3_versions(store, wanted)
    if isinstance(store, LocalStore):
        return {key: _local_version(store, key, known.get(key)) for key in sorted(wanted)}
    if isinstance(store, RecorderHostsStore):
        return {key: _host_version(store, key, known.get(key)) for key in sorted(wanted)}
    raise TypeError(f"no versions for {type(store).__name__}")


def pending(checkpoint: Checkpoint, store: Store,
            recordings: list[Recording]) -> tuple[list[Pending], int]:
    """What to export: new recordings, and rewritten ones (flagged); and how many recordings
    of an older checkpoint had their version taken as exported (adopted)."""
    now = versions(store, (r.key for r in recordings), checkpoint.seen)
    chosen: list[Pending] = []
    adopted = 0
    for recording in recordings:
        version = now.get(recording.key)
        if recording.key not in checkpoint.seen:
            chosen.append(Pending(recording, version))
            continue
        before = checkpoint.seen[recording.key]
        if before is None:  # from a version 1 checkpoint: exported, version not known
            adopted += 1
            checkpoint.record(recording.key, version)
        elif version is not None and version.token != before.token:
            chosen.append(Pending(recording, version, before.token))
        elif version is not None:
            checkpoint.record(recording.key, version)  # the same bytes; a newer stat
    return chosen, adopted
