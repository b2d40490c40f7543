"""The session generator: open a recorded SSH session the way a Tailscale SSH server does.

Runs in the test process, standing in for the SSH server on the destination node. Reference
sections 2-4: the first matching SSH rule decides; its `recorder` tag names the recorders; the
online ones are tried lowest tailnet IP first, each probed with `HEAD /v2/record` over HTTP/2
cleartext, then sent the `.cast` stream with `POST /v2/record` (acks expected at least every
30 s) or, when the probe fails, with the legacy `POST /record` over HTTP/1.1. With
`enforceRecorder`, no accepting recorder refuses the session and a failed upload ends it.

Recorders are reached at their lab endpoint on port 80 (the lab has no tailnet data plane); the
SSH server's stable node ID travels in the `Sim-Caller-Node-ID` header (see README.md).
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import ipaddress
import json
import select
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions

# Relative, so that these modules also run inside lab hosts, embedded in the simulated
# tailscaled's SSH server (../tailscale/package/tailssh.py).
from .cast import OutputChunk, SourceNode, cast_header, event_line, header_line
from .sshrules import SSHRule, matching_rule, target_of

if TYPE_CHECKING:
    from tests.sim.control import ControlServer
    from tests.sim.control.state import Device

RECORDER_PORT = 80
DIAL_TIMEOUT_S = 5.0  # per recorder address
PROBE_TIMEOUT_S = 10.0  # the HEAD /v2/record probe
ACK_WINDOW_S = 30.0  # abort when the recorder acknowledges nothing for this long
CALLER_HEADER = "Sim-Caller-Node-ID"
KEY_HEADER = "sim-recording-key"


class Outcome(enum.Enum):
    """How a session went."""

    DENIED = "denied"  # no SSH rule lets the source in
    REFUSED = "refused"  # enforceRecorder, recorders online, and none accepted the recording
    # allowed without a recording: none asked, no recorder online (even if enforced), or none
    # accepted and not enforced
    UNRECORDED = "unrecorded"
    RECORDED = "recorded"  # every output chunk was acknowledged and the recording stored
    ENDED = "ended"  # enforceRecorder and the upload failed mid-way: the session was cut
    RECORDING_FAILED = "recording-failed"  # upload failed mid-way, session went on unrecorded


class UploadError(Exception):
    """A recorder refused or dropped a recording."""


@dataclass(frozen=True)
class Recorder:
    """A recorder node as the SSH server sees it."""

    name: str
    node_id: str
    ipv4: str  # tailnet address, the order recorders are tried in
    endpoint: str  # lab address where its port 80 is reached


@dataclass(frozen=True)
class Attempt:
    """One recorder tried when the session started."""

    recorder: Recorder
    protocol: str | None  # "v2", "v1", or None when nothing answered
    error: str | None  # None when this recorder accepted


@dataclass(frozen=True)
class SessionResult:
    """What happened to a session and its recording."""

    outcome: Outcome
    rule: SSHRule | None
    attempts: tuple[Attempt, ...] = ()
    recorder: Recorder | None = None
    protocol: str | None = None
    key: str | None = None  # where it landed, relative to the recorder's --dst (or bucket)
    delivered: int = 0  # output chunks the user saw before the session ended
    failure: str | None = None  # why the upload failed mid-way
    sent: bytes = b""  # the .cast bytes the SSH server sent

    @property
    def accepted(self) -> bool:
        """Return whether the session was let in at all."""
        return self.outcome not in (Outcome.DENIED, Outcome.REFUSED)


class Upload(Protocol):
    """A started upload of one recording."""

    protocol: str

    def send(self, data: bytes) -> None:
        """Send bytes of the .cast stream; raise UploadError when the recorder is gone."""

    def finish(self) -> str:
        """End the stream and return the key the recorder stored it under."""

    def abort(self) -> None:
        """Drop the connection without finishing."""

    def poll(self) -> None:
        """Between writes: raise UploadError when the recorder failed or went silent."""


def dial(address: str, port: int) -> socket.socket:
    """Connect to a recorder within the per-address dial timeout."""
    return socket.create_connection((address, port), timeout=DIAL_TIMEOUT_S)


@dataclass
class V2Upload:
    """`POST /v2/record` over an HTTP/2 cleartext connection, with ack tracking."""

    sock: socket.socket
    conn: h2.connection.H2Connection
    stream_id: int
    ack_window: float
    protocol: str = "v2"
    key: str = ""
    acked: int = 0
    sent_bytes: int = 0
    last_ack: float = field(default_factory=time.monotonic)
    frames: bytes = b""
    ended: bool = False
    error: str | None = None

    @classmethod
    def start(
        cls, address: str, port: int, authority: str, caller: str, ack_window: float
    ) -> V2Upload | None:
        """Probe with HEAD; return None when the recorder does not speak v2, else start the POST."""
        try:
            sock = dial(address, port)
        except OSError as error:
            raise UploadError(f"dial {address}:{port}: {error}") from error
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        upload = cls(sock, conn, 0, ack_window)
        try:
            conn.initiate_connection()
            probe = conn.get_next_available_stream_id()
            conn.send_headers(probe, upload.request_headers("HEAD", authority), end_stream=True)
            upload.flush()
            status = upload.wait_for_headers(probe, PROBE_TIMEOUT_S)
        except (OSError, UploadError, h2.exceptions.ProtocolError):
            sock.close()
            return None
        if status != 200:
            sock.close()
            return None
        try:
            upload.stream_id = conn.get_next_available_stream_id()
            headers = upload.request_headers("POST", authority)
            headers.append((CALLER_HEADER.lower(), caller))
            conn.send_headers(upload.stream_id, headers)
            upload.flush()
            status = upload.wait_for_headers(upload.stream_id, DIAL_TIMEOUT_S * 2)
        except (OSError, UploadError, h2.exceptions.ProtocolError) as error:
            sock.close()
            raise UploadError(f"POST /v2/record: {error}") from error
        if status != 200:
            sock.close()
            raise UploadError(f"POST /v2/record: unexpected status {status}")
        upload.last_ack = time.monotonic()
        return upload

    @staticmethod
    def request_headers(method: str, authority: str) -> list[tuple[str, str]]:
        """Return the pseudo-headers of a request to /v2/record."""
        return [(":method", method), (":scheme", "http"), (":authority", authority),
                (":path", "/v2/record")]

    def flush(self) -> None:
        """Send what the connection has queued."""
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout: float) -> list[h2.events.Event]:
        """Read whatever arrives within `timeout`; return the events."""
        readable, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not readable:
            return []
        data = self.sock.recv(65536)
        if not data:
            raise UploadError("the recorder closed the connection")
        events = self.conn.receive_data(data)
        for event in events:
            self.on_event(event)
        self.flush()
        return events

    def wait_for_headers(self, stream_id: int, timeout: float) -> int:
        """Wait for the response status of `stream_id`."""
        self.sock.settimeout(None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.pump(deadline - time.monotonic()):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    headers = {str(k): str(v) for k, v in event.headers or []}
                    if stream_id == self.stream_id:
                        self.key = headers.get(KEY_HEADER, "")
                    return int(headers[":status"])
        raise UploadError("no response in time")

    def on_event(self, event: h2.events.Event) -> None:
        """Track acks, errors and the end of the response stream."""
        if isinstance(event, h2.events.DataReceived) and event.stream_id == self.stream_id:
            self.conn.acknowledge_received_data(event.flow_controlled_length or 0, self.stream_id)
            self.frames += event.data or b""
            while b"\n" in self.frames:
                line, self.frames = self.frames.split(b"\n", 1)
                frame = json.loads(line)
                if frame.get("error"):
                    self.error = f"received error from the recorder: {frame['error']!r}"
                self.acked = max(self.acked, int(frame.get("ack", 0)))
                self.last_ack = time.monotonic()
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream_id:
            self.ended = True
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream_id:
            self.error = "the recorder reset the stream"
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.error = "the recorder ended the connection"

    def check(self, *, finishing: bool = False) -> None:
        """Raise UploadError when the recorder failed or stopped acknowledging."""
        if self.error is not None:
            raise UploadError(self.error)
        if self.ended and not finishing:
            raise UploadError("the recorder ended the response early")
        if time.monotonic() - self.last_ack > self.ack_window:
            raise UploadError(f"did not receive ack frames from the recorder in {self.ack_window}s")

    def send(self, data: bytes) -> None:
        """Send within HTTP/2 flow control, reading acks as they come."""
        try:
            self.pump(0)
            self.check()
            view = memoryview(data)
            while view:
                window = min(self.conn.local_flow_control_window(self.stream_id),
                             self.conn.max_outbound_frame_size)
                if window <= 0:
                    self.pump(1.0)
                    self.check()
                    continue
                self.conn.send_data(self.stream_id, bytes(view[:window]))
                self.flush()
                view = view[window:]
            self.sent_bytes += len(data)
        except (OSError, h2.exceptions.ProtocolError, ValueError) as error:
            raise UploadError(str(error)) from error

    def finish(self) -> str:
        """End the request body and wait for the recorder's last frame."""
        try:
            self.pump(0)
            self.check()
            self.conn.end_stream(self.stream_id)
            self.flush()
            while not self.ended:
                self.pump(1.0)
                self.check(finishing=True)
        except (OSError, h2.exceptions.ProtocolError, ValueError) as error:
            raise UploadError(str(error)) from error
        finally:
            self.sock.close()
        if self.acked != self.sent_bytes:
            raise UploadError(f"recorder acknowledged {self.acked} of {self.sent_bytes} bytes")
        return self.key

    def abort(self) -> None:
        """Close the connection."""
        self.sock.close()

    def poll(self) -> None:
        """Read pending acks or errors; raise UploadError on an error or a missing ack."""
        try:
            self.pump(0)
        except (OSError, h2.exceptions.ProtocolError, ValueError) as error:
            raise UploadError(str(error)) from error
        self.check()


@dataclass
class V1Upload:
    """Legacy `POST /record` over HTTP/1.1 with a chunked body and `Expect: 100-continue`."""

    sock: socket.socket
    reader: BinaryIO
    protocol: str = "v1"

    @classmethod
    def start(cls, address: str, port: int, authority: str, caller: str) -> V1Upload:
        """Send the request head and wait for 100 Continue."""
        try:
            sock = dial(address, port)
        except OSError as error:
            raise UploadError(f"dial {address}:{port}: {error}") from error
        reader = sock.makefile("rb")
        try:
            sock.sendall(
                f"POST /record HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Go-http-client/1.1\r\n"
                f"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
                f"{CALLER_HEADER}: {caller}\r\n\r\n".encode()
            )
            status, _ = read_response_head(reader)
        except OSError as error:
            reader.close()
            sock.close()
            raise UploadError(f"POST /record: {error}") from error
        if status != 100:
            reader.close()
            sock.close()
            raise UploadError(f"POST /record: unexpected status {status}")
        return cls(sock, reader)

    def send(self, data: bytes) -> None:
        """Send one chunk; a response arriving early means the recorder gave up."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            raise UploadError("the recorder answered (or closed) before the upload ended")
        try:
            self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        except OSError as error:
            raise UploadError(str(error)) from error

    def finish(self) -> str:
        """Send the last chunk and read the final status."""
        try:
            self.sock.sendall(b"0\r\n\r\n")
            status, headers = read_response_head(self.reader)
        except OSError as error:
            raise UploadError(str(error)) from error
        finally:
            self.abort()
        if status != 200:
            raise UploadError(f"recording: unexpected status {status}")
        return headers.get(KEY_HEADER, "")

    def abort(self) -> None:
        """Close the connection."""
        self.reader.close()
        self.sock.close()

    def poll(self) -> None:
        """An answer (or a close) before the body ended means the recorder gave up."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            raise UploadError("the recorder answered (or closed) before the upload ended")


def read_response_head(reader: BinaryIO) -> tuple[int, dict[str, str]]:
    """Read a status line and headers; raise UploadError on a closed connection."""
    status_line = reader.readline(65536).decode("latin-1")
    if not status_line:
        raise UploadError("the recorder closed the connection")
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(65536).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def connect(
    recorders: Sequence[Recorder], caller: str, port: int, ack_window: float
) -> tuple[Upload | None, list[Attempt]]:
    """Try each recorder in order: v2 when the probe says so, else v1; return the first upload."""
    attempts = []
    for recorder in recorders:
        authority = f"{recorder.ipv4}:{port}"
        protocol = "v2"
        try:
            upload: Upload | None = V2Upload.start(
                recorder.endpoint, port, authority, caller, ack_window
            )
            if upload is None:
                protocol = "v1"
                upload = V1Upload.start(recorder.endpoint, port, authority, caller)
        except UploadError as error:
            attempts.append(Attempt(recorder, protocol, str(error)))
            continue
        attempts.append(Attempt(recorder, protocol, None))
        return upload, attempts
    return None, attempts


def recorders_for(tag: str, devices: Iterable[Device], now: float) -> list[Recorder]:
    """Return the online nodes carrying `tag`, lowest tailnet IPv4 address first."""
    found = []
    for device in devices:
        if tag in device.tags and device.online(now):
            ipv4 = next(a for a in device.addresses if ipaddress.ip_address(a).version == 4)
            found.append(Recorder(device.name, device.node_id, ipv4, device.endpoint))
    return sorted(found, key=lambda r: ipaddress.IPv4Address(r.ipv4))


def recorders_from_peers(tag: str, peers: Iterable[Mapping[str, Any]]) -> list[Recorder]:
    """The same as recorders_for, from a netmap's peers (`/sim/v1/netmap`, on a lab host)."""
    found = []
    for peer in peers:
        if tag in peer["tags"] and peer["online"]:
            ipv4 = next(a for a in peer["addresses"] if ipaddress.ip_address(a).version == 4)
            found.append(Recorder(peer["name"], peer["nodeId"], ipv4, peer["endpoint"]))
    return sorted(found, key=lambda r: ipaddress.IPv4Address(r.ipv4))


def find_device(devices: Iterable[Device], name: str) -> Device:
    """Return the device whose hostname, MagicDNS name, node ID or ID is `name`."""
    for device in devices:
        if name in (device.hostname, device.name, device.node_id, device.id):
            return device
    raise LookupError(f"no device {name!r} in the tailnet")


def run_session(
    control: ControlServer,
    destination: str,
    source: SourceNode,
    ssh_user: str,
    output: Iterable[OutputChunk],
    *,
    command: str = "",
    term: str = "xterm-256color",
    width: int = 80,
    height: int = 24,
    ack_window: float = ACK_WINDOW_S,
) -> SessionResult:
    """Run a session against the control plane's current policy and devices (see play_session)."""
    from tests.sim.control import hujson

    state = control.state
    devices = state.devices()
    policy = hujson.loads(state.policy().text)
    return play_session(policy, devices, state.now(), find_device(devices, destination), source,
                        ssh_user, output, command=command, term=term, width=width, height=height,
                        ack_window=ack_window)


def play_session(
    policy: Mapping[str, Any],
    devices: Sequence[Device],
    now: float,
    destination: Device,
    source: SourceNode,
    ssh_user: str,
    output: Iterable[OutputChunk],
    *,
    command: str = "",
    term: str = "xterm-256color",
    width: int = 80,
    height: int = 24,
    ack_window: float = ACK_WINDOW_S,
) -> SessionResult:
    """Decide, connect, stream `output` as a .cast, and report what happened.

    `output` may be a generator: it runs between writes, so a test can break a recorder
    mid-session.
    """
    rule = matching_rule(policy, source, target_of(destination.tags, destination.user), ssh_user)
    if rule is None:
        return SessionResult(Outcome.DENIED, None)
    chunks = iter(output)
    if rule.recorder is None:
        return SessionResult(Outcome.UNRECORDED, rule, delivered=sum(1 for _ in chunks))
    recorders = recorders_for(rule.recorder, devices, now)
    if not recorders:  # no recorder address to send: unrecorded, even if enforced (fail-open)
        return SessionResult(Outcome.UNRECORDED, rule, delivered=sum(1 for _ in chunks))
    upload, attempts = connect(recorders, destination.node_id, RECORDER_PORT, ack_window)
    if upload is None:
        if rule.enforce_recorder:
            return SessionResult(Outcome.REFUSED, rule, tuple(attempts))
        return SessionResult(Outcome.UNRECORDED, rule, tuple(attempts),
                             delivered=sum(1 for _ in chunks))
    header = cast_header(source=source, ssh_user=ssh_user,
                         started=datetime.datetime.now(datetime.UTC), command=command,
                         width=width, height=height, term=term)
    result = SessionResult(Outcome.RECORDED, rule, tuple(attempts), attempts[-1].recorder,
                           upload.protocol)
    sent = bytearray()
    delivered = 0
    writing_chunk = False
    try:
        data = header_line(header)
        upload.send(data)
        sent += data
        for chunk in chunks:
            data = event_line(chunk)
            # The SSH server writes to the recording before the user's terminal.
            writing_chunk = True
            upload.send(data)
            writing_chunk = False
            sent += data
            delivered += 1
        key = upload.finish()
    except UploadError as error:
        with contextlib.suppress(OSError):
            upload.abort()
        if rule.enforce_recorder:
            return replace(result, outcome=Outcome.ENDED, delivered=delivered, sent=bytes(sent),
                           failure=str(error))
        # Fail open: the chunk whose write failed and the rest still reach the user.
        delivered += int(writing_chunk) + sum(1 for _ in chunks)
        return replace(result, outcome=Outcome.RECORDING_FAILED, delivered=delivered,
                       sent=bytes(sent), failure=str(error))
    return replace(result, delivered=delivered, sent=bytes(sent), key=key)
