#!/usr/bin/python3
"""Simulated `tailscaled` for lab hosts: keeps the node's state and talks to the control server.

Installed as /usr/sbin/tailscaled. Python 3 standard library only, except Tailscale SSH
(paramiko, h2: imported only when SSH runs). It serves the local API on a Unix socket for the
CLI, enrolls through the lab control simulator's `/sim/v1/register` and heartbeats with
`/sim/v1/poll` (see tests/sim/README.md). It sends nothing to any address but the login server
the node was given, and never to Tailscale's own control plane; Tailscale SSH also reaches the
recorders at their lab endpoints (tests/sim/recorder/README.md).

The data plane (lab hosts only, and only when the control server announces the lab's tailnet
prefix as `simTailnetPrefix`): while Running, the node's tailnet IPv4 address is on `eth0`
(there is no WireGuard: tailnet traffic rides the lab bridge), and with SSH on, Tailscale SSH
(tests/sim/recorder/tailssh.py, embedded below by the package builder) listens on it, port 22.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import os
import secrets
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import traceback
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

# Replaced by the package builder with the version being packaged.
VERSION = "0.0.0"
# Replaced by the package builder with the sources of the Tailscale SSH server's modules
# (tests/sim/recorder/{cast,sshrules,session,tailssh}.py), so that the one file is the whole
# daemon, as the real static binary is (the tarball install copies only this file). Empty when
# run from the source tree: they are read from there.
EMBEDDED_MODULES: dict[str, str] = {}
SSH_MODULES = ("cast", "sshrules", "session", "tailssh")
SOURCE_MODULES_DIR = Path(__file__).resolve().parent.parent.parent / "recorder"
# The data plane exists only inside lab hosts (their rootfs has this file): never touch the
# interfaces of the machine the tests run on.
LAB_MARKER = Path("/etc/tsops-lab-release")
DATAPLANE_INTERFACE = "eth0"
TAILNET_IPV4 = ipaddress.IPv4Network("100.64.0.0/10")

DEFAULT_CONTROL_URL = "https://controlplane.tailscale.com"
# Tailscale's own domains: this simulator must never contact the real control plane.
TAILSCALE_DOMAINS = ("tailscale.com", "tailscale.io")
# The control simulator marks a device offline after 15 s without a poll.
POLL_INTERVAL_S = 5.0
ONLINE_WINDOW_S = 15.0
REQUEST_TIMEOUT_S = 10.0
RETRY_INTERVAL_S = 1.0
DEFAULT_PREFS: dict[str, Any] = {
    "AdvertiseTags": [],
    "ControlURL": "",
    "Hostname": "",
    "RunSSH": False,
    "WantRunning": False,
}
ACCESS_DENIED = (
    "Access denied: prefs write access denied\n\n"
    "Use 'sudo tailscale up' or 'tailscale up --operator=$USER' to not require root."
)


class LocalAPIError(Exception):
    """An error answered to the CLI with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def log(message: str) -> None:
    """Write one line to stderr (the journal under systemd)."""
    print(message, file=sys.stderr, flush=True)


def long_version() -> str:
    """The long version string, as `tailscale version` derives it."""
    commit = "".join(f"{ord(char):02x}" for char in VERSION)[:9].ljust(9, "0")
    return f"{VERSION}-t{commit}-g{commit}"


def control_base(control_url: str) -> str:
    """Return the login server's base URL, refusing Tailscale's real control plane."""
    if not control_url or control_url == DEFAULT_CONTROL_URL:
        raise LocalAPIError(
            400,
            "this lab simulator never contacts Tailscale's control plane: "
            "pass --login-server=<the lab control server>",
        )
    parsed = urllib.parse.urlsplit(control_url)
    host = (parsed.hostname or "").lower()
    if parsed.scheme not in ("http", "https") or not host:
        raise LocalAPIError(400, f"invalid --login-server {control_url!r}")
    if any(host == domain or host.endswith("." + domain) for domain in TAILSCALE_DOMAINS):
        raise LocalAPIError(
            400, f"this lab simulator never contacts Tailscale's servers ({host})"
        )
    return control_url.rstrip("/")


def local_address_towards(control_url: str) -> str:
    """Return this host's address on the route to the login server (a UDP connect sends nothing)."""
    parsed = urllib.parse.urlsplit(control_url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    family = socket.AF_INET6 if ":" in (parsed.hostname or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((parsed.hostname or "", port))
        return str(probe.getsockname()[0])


class ControlError(Exception):
    """The control server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def control_post(control_url: str, path: str, body: dict[str, Any], timeout: float) -> Any:
    """POST JSON to the login server; the only place this daemon sends anything on the network.

    http.client, not urllib: urllib would honour proxy variables and follow redirects, and so
    could send the request (an auth key) somewhere other than the login server.
    """
    base = urllib.parse.urlsplit(control_base(control_url))
    connection_class = (
        http.client.HTTPSConnection if base.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(base.netloc, timeout=timeout)
    try:
        connection.request(
            "POST",
            f"{base.path}/sim/v1/{path}",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": f"tailscaled/{VERSION}"},
        )
        response = connection.getresponse()
        payload = response.read()
    except http.client.HTTPException as error:
        raise OSError(f"bad answer from {base.netloc}: {error!r}") from None
    finally:
        connection.close()
    if response.status != 200:
        try:
            message = str(json.loads(payload).get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        raise ControlError(response.status, message or f"HTTP {response.status}")
    return json.loads(payload)


class Backend:
    """The node: prefs, login and the control server's view of it, kept in the state file."""

    def __init__(self, state_path: Path, port: int) -> None:
        self.state_path = state_path
        self.port = port
        self.lock = threading.RLock()
        self.up_lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.last_poll_ok = 0.0
        self.machine_key = ""
        self.prefs: dict[str, Any] = dict(DEFAULT_PREFS)
        self.node: dict[str, Any] | None = None
        # Bumped on every login and logout, so that a poll answered meanwhile is discarded.
        self.login_generation = 0
        self.dataplane: DataPlane | None = None
        self.load()

    def changed(self) -> None:
        """Bring the data plane in line with the node's state (outside the state lock)."""
        if self.dataplane is not None:
            self.dataplane.reconcile()

    # What Tailscale SSH asks of the node (tailssh.Node).

    def whois(self, address: str) -> dict[str, Any] | None:
        """Who has this tailnet address (the control server answers for the netmap)."""
        with self.lock:
            control_url, machine_key = self.prefs["ControlURL"], self.machine_key
        try:
            answer: dict[str, Any] = control_post(
                control_url, "whois", {"machineKey": machine_key, "address": address},
                REQUEST_TIMEOUT_S,
            )
        except ControlError as error:
            if error.status == 404:
                return None
            raise
        return answer

    def netmap(self) -> dict[str, Any]:
        """This node, its peers and the SSH policy, as the control server has them now."""
        with self.lock:
            control_url, machine_key = self.prefs["ControlURL"], self.machine_key
        answer: dict[str, Any] = control_post(
            control_url, "netmap", {"machineKey": machine_key}, REQUEST_TIMEOUT_S
        )
        return answer

    def wanted_dataplane(self) -> tuple[str | None, bool]:
        """Return (the tailnet address with prefix length to have on the interface, or None;
        whether Tailscale SSH should listen on it)."""
        with self.lock:
            node = self.node
            if node is None or self.backend_state() != "Running":
                return None, False
            prefix = node.get("simTailnetPrefix")
            if not prefix:
                return None, False
            network = ipaddress.IPv4Network(prefix)
            ipv4 = next((a for a in node["addresses"]
                         if ipaddress.ip_address(a).version == 4), None)
            if ipv4 is None or not network.subnet_of(TAILNET_IPV4) \
                    or ipaddress.IPv4Address(ipv4) not in network:
                return None, False
            return f"{ipv4}/{network.prefixlen}", bool(self.prefs["RunSSH"])

    def load(self) -> None:
        """Read the state file, creating a machine key on first start."""
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            self.machine_key = state["machineKey"]
            self.prefs = {**DEFAULT_PREFS, **state["prefs"]}
            self.node = state["node"]
        else:
            self.machine_key = "mkey:" + secrets.token_hex(32)
            self.save()

    def save(self) -> None:
        """Write the state file atomically, readable by root only."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.state_path.with_name(self.state_path.name + ".tmp")
        state = {"machineKey": self.machine_key, "prefs": self.prefs, "node": self.node}
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(self.state_path)

    def backend_state(self) -> str:
        """Return BackendState as the real daemon names it."""
        if self.node is None:
            return "NeedsLogin"
        if not self.prefs["WantRunning"]:
            return "Stopped"
        return "Running" if self.last_poll_ok else "Starting"

    def online(self) -> bool:
        """Return whether the control server saw this node recently."""
        return (
            self.backend_state() == "Running"
            and self.node is not None
            and bool(self.node.get("online"))
            and time.monotonic() - self.last_poll_ok < ONLINE_WINDOW_S
        )

    def status(self) -> dict[str, Any]:
        """Return `tailscale status --json` for this node (peers are not simulated)."""
        with self.lock:
            node = self.node
            hostname = self.prefs["Hostname"] or socket.gethostname()
            me: dict[str, Any] = {
                "ID": "",
                "PublicKey": "",
                "HostName": hostname,
                "DNSName": "",
                "OS": "linux",
                "UserID": 0,
                "TailscaleIPs": None,
                "Addrs": None,
                "Online": False,
                "Active": False,
            }
            status: dict[str, Any] = {
                "Version": long_version(),
                "TUN": True,
                "BackendState": self.backend_state(),
                "HaveNodeKey": node is not None,
                "AuthURL": "",
                "TailscaleIPs": None,
                "Self": me,
                "Health": [],
                "MagicDNSSuffix": "",
                "CurrentTailnet": None,
                "Peer": None,
                "User": None,
                "ClientVersion": None,
            }
            if node is None:
                return status
            me.update(
                ID=node["nodeId"],
                PublicKey="nodekey:" + self.machine_key.removeprefix("mkey:"),
                HostName=node["hostname"],
                DNSName=node["name"] + ".",
                TailscaleIPs=node["addresses"],
                Addrs=[f"{node['endpoint']}:{self.port}"],
                Online=self.online(),
                Active=self.online(),
            )
            if node.get("tags"):
                me["Tags"] = node["tags"]
            status.update(
                TailscaleIPs=node["addresses"],
                MagicDNSSuffix=node["magicDNSSuffix"],
                CurrentTailnet={
                    "Name": node["tailnet"],
                    "MagicDNSSuffix": node["magicDNSSuffix"],
                    "MagicDNSEnabled": True,
                },
                User={"0": {"ID": 0, "LoginName": node.get("user") or "tagged-devices"}},
            )
            return status

    def up(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply `tailscale up`: log in when needed, then run with the new prefs."""
        wanted = body["prefs"]
        timeout = float(body.get("timeoutSeconds") or 0)
        deadline = time.monotonic() + timeout if timeout else None
        # One `up` at a time; the state lock is not held while waiting for the control server,
        # so `tailscale status` keeps answering meanwhile.
        with self.up_lock:
            control_url = wanted["ControlURL"]
            control_base(control_url)
            with self.lock:
                same_login = (
                    self.node is not None
                    and not body.get("forceReauth")
                    and sorted(wanted["AdvertiseTags"]) == sorted(self.prefs["AdvertiseTags"])
                    and control_url == self.prefs["ControlURL"]
                )
            if same_login:
                # Reconnect first: the node may have been deleted or logged out meanwhile.
                self.poll_once(force=True)
            with self.lock:
                needs_login = not same_login or self.node is None
            node = None
            if needs_login:
                auth_key = body.get("authKey")
                if not auth_key:
                    raise LocalAPIError(
                        400,
                        "this node needs to log in, and interactive login is not simulated: "
                        "pass --auth-key",
                    )
                node = self.register(wanted, auth_key, deadline)
            with self.lock:
                if node is not None:
                    self.node = node
                    self.login_generation += 1
                    self.last_poll_ok = time.monotonic()
                self.prefs = {**wanted, "WantRunning": True}
                self.save()
        self.wake.set()
        self.changed()
        return self.status()

    def register(
        self, prefs: dict[str, Any], auth_key: str, deadline: float | None
    ) -> dict[str, Any]:
        """Enroll with the control server, retrying while it is unreachable until `deadline`."""
        control_url = prefs["ControlURL"]
        body = {
            "authKey": auth_key,
            "machineKey": self.machine_key,
            "hostname": prefs["Hostname"] or socket.gethostname(),
            "advertiseTags": prefs["AdvertiseTags"],
            "os": "linux",
            "clientVersion": VERSION,
            "endpoint": "",
            "ssh": prefs["RunSSH"],
        }
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise LocalAPIError(
                    504,
                    "timeout waiting for Tailscale service to enter a Running state; "
                    f"last state: {self.backend_state()}",
                )
            try:
                body["endpoint"] = local_address_towards(control_url)
                answer = control_post(
                    control_url, "register", body, min(left or REQUEST_TIMEOUT_S, REQUEST_TIMEOUT_S)
                )
            except ControlError as error:
                raise LocalAPIError(400, f"backend error: {error}") from None
            except OSError as error:
                log(f"control: {control_url} unreachable ({error}); retrying")
                time.sleep(RETRY_INTERVAL_S)
                continue
            node: dict[str, Any] = answer["node"]
            log(f"control: logged in as {node['nodeId']} tags={node.get('tags')}")
            return node

    def patch_prefs(self, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply `tailscale set` / `tailscale down`: change only the prefs given."""
        unknown = set(patch) - {"RunSSH", "Hostname", "WantRunning"}
        if unknown:
            raise LocalAPIError(400, f"unsupported prefs: {sorted(unknown)}")
        with self.lock:
            self.prefs.update(patch)
            if not self.prefs["WantRunning"]:
                self.last_poll_ok = 0.0
            self.save()
            prefs = dict(self.prefs)
        self.wake.set()
        self.changed()
        return prefs

    def logout(self) -> None:
        """Expire this node's key at the control server and forget the login."""
        with self.lock:
            if self.node is not None:
                try:
                    control_post(
                        self.prefs["ControlURL"],
                        "logout",
                        {"machineKey": self.machine_key},
                        REQUEST_TIMEOUT_S,
                    )
                except ControlError as error:
                    if error.status != 404:  # 404: already logged out or deleted there
                        raise LocalAPIError(502, f"logout: {error}") from None
                except OSError as error:
                    raise LocalAPIError(
                        502, f"logout: control server unreachable: {error}"
                    ) from None
            self.node = None
            self.login_generation += 1
            self.prefs = dict(DEFAULT_PREFS)
            self.last_poll_ok = 0.0
            self.save()
        self.changed()

    def poll_once(self, force: bool = False) -> None:
        """Heartbeat to the control server and take its view of this node.

        Only a running node polls, unless `force` (an `up` checking its login first).
        """
        with self.lock:
            if self.node is None or not (force or self.prefs["WantRunning"]):
                return
            control_url = self.prefs["ControlURL"]
            generation = self.login_generation
            body = {
                "machineKey": self.machine_key,
                "ssh": self.prefs["RunSSH"],
                "clientVersion": VERSION,
            }
        try:
            answer = control_post(control_url, "poll", body, REQUEST_TIMEOUT_S)
        except ControlError as error:
            with self.lock:
                if generation != self.login_generation:
                    return
                if error.status == 404:
                    log("control: this node was deleted or logged out; NeedsLogin")
                    self.node = None
                    self.last_poll_ok = 0.0
                    self.save()
                else:
                    log(f"control: poll failed: {error.status} {error}")
            return
        except (OSError, LocalAPIError) as error:
            log(f"control: poll failed: {error}")
            return
        with self.lock:
            if generation != self.login_generation:
                return
            if self.node is not None and (force or self.prefs["WantRunning"]):
                if answer["node"] != self.node:
                    self.node = answer["node"]
                    self.save()
                self.last_poll_ok = time.monotonic()

    def poll_forever(self) -> None:
        """Heartbeat every POLL_INTERVAL_S, or at once after a change, until stopping."""
        while not self.stopping.is_set():
            self.poll_once()
            self.changed()
            self.wake.wait(POLL_INTERVAL_S)
            self.wake.clear()


def load_ssh_modules() -> types.ModuleType:
    """Load the Tailscale SSH server (package `tssim`) from the embedded sources or the tree."""
    if "tssim.tailssh" in sys.modules:
        return sys.modules["tssim.tailssh"]
    sources = EMBEDDED_MODULES or {
        name: (SOURCE_MODULES_DIR / f"{name}.py").read_text() for name in SSH_MODULES
    }
    package = types.ModuleType("tssim")
    package.__path__ = []
    sys.modules["tssim"] = package
    for name in SSH_MODULES:
        module = types.ModuleType(f"tssim.{name}")
        module.__package__ = "tssim"
        module.__file__ = f"<tailscaled:{name}.py>"
        sys.modules[module.__name__] = module
        exec(compile(sources[name], module.__file__, "exec"), module.__dict__)  # noqa: S102
    return sys.modules["tssim.tailssh"]


def ip_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` (iproute2) and return the result."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def remove_tailnet_addresses() -> None:
    """Remove every tailnet (100.64.0.0/10) address from the lab interface (a crash's leftover)."""
    listing = ip_command("-o", "-4", "addr", "show", "dev", DATAPLANE_INTERFACE).stdout
    for line in listing.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1]
            if ipaddress.IPv4Interface(address).ip in TAILNET_IPV4:
                ip_command("addr", "del", address, "dev", DATAPLANE_INTERFACE)


def dataplane_available() -> bool:
    """Whether this is a lab host, where the node may put its tailnet address on eth0."""
    return LAB_MARKER.exists() and Path(f"/sys/class/net/{DATAPLANE_INTERFACE}").exists()


class DataPlane:
    """The node's tailnet address on eth0 and Tailscale SSH on it, following the node's state."""

    def __init__(self, backend: Backend, state_dir: Path) -> None:
        self.backend = backend
        self.state_dir = state_dir
        self.lock = threading.Lock()
        self.address: str | None = None  # "100.64.3.12/24" while on the interface
        self.ssh: Any = None  # tailssh.SSHServer while listening

    def reconcile(self) -> None:
        """Add or remove the address and start or stop SSH to match the node."""
        wanted, want_ssh = self.backend.wanted_dataplane()
        if self.backend.stopping.is_set():
            wanted, want_ssh = None, False
        with self.lock:
            if wanted != self.address:
                self.stop_ssh()
                if self.address is not None:
                    ip_command("addr", "del", self.address, "dev", DATAPLANE_INTERFACE)
                    log(f"dataplane: removed {self.address} from {DATAPLANE_INTERFACE}")
                    self.address = None
                if wanted is not None:
                    result = ip_command("addr", "replace", wanted, "dev", DATAPLANE_INTERFACE)
                    if result.returncode != 0:
                        log(f"dataplane: adding {wanted}: {result.stderr.strip()}")
                        return
                    self.address = wanted
                    log(f"dataplane: {wanted} on {DATAPLANE_INTERFACE}")
            if want_ssh and self.ssh is None and self.address is not None:
                self.start_ssh(self.address.split("/")[0])
            elif not want_ssh:
                self.stop_ssh()

    def start_ssh(self, address: str) -> None:
        """Listen for Tailscale SSH on `address`:22."""
        try:
            tailssh = load_ssh_modules()
            server = tailssh.SSHServer(self.backend, address,
                                       tailssh.load_host_key(self.state_dir), log)
            server.start()
        except Exception as error:  # e.g. paramiko missing: say so, keep the node running
            log(f"ssh: cannot serve Tailscale SSH on {address}: {error!r}")
            return
        self.ssh = server

    def stop_ssh(self) -> None:
        """Stop listening and end every SSH connection."""
        if self.ssh is not None:
            self.ssh.stop()
            self.ssh = None


class LocalAPIServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """tailscaled's local API on its Unix socket."""

    daemon_threads = True

    def __init__(self, path: str, backend: Backend) -> None:
        self.backend = backend
        super().__init__(path, LocalAPIHandler)


class LocalAPIHandler(BaseHTTPRequestHandler):
    """Answers the CLI's requests under /localapi/v0/."""

    server: LocalAPIServer

    def address_string(self) -> str:
        """Name the peer for logs (a Unix socket has no address)."""
        return "local"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep request logs out of the journal; errors are logged where they happen."""

    def do_GET(self) -> None:
        """Read-only requests, open to every local user."""
        self.dispatch("GET")

    def do_POST(self) -> None:
        """Changes (root only)."""
        self.dispatch("POST")

    def do_PATCH(self) -> None:
        """Pref edits (root only)."""
        self.dispatch("PATCH")

    def peer_uid(self) -> int:
        """Return the uid of the process on the other end of the socket."""
        creds = self.connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
        return int(struct.unpack("3i", creds)[1])

    def dispatch(self, method: str) -> None:
        """Route one request and answer JSON."""
        backend = self.server.backend
        route = (method, self.path.removeprefix("/localapi/v0/"))
        try:
            # Read the whole request before answering, even a refusal: a client still sending
            # its body would otherwise see the connection reset instead of the answer.
            body = self.read_json() if method != "GET" else {}
            if method != "GET" and self.peer_uid() != 0:
                raise LocalAPIError(403, ACCESS_DENIED)
            if route == ("GET", "status"):
                answer: Any = backend.status()
            elif route == ("GET", "prefs"):
                with backend.lock:
                    answer = dict(backend.prefs)
            elif route == ("POST", "up"):
                answer = backend.up(body)
            elif route == ("PATCH", "prefs"):
                answer = backend.patch_prefs(body)
            elif route == ("POST", "logout"):
                backend.logout()
                answer = {}
            else:
                raise LocalAPIError(404, f"no local API {method} {self.path}")
            self.answer(200, answer)
        except LocalAPIError as error:
            self.answer(error.status, {"error": str(error)})
        except Exception as error:
            # A bug in this simulator: say so to the CLI and keep the traceback in the journal.
            log(traceback.format_exc())
            self.answer(500, {"error": f"tailscaled internal error: {error!r}"})

    def read_json(self) -> dict[str, Any]:
        """Read the request's JSON body."""
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise LocalAPIError(400, "request body must be a JSON object")
        return body

    def answer(self, status: int, body: object) -> None:
        """Send a JSON answer."""
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def notify_systemd(message: str) -> None:
    """Tell systemd we are ready (the unit is Type=notify), when started by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def remove_socket(path: Path) -> None:
    """Remove a socket file left by an earlier run."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse tailscaled's flags (the subset the package's unit and users pass)."""
    parser = argparse.ArgumentParser(prog="tailscaled", allow_abbrev=False)
    parser.add_argument("--state", default="/var/lib/tailscale/tailscaled.state")
    parser.add_argument("--socket", default="/run/tailscale/tailscaled.sock")
    parser.add_argument("--port", type=int, default=0)
    # Real flags that change nothing here (no data plane, no log upload); accepted so that
    # FLAGS= lines written for the real daemon work.
    parser.add_argument("--tun")
    parser.add_argument("--verbose", type=int)
    parser.add_argument("--no-logs-no-support", action="store_true")
    parser.add_argument("--cleanup", action="store_true")
    parser.add_argument("--version", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    args = parse_args(argv)
    socket_path = Path(args.socket)
    if args.version:
        print(VERSION)
        return 0
    if args.cleanup:
        remove_socket(socket_path)
        if dataplane_available():
            remove_tailnet_addresses()
        return 0
    backend = Backend(Path(args.state), args.port)
    if dataplane_available():
        remove_tailnet_addresses()  # left by a daemon that was killed
        backend.dataplane = DataPlane(backend, Path(args.state).parent)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    remove_socket(socket_path)
    server = LocalAPIServer(str(socket_path), backend)
    socket_path.chmod(0o666)  # any user may read status; writes are checked per request

    def on_signal(signum: int, frame: object) -> None:
        backend.stopping.set()
        backend.wake.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    poller = threading.Thread(target=backend.poll_forever, name="poll", daemon=True)
    poller.start()
    log(f"tailscaled {VERSION} (lab simulator) listening on {socket_path}, port {args.port}")
    notify_systemd("READY=1")
    try:
        server.serve_forever(poll_interval=0.1)  # a quick stop on SIGTERM
    finally:
        server.server_close()
        remove_socket(socket_path)
        backend.stopping.set()
        backend.changed()  # nothing answers on the tailnet address once the daemon is gone
    poller.join(timeout=REQUEST_TIMEOUT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
