"""A minimal stand-in for the control simulator's enrollment protocol (tests/sim/README.md).

Used by these tests only while tests/sim/control/ has no ControlServer yet. It implements
`/sim/v1/register`, `/sim/v1/poll` and `/sim/v1/logout` and nothing of the API v2.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TAILNET = "example.com"
MAGIC_DNS_SUFFIX = "tail1a2b3c.ts.net"
OFFLINE_AFTER_S = 15.0


@dataclass
class AuthKey:
    """An auth key and what it permits."""

    key: str
    tags: list[str]
    reusable: bool
    used: bool = False


@dataclass
class Device:
    """One enrolled node as the control plane sees it."""

    node: dict[str, Any]
    machine_key: str
    last_seen: float = field(default_factory=time.monotonic)
    key_expired: bool = False


class ControlStandin:
    """Enrollment endpoints served on `host` in a thread."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, AuthKey] = {}
        self.devices: dict[str, Device] = {}
        self.httpd = ThreadingHTTPServer((host, port), self.handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The login server URL."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def create_key(self, tags: list[str], reusable: bool = False) -> str:
        """Make an auth key permitting `tags`."""
        key = "tskey-auth-k" + secrets.token_hex(8) + "-" + secrets.token_hex(16)
        with self.lock:
            self.keys[key] = AuthKey(key=key, tags=list(tags), reusable=reusable)
        return key

    def device_list(self) -> list[dict[str, Any]]:
        """The devices, shaped like the API's device list entries."""
        with self.lock:
            return [
                {**device.node, "online": self.is_online(device), "keyExpired": device.key_expired}
                for device in self.devices.values()
            ]

    def is_online(self, device: Device) -> bool:
        """A device is online when it polled in the last OFFLINE_AFTER_S seconds."""
        return not device.key_expired and time.monotonic() - device.last_seen < OFFLINE_AFTER_S

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def register(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Handle /sim/v1/register."""
        with self.lock:
            key = self.keys.get(body["authKey"])
            if key is None or (key.used and not key.reusable):
                return 401, {"message": "invalid key: unable to validate API key"}
            wanted = list(body["advertiseTags"])
            refused = [tag for tag in wanted if tag not in key.tags]
            if refused:
                listed = " ".join(refused)
                return 400, {"message": f"requested tags [{listed}] are invalid or not permitted"}
            key.used = True
            device = next(
                (d for d in self.devices.values() if d.machine_key == body["machineKey"]), None
            )
            if device is None:
                number = len(self.devices) + 1
                node_id = f"n{secrets.token_hex(6)}CNTRL"
                node = {
                    "id": str(1000 + number),
                    "nodeId": node_id,
                    "addresses": [f"100.64.0.{number}", f"fd7a:115c:a1e0::{number}"],
                    "user": TAILNET if not wanted else "",
                    "tailnet": TAILNET,
                    "magicDNSSuffix": MAGIC_DNS_SUFFIX,
                    "authorized": True,
                }
                device = Device(node=node, machine_key=body["machineKey"])
                self.devices[node_id] = device
            device.node.update(
                hostname=body["hostname"],
                name=f"{body['hostname']}.{MAGIC_DNS_SUFFIX}",
                tags=wanted,
                os=body["os"],
                clientVersion=body["clientVersion"],
                endpoint=body["endpoint"],
                online=True,
            )
            device.key_expired = False
            device.last_seen = time.monotonic()
            return 200, {"node": dict(device.node)}

    def poll(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Handle /sim/v1/poll."""
        with self.lock:
            for device in self.devices.values():
                if device.machine_key == body["machineKey"] and not device.key_expired:
                    device.last_seen = time.monotonic()
                    device.node["clientVersion"] = body["clientVersion"]
                    return 200, {"node": {**device.node, "online": True}}
            return 404, {"message": "node not found"}

    def logout(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Handle /sim/v1/logout."""
        with self.lock:
            for device in self.devices.values():
                if device.machine_key == body["machineKey"]:
                    device.key_expired = True
                    return 200, {}
            return 404, {"message": "node not found"}

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """Return a request handler bound to this server's state."""
        control = self
        routes = {
            "/sim/v1/register": control.register,
            "/sim/v1/poll": control.poll,
            "/sim/v1/logout": control.logout,
        }

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """No access log."""

            def do_POST(self) -> None:
                route = routes.get(self.path)
                if route is None:
                    status, answer = 404, {"message": "not found"}
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    status, answer = route(json.loads(self.rfile.read(length)))
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
