"""Run the review application with uvicorn: loopback by default, TLS before anything wider.

The listening socket is bound here, before the access token is printed, so the address printed
is the one served (port 0 picks a free port) and a port in use is a one-line error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tsops.errors import TsopsError, UsageError
from tsops.review.app import Review, check_player_files, create_app

DEFAULT_PORT = 8737


@dataclass(frozen=True)
class Listen:
    """Where to serve: address, port, and the TLS certificate and key when given."""

    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.tls_cert is not None

    def check(self) -> None:
        """Refuse an exposure without TLS, half a TLS pair, or unreadable TLS files (exit 2)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together: give both or neither")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port}: expected 0 to 65535")
        if not is_loopback(self.address) and not self.tls:
            raise UsageError(
                f"--listen {self.address}: beyond this machine the recordings and the access "
                "token would cross the network in clear; give --tls-cert and --tls-key")
        for option, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not path.is_file():
                raise UsageError(f"{option} {path}: no such file")
        if self.tls_cert is not None and self.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            except (ssl.SSLError, OSError) as error:
                raise UsageError(f"--tls-cert {self.tls_cert} / --tls-key {self.tls_key}: "
                                 f"not a certificate and its key: {error}") from None

    def url(self, port: int) -> str:
        """The base URL of the server on `port`."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{'https' if self.tls else 'http'}://{host}:{port}"


def is_loopback(address: str) -> bool:
    """Whether an address (or `localhost`) stays on this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def bind(listen: Listen) -> socket.socket:
    """The listening socket (a one-line TsopsError when the address cannot be had)."""
    family = socket.AF_INET6 if ":" in listen.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.address, listen.port))
    except OSError as error:
        sock.close()
        raise TsopsError(f"cannot listen on {listen.address}:{listen.port}: "
                         f"{error.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def new_token() -> str:
    """A random access token (256 bits)."""
    return secrets.token_urlsafe(32)


def serve(review: Review, listen: Listen, announce: Callable[[str, str], None],
          token: str | None = None) -> None:
    """Serve until interrupted; `announce(url_with_token, base_url)` once listening."""
    import uvicorn

    listen.check()
    check_player_files()
    token = token or new_token()
    sock = bind(listen)
    port = sock.getsockname()[1]
    app = create_app(review, token, secure=listen.tls, cookie=f"tsops_review_{port}")
    config = uvicorn.Config(
        app, log_level="warning", access_log=False,  # an access log would hold the token
        ssl_certfile=str(listen.tls_cert) if listen.tls_cert else None,
        ssl_keyfile=str(listen.tls_key) if listen.tls_key else None,
        server_header=False, lifespan="off",
    )
    server = uvicorn.Server(config)
    # Read the catalog now, so the first page a person opens is already warm.
    threading.Thread(target=_warm, args=(review,), daemon=True).start()
    base = listen.url(port)
    announce(f"{base}/?token={token}", base)
    server.run(sockets=[sock])


def _warm(review: Review) -> None:
    with contextlib.suppress(TsopsError):  # the first page load says what failed
        review.index.snapshot()
