"""Small SSH servers on loopback for unit tests of tsops's SSH connections.

`SshServer` is a paramiko server with a host key of its own: it lets any public key in, runs
no command (each exec exits 0, or never ends with `hang_commands`) and, as a bastion,
forwards `direct-tcpip` channels to loopback. It counts the TCP connections it accepted, so a
test can prove a host was never contacted. `HungServer` accepts connections and never says a
word (a hung sshd).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from paramiko.common import AUTH_SUCCESSFUL, OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_SUCCEEDED

REFUSED: int = OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
ACCEPTED: int = OPEN_SUCCEEDED


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: SshServer) -> None:
        self.server = server
        self.destinations: dict[int, tuple[str, int]] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return int(AUTH_SUCCESSFUL)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return ACCEPTED if kind == "session" else REFUSED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.server.commands.set()
        if self.server.hang_commands:
            return True  # the command "runs" forever

        def finish() -> None:  # the client closes the channel once it has the status
            channel.send_exit_status(0)
            channel.shutdown_write()

        threading.Thread(target=finish, daemon=True).start()
        return True

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        if not destination[0].startswith("127."):  # loopback only: tests never reach further
            return REFUSED
        self.destinations[chanid] = destination
        return ACCEPTED


def _pipe(source: Any, sink: Any) -> None:
    with contextlib.suppress(OSError, EOFError):
        while data := source.recv(32768):
            sink.sendall(data)
    with contextlib.suppress(OSError, EOFError):
        sink.close()


class SshServer:
    """A paramiko SSH server on 127.0.0.1 with its own ECDSA host key."""

    def __init__(self, address: str = "127.0.0.1", hang_commands: bool = False) -> None:
        self.hang_commands = hang_commands
        self.commands = threading.Event()  # set once a command was started
        self.host_key = paramiko.ECDSAKey.generate()
        self.address = address
        self.listener = socket.create_server((address, 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self.transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SshServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.listener.close()
        for transport in self.transports:
            transport.close()

    def known_line(self, name: str | None = None) -> str:
        """This server's known_hosts line (for `[127.0.0.1]:PORT` unless `name` is given)."""
        host = name or f"[{self.address}]:{self.port}"
        return f"{host} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._session, args=(sock,), daemon=True).start()

    def _session(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        self.transports.append(transport)
        transport.add_server_key(self.host_key)
        interface = _Interface(self)
        try:
            transport.start_server(server=interface)
        except (paramiko.SSHException, EOFError, OSError):
            return
        while transport.is_active():
            channel = transport.accept(1)
            if channel is None:
                continue
            destination = interface.destinations.get(channel.get_id())
            if destination is None:
                continue
            try:
                outward = socket.create_connection(destination, timeout=10)
            except OSError:
                channel.close()
                continue
            threading.Thread(target=_pipe, args=(channel, outward), daemon=True).start()
            threading.Thread(target=_pipe, args=(outward, channel), daemon=True).start()


class HungServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HungServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(sock)
            self.accepted.set()


def client_key(folder: Path) -> Path:
    """A private key file the servers accept (they accept any)."""
    path = folder / "id_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(path))
    return path
