"""The recorder's web UI (`--ui`): a list of recordings and each recording's `.cast`.

The real UI is served over HTTPS on the tailnet's :443 with a MagicDNS certificate; the lab has
neither, so this one speaks plain HTTP on the lab address's :443. It reads recordings back from
storage (in S3 mode that needs s3:ListBucket and s3:GetObject, reference section 2) and, like
the real one (issue #8418), fails the whole listing when one recording's header is unreadable.
"""

from __future__ import annotations

import html
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .storage import Storage, StorageError

log = logging.getLogger("tsrecorder")

PORT = 443


def summary(key: str, data: bytes) -> dict[str, Any]:
    """Return what the listing shows of one recording, from its header line."""
    header = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(header, dict):
        raise ValueError("the first line is not a JSON object")
    source = header.get("srcNodeUser") or ",".join(header.get("srcNodeTags") or [])
    return {"key": key, "node": key.split("/", 1)[0], "srcNode": header.get("srcNode"),
            "source": source, "sshUser": header.get("sshUser"),
            "timestamp": header.get("timestamp")}


def listing_page(storage: Storage) -> str:
    """Return the HTML list of recordings; raise ValueError/StorageError when one is broken."""
    rows = []
    for key in storage.recording_keys():
        try:
            item = summary(key, storage.read(key))
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from error
        cells = "".join(f"<td>{html.escape(str(item[name]))}</td>"
                        for name in ("node", "srcNode", "source", "sshUser", "timestamp"))
        rows.append(f'<tr>{cells}<td><a href="/recordings/{html.escape(key)}">cast</a></td></tr>')
    return ("<!doctype html><title>tsrecorder</title><table><tr><th>node</th><th>from</th>"
            "<th>user</th><th>ssh user</th><th>started</th><th></th></tr>"
            + "".join(rows) + "</table>\n")


class UiServer(ThreadingHTTPServer):
    """The UI's HTTP server on <address>:443."""

    daemon_threads = True

    def __init__(self, address: str, storage: Storage) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.storage = storage
        super().__init__((address, PORT), UiHandler)
        self.thread = threading.Thread(target=self.serve_forever, name="ui", daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        log.info("web UI on http://%s:%d/", *self.server_address[:2])
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        if self.thread.is_alive():
            self.shutdown()
        self.server_close()


class UiHandler(BaseHTTPRequestHandler):
    """GET / and GET /recordings/<key>."""

    server: UiServer

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        """Send a complete response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """Serve the listing or one recording."""
        storage = self.server.storage
        try:
            if self.path == "/":
                page = listing_page(storage)
                self.reply(200, page.encode(), "text/html; charset=utf-8")
            elif (key := self.path.removeprefix("/recordings/")) in storage.recording_keys():
                data = storage.read(key)
                self.reply(200, data, "application/x-asciicast")
            else:
                self.reply(404, b"404 page not found\n", "text/plain; charset=utf-8")
        except (StorageError, ValueError) as error:
            log.error("ui: %s", error)
            self.reply(500, f"error: {error}\n".encode(), "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests through the recorder's log."""
        log.info("ui: %s", format % args)
