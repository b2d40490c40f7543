"""Tailscale SSH, served by the simulated tailscaled on a lab host's tailnet address.

Runs **inside lab hosts**, embedded in the simulated tailscaled (../tailscale/package/), which
imports it only when SSH is on (paramiko is needed only then). It follows tailssh
(tailscale/tailscale ssh/tailssh/tailssh.go):

- Authentication: the `none` method (password and public key are humoured the same way): the
  identity is the peer's tailnet address, looked up with WhoIs (`/sim/v1/whois`); local and peer
  addresses must be tailnet addresses. The first SSH rule of the node's policy
  (`/sim/v1/netmap`) matching the source, this node and the user decides. Refusals are an
  auth banner `tailscale: ...` and a disconnect, as tailssh's errBanner does; `check` rules are
  refused too (no browser in the lab).
- Sessions: `exec` (the command through the local user's shell, `-c`) and `shell`, as the local
  user, stdout/stderr/exit status passed back; with or without a PTY (`pty-req`, whose size is
  the recording's width and height, and `window-change`).
- Recording, as session.py does it: recorders of the rule's tag, online, lowest tailnet IPv4
  first, at their lab endpoint :80. stdout is recorded (`"o"` events) before the client gets it;
  stderr is not recorded (tailssh records only the stdout writer of a session without a PTY;
  with one, stdout and stderr are the same terminal, all recorded).
  No online node carrying the rule's recorder tag: the session runs unrecorded, even with
  enforceRecorder (the control plane sends tailssh no recorder address: fail-open, reference
  section 6). Recorders online but none accepting: with enforceRecorder the session is refused
  with a message on **stdout** and exit status 1 (tailssh writes the message to the session,
  then `Exit(1)`); without, it runs unrecorded. The upload failing mid-way with
  enforceRecorder kills the command, writes `\\r\\n\\r\\n<message>\\r\\n\\r\\n` to stderr,
  and the exit status is the one of a killed process (Go's -1, sent as 4294967295). The
  recording is finished after the exit status is sent (tailssh closes it when the session
  handler returns), so a caller looking for the `.cast` must wait for it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import pty
import pwd
import shlex
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
    cMSG_USERAUTH_BANNER,
)

from .cast import OutputChunk, SourceNode, cast_header, event_line, header_line
from .session import ACK_WINDOW_S, RECORDER_PORT, Upload, UploadError, connect, recorders_from_peers
from .sshrules import SSHRule, UnsupportedSelector, evaluate, target_of

SSH_PORT = 22
VERSION = "Tailscale"  # the server's SSH version string: SSH-2.0-Tailscale
TAILNET_NETWORKS = (ipaddress.ip_network("100.64.0.0/10"),
                    ipaddress.ip_network("fd7a:115c:a1e0::/48"))
# What the control plane tells the node to say (tailcfg.SSHRecorderFailureAction); Tailscale's
# wording is not public, this is ours.
REJECT_MESSAGE = "recording is required by the tailnet policy, but no recorder accepted it"
TERMINATE_MESSAGE = "recording is required by the tailnet policy, and it failed: session ended"
KILLED_STATUS = 0xFFFFFFFF  # Go's ExitCode() of a killed process (-1), as an SSH uint32
POLL_RECORDER_S = 1.0  # how often an idle session checks its upload (acks, error frames)
SESSION_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Node(Protocol):
    """What the SSH server needs from tailscaled."""

    def whois(self, address: str) -> dict[str, Any] | None:
        """The peer with this tailnet address and its owner (`/sim/v1/whois`), or None."""

    def netmap(self) -> dict[str, Any]:
        """This node, its peers and the SSH policy (`/sim/v1/netmap`)."""


def is_tailnet_address(address: str) -> bool:
    """Whether `address` is a Tailscale address (tsaddr.IsTailscaleIP)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in TAILNET_NETWORKS)


def load_host_key(state_dir: Path) -> paramiko.PKey:
    """The system's ed25519 host key when there is one (as tailssh uses /etc/ssh's keys),
    else a key of our own kept under the state directory."""
    system = Path("/etc/ssh/ssh_host_ed25519_key")
    with contextlib.suppress(OSError, paramiko.SSHException):
        return paramiko.Ed25519Key.from_private_key_file(str(system))
    own = state_dir / "ssh" / "ssh_host_rsa_key"
    with contextlib.suppress(OSError, paramiko.SSHException):
        return paramiko.RSAKey.from_private_key_file(str(own))
    own.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = paramiko.RSAKey.generate(2048)
    key.write_private_key_file(str(own))
    return key


def source_of(whois: Mapping[str, Any]) -> SourceNode:
    """The session's source node, from a WhoIs answer."""
    node, profile = whois["node"], whois["userProfile"]
    if node["tags"]:
        return SourceNode(node["name"], node["nodeId"], tags=tuple(node["tags"]))
    return SourceNode(node["name"], node["nodeId"], login=profile["loginName"],
                      user_id=int(profile["id"]))


class Denied(Exception):
    """Authentication refused; the message goes to the client as an auth banner."""


@dataclass
class ChannelRequest:
    """What the client asked of one session channel."""

    command: str | None = None  # None: a shell
    env: dict[str, str] = field(default_factory=dict)
    pty: tuple[str, int, int] | None = None  # (TERM, width, height) after a pty-req
    master: int | None = None  # the PTY's controller side, while the session runs
    ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class Grant:
    """An accepted connection: who, as whom, under which rule, with the netmap of that time."""

    source: SourceNode
    ssh_user: str
    local_user: pwd.struct_passwd
    rule: SSHRule
    netmap: dict[str, Any]


class Connection(paramiko.ServerInterface):
    """One SSH connection: authentication and channel requests (paramiko's server side)."""

    def __init__(self, server: SSHServer, transport: paramiko.Transport,
                 peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.server = server
        self.transport = transport
        self.peer = peer
        self.local = local
        self.grant: Grant | None = None
        self.denied = threading.Event()
        self.requests: dict[int, ChannelRequest] = {}
        self.lock = threading.Lock()

    # Authentication.

    def get_allowed_auths(self, username: str) -> str:
        """Every method is humoured; the tailnet identity decides."""
        return "none,password,publickey"

    def check_auth_none(self, username: str) -> int:
        """The `none` method: the Tailscale way."""
        return self.authorize(username)

    def check_auth_password(self, username: str, password: str) -> int:
        """Some clients skip `none`: accepted or refused the same way, the password ignored."""
        return self.authorize(username)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        """As for passwords: the key is ignored."""
        return self.authorize(username)

    def authorize(self, username: str) -> int:
        """Decide once per connection, from WhoIs and the SSH policy."""
        with self.lock:
            if self.grant is not None:
                return AUTH_SUCCESSFUL
            if self.denied.is_set():
                return AUTH_FAILED
            try:
                self.grant = self.decide(username.removesuffix("+password"))
            except Denied as refusal:
                self.server.log(f"ssh: {self.peer[0]} as {username!r}: denied: {refusal}")
                self.send_banner(f"tailscale: {refusal}\n")
                self.denied.set()
                return AUTH_FAILED
            self.server.log(f"ssh: access granted to {self.grant.source.name} "
                            f"({self.peer[0]}) as {self.grant.local_user.pw_name!r}")
            return AUTH_SUCCESSFUL

    def decide(self, ssh_user: str) -> Grant:
        """Return the grant, or raise Denied with tailssh's message."""
        if not (is_tailnet_address(self.local[0]) and is_tailnet_address(self.peer[0])):
            raise Denied("failed to get connection info")
        try:
            whois = self.server.node.whois(self.peer[0])
            netmap = self.server.node.netmap()
        except Exception as error:
            self.server.log(f"ssh: asking the control plane failed: {error!r}")
            raise Denied("failed to get connection info") from None
        if whois is None:  # "unknown Tailscale identity from src"
            raise Denied("failed to get connection info")
        source = source_of(whois)
        me = netmap["node"]
        try:
            rule, failed_on_user = evaluate(netmap["sshPolicy"], source,
                                            target_of(me["tags"], me["user"]), ssh_user)
        except (UnsupportedSelector, ValueError, KeyError) as error:
            self.server.log(f"ssh: policy: {error}")
            raise Denied("failed to evaluate tailnet policy") from None
        if rule is None:
            if failed_on_user:
                raise Denied(f"tailnet policy does not permit you to SSH as user {ssh_user!r}")
            raise Denied("tailnet policy does not permit you to SSH to this node")
        if rule.action == "check":
            raise Denied("this rule needs check mode (a login in a browser), which the lab "
                         "simulator does not have: access denied")
        try:
            local_user = pwd.getpwnam(ssh_user)
        except KeyError:
            raise Denied(f"failed to look up local user {ssh_user!r} ") from None
        return Grant(source, ssh_user, local_user, rule, netmap)

    def send_banner(self, text: str) -> None:
        """Send SSH_MSG_USERAUTH_BANNER (paramiko's server has no public call for it)."""
        message = paramiko.Message()
        message.add_byte(cMSG_USERAUTH_BANNER)
        message.add_string(text)
        message.add_string("")
        with contextlib.suppress(Exception):
            self.transport._send_message(message)  # type: ignore[attr-defined]

    # Channels.

    def check_channel_request(self, kind: str, chanid: int) -> int:
        """Session channels only (no port forwarding: no rule allows it here)."""
        if kind != "session" or self.grant is None:
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        with self.lock:
            self.requests[chanid] = ChannelRequest()
        return OPEN_SUCCEEDED

    def request_of(self, channel: paramiko.Channel) -> ChannelRequest:
        """The requests made on `channel` so far."""
        with self.lock:
            return self.requests.setdefault(channel.get_id(), ChannelRequest())

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        """Run `command` (once per channel)."""
        request = self.request_of(channel)
        if request.ready.is_set():
            return False
        request.command = command.decode("utf-8", errors="replace")
        request.ready.set()
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        """Run the user's shell."""
        request = self.request_of(channel)
        if request.ready.is_set():
            return False
        request.ready.set()
        return True

    def check_channel_env_request(self, channel: paramiko.Channel, name: bytes,
                                  value: bytes) -> bool:
        """Only TERM is taken (no rule here has acceptEnv)."""
        if name != b"TERM":
            return False
        self.request_of(channel).env["TERM"] = value.decode("utf-8", errors="replace")
        return True

    def check_channel_pty_request(self, channel: paramiko.Channel, term: bytes, width: int,
                                  height: int, pixelwidth: int, pixelheight: int,
                                  modes: bytes) -> bool:
        """Note the terminal wanted (before the exec or shell request)."""
        request = self.request_of(channel)
        if request.ready.is_set():
            return False
        request.pty = (term.decode("utf-8", errors="replace"), width, height)
        return True

    def check_channel_window_change_request(self, channel: paramiko.Channel, width: int,
                                            height: int, pixelwidth: int,
                                            pixelheight: int) -> bool:
        """Resize the session's terminal (not recorded: resizes are not in the .cast)."""
        request = self.request_of(channel)
        if request.pty is None:
            return False
        request.pty = (request.pty[0], width, height)
        if request.master is not None:
            set_size(request.master, width, height)
        return True

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        """No SFTP here."""
        return False


def set_size(fd: int, width: int, height: int) -> None:
    """Set a terminal's size (TIOCSWINSZ)."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def take_terminal() -> None:
    """In the child, after setsid: make stdin (the PTY) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Recording:
    """The upload of one session's `.cast`, shared by the output thread and a poller."""

    def __init__(self, upload: Upload, enforced: bool, started: float) -> None:
        self.upload = upload
        self.enforced = enforced
        self.started = started
        self.lock = threading.Lock()
        self.failed: str | None = None
        self.closed = False

    def write(self, data: bytes) -> bool:
        """Record `data` as one `"o"` event; False when the session must end (enforced)."""
        text = data.decode("utf-8", errors="replace")
        line = event_line(OutputChunk(time.monotonic() - self.started, text))
        return self.send(line)

    def send(self, line: bytes) -> bool:
        """Send bytes of the stream; after a failure, fail open or report it."""
        with self.lock:
            if self.failed is None and not self.closed:
                try:
                    self.upload.send(line)
                except UploadError as error:
                    self.fail(str(error))
            return self.failed is None or not self.enforced

    def poll(self) -> bool:
        """Check acks and error frames while idle; False when the session must end."""
        with self.lock:
            if self.failed is None and not self.closed:
                try:
                    self.upload.poll()
                except UploadError as error:
                    self.fail(str(error))
            return self.failed is None or not self.enforced

    def fail(self, reason: str) -> None:
        """Note the failure and drop the connection (caller holds the lock)."""
        self.failed = reason
        with contextlib.suppress(OSError):
            self.upload.abort()

    def finish(self) -> str | None:
        """End the upload; return the recorder's key, or None when it failed."""
        with self.lock:
            self.closed = True
            if self.failed is not None:
                return None
            try:
                return self.upload.finish()
            except UploadError as error:
                self.failed = str(error)
                return None


class Session:
    """One session channel: the command as the local user, its output, its recording."""

    def __init__(self, connection: Connection, channel: paramiko.Channel,
                 request: ChannelRequest, grant: Grant) -> None:
        self.connection = connection
        self.server = connection.server
        self.channel = channel
        self.request = request
        self.grant = grant
        self.process: subprocess.Popen[bytes] | None = None
        self.terminated = threading.Event()
        self.recording: Recording | None = None

    def log(self, message: str) -> None:
        """Log with the session's peer."""
        self.server.log(f"ssh-session({self.connection.peer[0]}): {message}")

    def run(self) -> None:
        """Record (or refuse), run the command, pass output and status back."""
        rule = self.grant.rule
        if rule.recorder is not None and not self.start_recording(rule):
            self.channel.sendall(f"{REJECT_MESSAGE}\r\n".encode())
            self.exit(1)
            return
        try:
            self.process = self.launch()
        except OSError as error:
            self.log(f"start failed: {error}")
            self.exit(1)
            if self.recording is not None:
                self.recording.finish()
            return
        if self.request.master is not None:  # one terminal: everything is recorded stdout
            readers = [threading.Thread(target=self.copy_output,
                                        args=(self.request.master, True), daemon=True)]
        else:
            assert self.process.stdout is not None and self.process.stderr is not None
            readers = [
                threading.Thread(target=self.copy_output, args=(self.process.stdout.fileno(),
                                                                True), daemon=True),
                threading.Thread(target=self.copy_output, args=(self.process.stderr.fileno(),
                                                                False), daemon=True),
            ]
        for reader in readers:
            reader.start()
        threading.Thread(target=self.copy_input, daemon=True).start()
        if self.recording is not None:
            threading.Thread(target=self.watch_recording, daemon=True).start()
        code = self.process.wait()
        for reader in readers:
            reader.join()
        if self.request.master is not None:
            os.close(self.request.master)
            self.request.master = None
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        status = code if code >= 0 else KILLED_STATUS
        self.exit(status)
        if self.recording is not None:
            key = self.recording.finish()
            self.log(f"recording: {key or self.recording.failed}")

    def start_recording(self, rule: SSHRule) -> bool:
        """Connect to a recorder and send the header; False to refuse the session."""
        assert rule.recorder is not None
        recorders = recorders_from_peers(rule.recorder, self.grant.netmap["peers"])
        if not recorders:
            # The control plane sends no recorder address: tailssh records nothing and runs
            # the session, enforceRecorder or not (reference section 6).
            self.log(f"recording: no online node with {rule.recorder} (running unrecorded)")
            return True
        me = self.grant.netmap["node"]
        upload, attempts = connect(recorders, me["nodeId"], RECORDER_PORT, ACK_WINDOW_S)
        for attempt in attempts:
            self.log(f"recording: {attempt.recorder.name} {attempt.protocol}: "
                     f"{attempt.error or 'accepted'}")
        if upload is None:
            self.log("recording: no recorder accepted"
                     + (" (rejecting session)" if rule.enforce_recorder else " (failing open)"))
            return not rule.enforce_recorder
        command = self.request.command or ""
        with contextlib.suppress(ValueError):  # tailssh joins the shell-split command
            command = " ".join(shlex.split(command))
        term, width, height = self.request.pty or (self.request.env.get("TERM", ""), 0, 0)
        header = cast_header(
            source=self.grant.source, ssh_user=self.grant.ssh_user,
            local_user=self.grant.local_user.pw_name,
            started=datetime.datetime.now(datetime.UTC), command=command, width=width,
            height=height, term=term or "xterm-256color",
        )
        self.recording = Recording(upload, rule.enforce_recorder, time.monotonic())
        if not self.recording.send(header_line(header)):
            self.log(f"recording: header refused: {self.recording.failed}")
            return False
        if self.recording.failed is not None:
            self.recording = None  # failing open from the start
        return True

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the command (or a login shell) as the local user, in their home."""
        user = self.grant.local_user
        shell = user.pw_shell or "/bin/sh"
        home = user.pw_dir if Path(user.pw_dir).is_dir() else "/"
        peer, local = self.connection.peer, self.connection.local
        env = {
            "USER": user.pw_name, "LOGNAME": user.pw_name, "HOME": user.pw_dir, "SHELL": shell,
            "PATH": SESSION_PATH, "PWD": home,
            "SSH_CLIENT": f"{peer[0]} {peer[1]} {local[1]}",
            "SSH_CONNECTION": f"{peer[0]} {peer[1]} {local[0]} {local[1]}",
            **self.request.env,
        }
        command = self.request.command
        argv = [shell, "-c", command] if command is not None else [shell, "-l"]
        common: dict[str, Any] = {
            "env": env, "cwd": home, "user": user.pw_uid, "group": user.pw_gid,
            "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),
            "start_new_session": True, "close_fds": True,
        }
        if self.request.pty is None:
            return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, **common)
        term, width, height = self.request.pty
        env["TERM"] = term or env.get("TERM", "xterm-256color")
        master, terminal = pty.openpty()
        try:
            set_size(master, width, height)
            os.fchown(terminal, user.pw_uid, -1)
            process = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal,
                                       preexec_fn=take_terminal, **common)
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(terminal)
        self.request.master = master
        return process

    def copy_output(self, fd: int, recorded: bool) -> None:
        """Pass stdout or the terminal (recorded first), or stderr, to the client."""
        send: Callable[[bytes], None] = (self.channel.sendall if recorded
                                         else self.channel.sendall_stderr)
        while True:
            try:
                data = os.read(fd, 32768)
            except OSError:  # a PTY whose last user is gone: EIO
                break
            if not data:
                break
            if self.terminated.is_set():
                continue  # drain, deliver nothing more
            if recorded and self.recording is not None and not self.recording.write(data):
                self.terminate()
                continue
            with contextlib.suppress(OSError, EOFError):
                send(data)

    def copy_input(self) -> None:
        """Pass the client's input to the command; its EOF closes the command's stdin."""
        assert self.process is not None
        stdin, master = self.process.stdin, self.request.master
        try:
            while True:
                data = self.channel.recv(32768)
                if not data:
                    break
                if master is not None:
                    os.write(master, data)
                elif stdin is not None:
                    stdin.write(data)
                    stdin.flush()
        except OSError:
            pass
        finally:
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()

    def watch_recording(self) -> None:
        """While the command runs, notice a recorder that failed or stopped acknowledging."""
        assert self.process is not None and self.recording is not None
        while self.process.poll() is None:
            if not self.recording.poll():
                self.terminate()
                return
            time.sleep(POLL_RECORDER_S)

    def terminate(self) -> None:
        """End the session because the enforced recording failed (once)."""
        if self.terminated.is_set():
            return
        self.terminated.set()
        assert self.recording is not None and self.process is not None
        self.log(f"recording: error uploading recording (closing session): "
                 f"{self.recording.failed}")
        with contextlib.suppress(OSError, EOFError):
            self.channel.sendall_stderr(f"\r\n\r\n{TERMINATE_MESSAGE}\r\n\r\n".encode())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)

    def exit(self, status: int) -> None:
        """Send the exit status and close the channel."""
        with contextlib.suppress(OSError, EOFError):
            self.channel.send_exit_status(status)
            self.channel.shutdown_write()
        self.channel.close()


class SSHServer:
    """Tailscale SSH on one tailnet address, port 22: an accept loop in a thread."""

    def __init__(self, node: Node, address: str, host_key: paramiko.PKey,
                 log: Callable[[str], None], port: int = SSH_PORT) -> None:
        self.node = node
        self.address = address
        self.port = port
        self.host_key = host_key
        self.log = log
        self.listener: socket.socket | None = None
        self.transports: set[paramiko.Transport] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        """Bind `address:22` (the address must be on an interface) and accept in a thread."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.address, self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.listener = listener
        threading.Thread(target=self.accept_loop, args=(listener,), name="ssh-accept",
                         daemon=True).start()
        self.log(f"ssh: listening on {self.address}:{self.port}")

    def stop(self) -> None:
        """Stop listening and close every connection (their sessions end)."""
        listener, self.listener = self.listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            self.log(f"ssh: stopped listening on {self.address}:{self.port}")
        with self.lock:
            transports, self.transports = set(self.transports), set()
        for transport in transports:
            transport.close()

    def accept_loop(self, listener: socket.socket) -> None:
        """Accept connections until the listener is closed."""
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(sock, peer), daemon=True).start()

    def handle(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        """Serve one connection: key exchange, authentication, then its session channels."""
        transport = paramiko.Transport(sock)
        transport.local_version = f"SSH-2.0-{VERSION}"
        transport.add_server_key(self.host_key)
        local = sock.getsockname()
        connection = Connection(self, transport, (peer[0], peer[1]), (local[0], local[1]))
        with self.lock:
            if self.listener is None:
                transport.close()
                return
            self.transports.add(transport)
        try:
            transport.start_server(server=connection)
            while transport.is_active():
                channel = transport.accept(timeout=0.5)
                if connection.denied.is_set():
                    time.sleep(0.2)  # let the failure reach the client, then hang up
                    break
                if channel is not None:
                    threading.Thread(target=self.serve_channel, args=(connection, channel),
                                     daemon=True).start()
        except (paramiko.SSHException, EOFError, OSError) as error:
            self.log(f"ssh: {peer[0]}: {error!r}")
        finally:
            transport.close()
            with self.lock:
                self.transports.discard(transport)

    def serve_channel(self, connection: Connection, channel: paramiko.Channel) -> None:
        """Wait for the channel's exec or shell request, then run the session."""
        request = connection.request_of(channel)
        if not request.ready.wait(30) or connection.grant is None:
            channel.close()
            return
        try:
            Session(connection, channel, request, connection.grant).run()
        except Exception as error:  # a simulator bug: keep it in the journal
            self.log(f"ssh: session failed: {error!r}")
            with contextlib.suppress(Exception):
                channel.close()
