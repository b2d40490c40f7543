"""The recording endpoints on port 80: legacy HTTP/1.1 `/record` and HTTP/2 cleartext `/v2/record`.

Reference section 2: SSH servers probe `HEAD /v2/record` over HTTP/2 cleartext (prior
knowledge), then stream `POST /v2/record`, answered by newline-delimited `{"ack": <bytes>}`
frames (and `{"error": "..."}` as the last frame on failure); the recorder sends acks even while
the session is idle. Older servers use `POST /record` over HTTP/1.1 with `Expect: 100-continue`.

Who is calling: the real recorder asks its tsnet node who the peer is (WhoIs on the tailnet
address) and files the recording under that node's stable ID. The lab has no tailnet data plane,
so the SSH server names itself in the `Sim-Caller-Node-ID` request header (see README.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from .storage import Recording, Storage, StorageError

log = logging.getLogger("tsrecorder")

PORT = 80
CALLER_HEADER = "sim-caller-node-id"
KEY_HEADER = "sim-recording-key"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Acks go out on every data frame and at least this often while a session is idle, well inside
# the SSH server's 30 s window.
IDLE_ACK_INTERVAL_S = 10.0
NODE_ID = re.compile(r"^n[0-9A-Za-z]+CNTRL$")
MAX_HEADER_BYTES = 65536


def caller_node_id(value: str | None) -> str:
    """Return the caller's stable node ID, or raise ValueError when it is missing or malformed."""
    if value is None or not NODE_ID.match(value):
        raise ValueError(f"cannot identify the calling node (header {CALLER_HEADER}: {value!r})")
    return value


class RecordingServer:
    """Accepts connections on <address>:80 and serves each in its own thread."""

    def __init__(self, address: str, storage: Storage) -> None:
        self.storage = storage
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, PORT))
        self.listener.listen(64)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.serve, name="accept", daemon=True)

    def start(self) -> None:
        """Start accepting."""
        log.info("listening on %s:%d", *self.listener.getsockname()[:2])
        self.thread.start()

    def close(self) -> None:
        """Stop accepting (uploads in progress end with the process)."""
        self.closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def serve(self) -> None:
        """Accept loop."""
        while not self.closed.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn, peer), daemon=True).start()

    def handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Serve one connection as HTTP/2 (when it starts with the preface) or HTTP/1.1."""
        try:
            with conn:
                if self.starts_with_preface(conn):
                    Http2Connection(conn, self.storage).serve()
                else:
                    with conn.makefile("rb") as reader:
                        Http1Exchange(conn, reader, self.storage).serve()
        except (OSError, h2.exceptions.ProtocolError) as error:
            log.info("connection from %s ended: %s", peer[0], error)

    @staticmethod
    def starts_with_preface(conn: socket.socket) -> bool:
        """Peek at the first bytes without consuming them."""
        conn.settimeout(IDLE_ACK_INTERVAL_S * 3)
        seen = b""
        while len(seen) < len(H2_PREFACE):
            seen = conn.recv(len(H2_PREFACE), socket.MSG_PEEK)
            if not seen or not H2_PREFACE.startswith(seen):
                return False
        return True


@dataclass
class Http1Exchange:
    """One HTTP/1.1 request on a connection that is then closed."""

    conn: socket.socket
    reader: BinaryIO
    storage: Storage

    def reply(self, status: str, body: str = "", headers: dict[str, str] | None = None) -> None:
        """Send a final response and close the exchange."""
        payload = body.encode()
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(payload)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if payload:
            lines.append("Content-Type: text/plain; charset=utf-8")
        self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def serve(self) -> None:
        """Read the request head and route it."""
        request_line = self.reader.readline(MAX_HEADER_BYTES).decode("latin-1").strip()
        if not request_line:
            return
        headers: dict[str, str] = {}
        while True:
            line = self.reader.readline(MAX_HEADER_BYTES).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.reply("400 Bad Request", "malformed request line\n")
            return
        method, path = parts[0], parts[1]
        if path == "/record" and method == "POST":
            self.record(headers)
        elif path == "/v2/record" and method == "HEAD":
            # A Go server answers the probe on HTTP/1.1 too; the SSH server then sees
            # ProtoMajor 1 and falls back to /record.
            self.reply("200 OK")
        elif path in ("/record", "/v2/record"):
            self.reply("405 Method Not Allowed", "method not allowed\n")
        else:
            self.reply("404 Not Found", "404 page not found\n")

    def record(self, headers: dict[str, str]) -> None:
        """The legacy upload: 100-continue once storage is ready, then the body until its end."""
        try:
            node_id = caller_node_id(headers.get(CALLER_HEADER))
        except ValueError as error:
            self.reply("400 Bad Request", f"{error}\n")
            return
        try:
            recording = self.storage.open(node_id)
        except StorageError as error:
            log.error("%s", error)
            self.reply("500 Internal Server Error", f"{error}\n")
            return
        log.info("recording %s (legacy /record)", recording.key)
        if headers.get("expect", "").lower() == "100-continue":
            self.conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.conn.settimeout(None)
        try:
            complete = self.copy_body(headers, recording)
        except ValueError:  # a malformed chunk size: the upload is broken off here
            complete = False
        except StorageError as error:
            log.error("%s", error)
            with contextlib.suppress(StorageError):
                recording.close()
            self.reply("500 Internal Server Error", f"{error}\n")
            return
        try:
            recording.close()
        except StorageError as error:
            log.error("%s", error)
            self.reply("500 Internal Server Error", f"{error}\n")
            return
        if complete:
            log.info("recording %s complete", recording.key)
            self.reply("200 OK", headers={"Sim-Recording-Key": recording.key})
        else:
            log.info("recording %s cut off by the SSH server", recording.key)

    def copy_body(self, headers: dict[str, str], recording: Recording) -> bool:
        """Copy the request body into `recording`; return False when the client went away."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = self.reader.readline(MAX_HEADER_BYTES)
                if not size_line.endswith(b"\n"):
                    return False
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.reader.readline(MAX_HEADER_BYTES) not in (b"\r\n", b"\n", b""):
                        pass
                    return True
                data = self.reader.read(size + 2)
                if len(data) < size + 2:
                    recording.write(data[:size])
                    return False
                recording.write(data[:size])
        remaining = int(headers.get("content-length", "0"))
        while remaining > 0:
            data = self.reader.read(min(remaining, 65536))
            if not data:
                return False
            recording.write(data)
            remaining -= len(data)
        return True


@dataclass
class Upload:
    """One `POST /v2/record` stream being stored."""

    recording: Recording
    received: int = 0
    last_ack: float = field(default_factory=time.monotonic)


class Http2Connection:
    """An HTTP/2 cleartext connection (prior knowledge) carrying probes and uploads."""

    def __init__(self, conn: socket.socket, storage: Storage) -> None:
        self.conn = conn
        self.storage = storage
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.uploads: dict[int, Upload] = {}

    def flush(self) -> None:
        """Send whatever the protocol state machine has queued."""
        data = self.h2.data_to_send()
        if data:
            self.conn.sendall(data)

    def serve(self) -> None:
        """Run the connection until the client closes it."""
        self.conn.settimeout(None)
        self.h2.initiate_connection()
        self.flush()
        try:
            while True:
                readable, _, _ = select.select([self.conn], [], [], 1.0)
                if readable:
                    data = self.conn.recv(65536)
                    if not data:
                        return
                    for event in self.h2.receive_data(data):
                        self.on_event(event)
                self.idle_acks()
                self.flush()
        finally:
            for upload in self.uploads.values():
                log.info("recording %s cut off by the SSH server", upload.recording.key)
                with contextlib.suppress(StorageError):
                    upload.recording.close()

    def on_event(self, event: h2.events.Event) -> None:
        """Dispatch one protocol event."""
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            self.on_request(event.stream_id, {str(k): str(v) for k, v in event.headers})
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            self.on_data(event.stream_id, event.data)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            self.on_end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            upload = self.uploads.pop(event.stream_id, None)
            if upload is not None:
                log.info("recording %s cut off by the SSH server", upload.recording.key)
                with contextlib.suppress(StorageError):
                    upload.recording.close()

    def respond(self, stream_id: int, status: int, body: str = "") -> None:
        """Send a complete small response."""
        self.h2.send_headers(stream_id, [(":status", str(status))], end_stream=not body)
        if body:
            self.h2.send_data(stream_id, body.encode(), end_stream=True)

    def on_request(self, stream_id: int, headers: dict[str, str]) -> None:
        """Route a request by method and path."""
        method, path = headers.get(":method"), headers.get(":path")
        if path == "/v2/record" and method == "HEAD":
            self.respond(stream_id, 200)
        elif path == "/v2/record" and method == "POST":
            try:
                node_id = caller_node_id(headers.get(CALLER_HEADER))
                recording = self.storage.open(node_id)
            except ValueError as error:
                self.respond(stream_id, 400, f"{error}\n")
                return
            except StorageError as error:
                log.error("%s", error)
                self.respond(stream_id, 500, f"{error}\n")
                return
            log.info("recording %s (/v2/record)", recording.key)
            self.uploads[stream_id] = Upload(recording)
            self.h2.send_headers(stream_id, [
                (":status", "200"), ("content-type", "application/json"),
                (KEY_HEADER, recording.key),
            ])
        elif path in ("/record", "/v2/record"):
            self.respond(stream_id, 405, "method not allowed\n")
        else:
            self.respond(stream_id, 404, "404 page not found\n")

    def send_frame(self, stream_id: int, frame: dict[str, object], *, last: bool = False) -> None:
        """Send one newline-delimited JSON frame of the v2 response."""
        self.h2.send_data(stream_id, json.dumps(frame, separators=(",", ":")).encode() + b"\n",
                          end_stream=last)

    def fail(self, stream_id: int, error: StorageError) -> None:
        """Report a storage failure as the last frame; the SSH server then gives up."""
        log.error("%s", error)
        upload = self.uploads.pop(stream_id)
        with contextlib.suppress(StorageError):
            upload.recording.close()
        self.send_frame(stream_id, {"error": str(error)}, last=True)

    def on_data(self, stream_id: int, data: bytes) -> None:
        """Store a piece of the upload and acknowledge it."""
        upload = self.uploads.get(stream_id)
        if upload is None:
            return
        try:
            upload.recording.write(data)
        except StorageError as error:
            self.fail(stream_id, error)
            return
        upload.received += len(data)
        upload.last_ack = time.monotonic()
        self.send_frame(stream_id, {"ack": upload.received})

    def on_end(self, stream_id: int) -> None:
        """The SSH server finished the session: store it and end the response."""
        upload = self.uploads.get(stream_id)
        if upload is None:
            return
        try:
            upload.recording.close()
        except StorageError as error:
            self.fail(stream_id, error)
            return
        del self.uploads[stream_id]
        log.info("recording %s complete", upload.recording.key)
        self.send_frame(stream_id, {"ack": upload.received}, last=True)

    def idle_acks(self) -> None:
        """Re-send the current ack on idle uploads, so the SSH server knows the link lives."""
        now = time.monotonic()
        for stream_id, upload in self.uploads.items():
            if now - upload.last_ack >= IDLE_ACK_INTERVAL_S:
                upload.last_ack = now
                self.send_frame(stream_id, {"ack": upload.received})
