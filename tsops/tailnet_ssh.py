"""The one seam to Tailscale SSH: a session opened to a node's tailnet address, as a user would.

`tsops/remote.py` is how tsops manages hosts (OpenSSH, keys, sudo); this module is something
else: it plays an operator's SSH client against the Tailscale SSH server that `tailscaled
--ssh` runs on port 22 of the node's tailnet address. That server authenticates by tailnet
identity (the client's node, learned from WireGuard), not by keys or passwords: the client
offers the SSH "none" method and is let in when an ssh rule of the policy allows its identity
as that user. So this needs the machine running tsops to be on the tailnet.

The server's host key is not checked: the address is a tailnet address, so WireGuard has
already authenticated the peer (its node key, which the control plane vouches for) before a
byte of SSH arrives; a host key check would add nothing. `open_transport` is also what
`tsops/remote.py` uses to manage servers over Tailscale SSH (`connection.via`).
paramiko comes with Fabric; it is imported only when a session is opened.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paramiko import Channel, Transport

SSH_PORT = 22
READ_LIMIT = 64 * 1024  # a canary prints one line; more than this is not read


@dataclass(frozen=True)
class SessionResult:
    """What one session did. `failure` says why no command ran (None: it ran)."""

    exit_status: int | None
    stdout: str = ""
    stderr: str = ""
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the command ran and exited 0."""
        return self.failure is None and self.exit_status == 0


class Refused(Exception):
    """No session could be opened: `reason` says why, in words an operator can act on."""

    def __init__(self, reason: str, banner: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.banner = banner


def open_transport(address: str, user: str, timeout: float = 20.0,
                   port: int = SSH_PORT) -> Transport:
    """An SSH transport to `address`, logged in as `user` with the `none` method.

    Tailscale SSH decides by the tailnet identity of this machine (the ssh rules of the
    policy), so no key or password is offered. The host key is not checked: the address is a
    tailnet address, whose peer WireGuard has already authenticated. Raises Refused.
    """
    import paramiko

    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as error:
        raise Refused(
            f"cannot connect to {address}:{port} ({error.strerror or error}): Tailscale SSH is "
            "not answering there, or this machine is not on the tailnet") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        transport.auth_none(user)
    except paramiko.BadAuthenticationType as error:
        transport.close()
        allowed = ", ".join(error.allowed_types) or "nothing"
        raise Refused(
            f"{address}:{port} refused {user} without keys (it offers: {allowed}): no ssh rule "
            "lets this machine in as that user, or this is not Tailscale SSH") from None
    except (paramiko.SSHException, OSError, EOFError) as error:
        said = _banner(transport)
        transport.close()
        raise Refused(f"SSH to {user}@{address}:{port} failed: {error or type(error).__name__}"
                      + (f" ({said})" if said else ""), said) from None
    return transport


def run_command(address: str, user: str, command: str, timeout: float = 20.0,
                port: int = SSH_PORT) -> SessionResult:
    """Open a Tailscale SSH session to `address` as `user`, run `command`, return what happened."""
    import paramiko

    try:
        transport = open_transport(address, user, timeout, port)
    except Refused as refused:
        return SessionResult(None, failure=refused.reason)
    try:
        try:
            channel = transport.open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            channel.shutdown_write()  # nothing on stdin: a command reading it ends at once
            stdout, stderr = _read(channel, timeout)
            status = channel.recv_exit_status() if channel.exit_status_ready() else None
            if status == -1:  # paramiko's "the channel closed without an exit status"
                status = None
        except (paramiko.SSHException, OSError, EOFError) as error:
            why = str(error) or type(error).__name__
            return SessionResult(None, failure=(
                f"the session as {user}@{address} was refused or cut: {why}"))
        if status is None:
            return SessionResult(None, stdout, stderr, failure=(
                f"the session as {user}@{address} ended without an exit status"
                + (f": {stderr.strip()[-300:]}" if stderr.strip() else "")))
        return SessionResult(status, stdout, stderr)
    finally:
        transport.close()


def _read(channel: Channel, timeout: float) -> tuple[str, str]:
    """Read stdout and stderr until the command exits (bounded by READ_LIMIT and `timeout`)."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        if channel.recv_ready():
            out += channel.recv(READ_LIMIT)
            busy = True
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(READ_LIMIT)
            busy = True
        if not busy:
            ended = channel.exit_status_ready() or channel.closed or channel.eof_received
            if ended and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            time.sleep(0.02)
        if len(out) > READ_LIMIT or len(err) > READ_LIMIT:
            break
    return out.decode(errors="replace"), err.decode(errors="replace")


def _banner(transport: object) -> str:
    """What the server said in its authentication banner (Tailscale SSH explains refusals)."""
    handler = getattr(transport, "auth_handler", None)
    banner = getattr(handler, "banner", None)
    text = banner.decode(errors="replace") if isinstance(banner, bytes) else banner or ""
    return " ".join(str(text).split())[:300]
