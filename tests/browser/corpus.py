"""The recordings the browser tests review: 30 valid, one truncated, three malformed.

Written into any directory (served as a folder) or uploaded to a bucket (served from S3), so
the same UI is checked over both sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START = 1_795_000_000  # 2026-11-18, the first session's start
USERS = ("alice", "bob", "carol")
NODES = ("nodeA1CNTRL", "nodeB2CNTRL")
# What a recorded header may hold: HTML, a terminal title sequence, a bidi override.
HOSTILE_COMMAND = ('<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
                   '\x1b]0;owned\x07\u202e')
HOSTILE_ID = f"{NODES[0]}/2026-11-19T00:00:00Z-hostile"


@dataclass(frozen=True)
class Valid:
    """A valid recording of the corpus: its ID, who ran it, and the lines it printed."""

    id: str
    ssh_user: str
    command: str
    lines: tuple[str, ...]


def valid_recordings() -> list[Valid]:
    """The 30 valid recordings: 29 ordinary, then one whose header is hostile."""
    found = []
    for number in range(29):
        node = NODES[number % 2]
        user = USERS[number % 3]
        lines = tuple(f"session {number} line {line} needle-{number}-{line}"
                      for line in range(4))
        found.append(Valid(f"{node}/2026-11-18T{number:02d}:00:00Z-s{number:02d}", user,
                           "uptime" if number % 5 == 0 else "", lines))
    found.append(Valid(HOSTILE_ID, "mallory", HOSTILE_COMMAND,
                       ("<b>not bold</b> <script>window.pwned=3</script>",)))
    return found


def _header(number: int, item: Valid) -> dict[str, object]:
    return {"version": 2, "width": 80, "height": 24, "timestamp": START + number * 3600,
            "command": item.command, "sshUser": item.ssh_user, "localUser": item.ssh_user,
            "srcNode": f"laptop-{item.ssh_user}.example.ts.net.",
            "srcNodeUser": f"{item.ssh_user}@example.com", "srcNodeID": f"src{number}CNTRL",
            "connectionID": f"conn-{number}", "env": {"TERM": "xterm-256color"}}


def cast_text(number: int, item: Valid) -> str:
    """A complete recording: header, one output event per line 0.25 s apart, a resize."""
    events = [[0.25 * (index + 1), "o", f"{line}\r\n"] for index, line in enumerate(item.lines)]
    return "".join(json.dumps(value) + "\n" for value in [_header(number, item), *events])


TRUNCATED_ID = f"{NODES[1]}/2026-11-20T00:00:00Z-truncated"
MALFORMED = {  # ID: content; each is flagged, none breaks the page
    f"{NODES[0]}/2026-11-21T00:00:00Z-notjson": "this is not a recording\n",
    f"{NODES[0]}/2026-11-21T01:00:00Z-empty": "",
    f"{NODES[1]}/2026-11-21T02:00:00Z-v1": json.dumps(
        {"version": 1, "width": 80, "height": 24, "stdout": [[0.1, "hi"]]}, indent=1),
}


def files() -> dict[str, bytes]:
    """Every file of the corpus by key (`NODE/NAME.cast`)."""
    found = {f"{item.id}.cast": cast_text(number, item).encode()
             for number, item in enumerate(valid_recordings())}
    truncated = Valid(TRUNCATED_ID, "bob", "", ("cut short",))
    found[f"{TRUNCATED_ID}.cast"] = cast_text(40, truncated).encode() + b'[1.5, "o", "hal'
    for recording_id, text in MALFORMED.items():
        found[f"{recording_id}.cast"] = text.encode()
    return found


def write_directory(root: Path) -> Path:
    """The corpus as tsrecorder files it in a directory."""
    for key, data in files().items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def upload(client: S3Client, bucket: str) -> None:
    """The corpus as tsrecorder files it in a bucket."""
    client.create_bucket(Bucket=bucket)
    for key, data in files().items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
