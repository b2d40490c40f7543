"""Render asciicast v2 recordings as a Tailscale SSH server writes them (reference section 3).

Pure functions: a header dict, event lines, and whole `.cast` files, including cut-off ones.
Output is encoded the way Go's encoding/json does (compact, `<`, `>`, `&`, U+2028 and U+2029
escaped, other text as UTF-8), so a parser that works on these files works on real ones.
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
              "\u2029": "\\u2029"}


@dataclass(frozen=True)
class SourceNode:
    """The tailnet node a session comes from: tagged, or owned by a user."""

    name: str  # MagicDNS FQDN without the trailing dot
    node_id: str  # stable node ID
    tags: tuple[str, ...] = ()
    login: str | None = None  # the owner's login name, when untagged
    user_id: int | None = None

    def __post_init__(self) -> None:
        if bool(self.tags) == bool(self.login):
            raise ValueError("a source node is either tagged or owned by a user (login)")
        if self.login and self.user_id is None:
            raise ValueError("a user-owned source node needs the user's ID")


@dataclass(frozen=True)
class OutputChunk:
    """One write of session output, `at` seconds after the session started."""

    at: float
    text: str


def go_json(value: object) -> str:
    """Encode like Go's json.Marshal (compact, HTML-safe escapes, UTF-8 kept)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def go_float(seconds: float) -> str:
    """Format a session time as Go's encoding/json does (exponent form only below 1e-6)."""
    if 0 < abs(seconds) < 1e-6:
        mantissa, exponent = repr(seconds).split("e")
        return f"{mantissa}e-{exponent[1:].lstrip('0')}"
    return repr(float(seconds)).removesuffix(".0")


def connection_id(now: datetime.datetime) -> str:
    """Return a connection ID as the SSH server makes one: ssh-conn-<UTC time>-<10 hex>."""
    return f"ssh-conn-{now.astimezone(datetime.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(5)}"


def cast_header(
    *,
    source: SourceNode,
    ssh_user: str,
    local_user: str | None = None,
    started: datetime.datetime,
    command: str = "",
    width: int = 80,
    height: int = 24,
    term: str = "xterm-256color",
    connection: str | None = None,
) -> dict[str, object]:
    """Return the header object, keys in the SSH server's order; `command` is omitted if empty.

    `width`/`height` are 0 for a session without a PTY. The destination node is not in the
    header: it is the directory the recording is filed under.
    """
    header: dict[str, object] = {
        "version": 2, "width": width, "height": height, "timestamp": int(started.timestamp()),
    }
    if command:
        header["command"] = command
    header["srcNode"] = source.name
    header["srcNodeID"] = source.node_id
    if source.tags:
        header["srcNodeTags"] = list(source.tags)
    else:
        header["srcNodeUserID"] = source.user_id
        header["srcNodeUser"] = source.login
    header["env"] = {"TERM": term}
    header["sshUser"] = ssh_user
    header["localUser"] = local_user if local_user is not None else ssh_user
    header["connectionID"] = connection or connection_id(started)
    return header


def header_line(header: Mapping[str, object]) -> bytes:
    """Return the first line of a .cast file."""
    return go_json(dict(header)).encode() + b"\n"


def event_line(chunk: OutputChunk) -> bytes:
    """Return one `[seconds, "o", text]` line."""
    return f"[{go_float(chunk.at)},\"o\",{go_json(chunk.text)}]\n".encode()


def render_cast(
    header: Mapping[str, object], events: Iterable[OutputChunk], *, cut_at: int | None = None
) -> bytes:
    """Return a whole .cast file; `cut_at` keeps only that many bytes (an upload cut off).

    The header is a plain mapping, so a test can drop or alter keys to make a malformed file.
    """
    data = header_line(header) + b"".join(event_line(chunk) for chunk in events)
    return data if cut_at is None else data[:cut_at]


def shell_output(
    prompt: str, commands: Sequence[tuple[str, str]], *, start: float = 0.5, pace: float = 0.8
) -> list[OutputChunk]:
    """Return the output of an interactive shell: prompt, the echoed command, its output.

    Keystrokes are not recorded, but the terminal echoes typed commands, so they appear as
    output, one character per write as a shell's line editor sends them.
    """
    chunks = [OutputChunk(start, prompt)]
    at = start
    for command, output in commands:
        for char in command:
            at += 0.12
            chunks.append(OutputChunk(round(at, 6), char))
        at += 0.15
        chunks.append(OutputChunk(round(at, 6), "\r\n"))
        if output:
            at += 0.05
            chunks.append(OutputChunk(round(at, 6), output.replace("\n", "\r\n")))
        at += pace
        chunks.append(OutputChunk(round(at, 6), prompt))
    return chunks
