"""Joining the simulated tailnet: the enrollment protocol of tests/sim/README.md.

The real recorder joins with tsnet: its identity and tags come from its own auth key, and its
node state lives in the state directory, so a restart keeps the same device.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from . import VERSION

log = logging.getLogger("tsrecorder")

STATE_FILE = "tsrecorder.state"
# A device not polled for 15 s is offline (tests/sim/README.md); poll well within that.
POLL_INTERVAL_S = 5.0
CONTROL_TIMEOUT_S = 10.0


class JoinError(Exception):
    """The recorder cannot join (or stay on) the tailnet."""


class ControlClient:
    """JSON over HTTP(S) to the control server's /sim/v1/ endpoints."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise JoinError(f"TSRECORDER_LOGIN_SERVER {url!r} is not an http(s) URL")
        self.url = url
        self.https = parsed.scheme == "https"
        self.netloc = parsed.netloc
        self.prefix = parsed.path.rstrip("/")

    def connection(self) -> http.client.HTTPConnection:
        """Open a connection to the control server."""
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.netloc, timeout=CONTROL_TIMEOUT_S)
        try:
            conn.connect()
        except OSError as error:
            raise JoinError(f"cannot reach the control server {self.url}: {error}") from error
        return conn

    def local_address(self) -> str:
        """Return this machine's address on the path to the control server (the lab address)."""
        conn = self.connection()
        try:
            assert conn.sock is not None
            address: str = conn.sock.getsockname()[0]
            return address
        finally:
            conn.close()

    def call(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST `body` to /sim/v1/<endpoint>; return the status and the decoded answer."""
        conn = self.connection()
        try:
            conn.request("POST", f"{self.prefix}/sim/v1/{endpoint}", body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        except OSError as error:
            raise JoinError(f"control server {self.url}: {error}") from error
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as error:
            raise JoinError(f"control server sent {response.status} and no JSON") from error
        return response.status, answer if isinstance(answer, dict) else {}


class Tailnet:
    """This recorder's device: registration, state file and heartbeat."""

    def __init__(
        self, control: ControlClient, statedir: Path, hostname: str, endpoint: str,
        auth_key: str | None,
    ) -> None:
        self.control = control
        self.state_path = statedir / STATE_FILE
        self.hostname = hostname
        self.endpoint = endpoint
        self.auth_key = auth_key
        self.machine_key = ""
        self.failure: str | None = None

    def load_state(self) -> dict[str, Any] | None:
        """Return the saved state, or None on first start."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise JoinError(f"reading state {self.state_path}: {error}") from error
        return state if isinstance(state, dict) and state.get("machineKey") else None

    def save_state(self, node: dict[str, Any]) -> None:
        """Write the state atomically, readable by this user only."""
        temporary = self.state_path.with_suffix(".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"machineKey": self.machine_key, "node": node}, handle)
            temporary.replace(self.state_path)
        except OSError as error:
            raise JoinError(f"writing state {self.state_path}: {error}") from error

    def poll(self) -> tuple[int, dict[str, Any]]:
        """Heartbeat once."""
        return self.control.call(
            "poll", {"machineKey": self.machine_key, "ssh": False, "clientVersion": VERSION}
        )

    def join(self) -> dict[str, Any]:
        """Resume the saved device, or register with the auth key; return the node."""
        state = self.load_state()
        if state is not None:
            self.machine_key = str(state["machineKey"])
            status, answer = self.poll()
            if status == 200:
                node: dict[str, Any] = answer["node"]
                self.save_state(node)
                return node
            if status != 404:
                raise JoinError(f"poll: {status} {answer.get('message', '')}")
            log.info("the saved device was deleted or logged out: it needs a new login")
        else:
            self.machine_key = "mkey:" + secrets.token_hex(32)
        if not self.auth_key:
            raise JoinError("NeedsLogin: no auth key (set TS_AUTHKEY or TS_AUTHKEY_FILE)")
        status, answer = self.control.call("register", {
            "authKey": self.auth_key, "machineKey": self.machine_key, "hostname": self.hostname,
            # The device's tags are the auth key's (the recorder advertises none of its own).
            "advertiseTags": [], "os": "linux", "clientVersion": VERSION,
            "endpoint": self.endpoint, "ssh": False,
        })
        if status != 200:
            raise JoinError(f"registering with the auth key failed: {status} "
                            f"{answer.get('message', '')}")
        node = answer["node"]
        self.save_state(node)
        return node

    def start_heartbeat(self, stop: threading.Event) -> None:
        """Poll in the background; set `stop` (with `failure`) if the device is gone."""

        def loop() -> None:
            while not stop.wait(POLL_INTERVAL_S):
                try:
                    status, answer = self.poll()
                except JoinError as error:
                    log.warning("heartbeat: %s", error)
                    continue
                if status == 404:
                    self.failure = "the device was deleted or logged out (NeedsLogin)"
                    stop.set()
                elif status != 200:
                    log.warning("heartbeat: %s %s", status, answer.get("message", ""))

        threading.Thread(target=loop, name="heartbeat", daemon=True).start()
