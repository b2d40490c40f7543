"""The server itself: it binds exactly where asked, starts and stops cleanly, routes strictly."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.sim.control import ControlServer
from tests.sim.control.conftest import TLS


def connects(host: str, port: int) -> bool:
    """Return whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_binds_only_the_address_asked_for() -> None:
    """Bound to 127.0.0.1, the server is not reachable on another loopback address."""
    with ControlServer(host="127.0.0.1") as server:
        assert server.address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.api_url == f"{server.url}/api/v2"
        assert connects("127.0.0.1", server.port)
        # The whole 127/8 reaches loopback on Linux, so a wildcard bind would answer here.
        assert not connects("127.0.0.2", server.port)


def test_binds_the_port_asked_for() -> None:
    """An explicit port is used as given."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with ControlServer(port=free) as server:
        assert server.port == free


def test_stop_closes_the_socket() -> None:
    """After stop() nothing listens; url is no longer available; stop() is idempotent."""
    server = ControlServer().start()
    port = server.port
    server.stop()
    server.stop()
    assert not connects("127.0.0.1", port)
    with pytest.raises(RuntimeError):
        _ = server.url


def test_unknown_paths_are_404_and_wrong_methods_405(control: ControlServer) -> None:
    """Routing is strict: unknown endpoints and methods are refused with a JSON message."""
    with httpx.Client(base_url=control.url, verify=TLS) as http:
        missing = http.get("/api/v2/tailnet/-/nothing")
        assert missing.status_code == 404
        assert missing.json()["message"]
        assert http.put("/api/v2/tailnet/-/acl").status_code == 405
        assert http.get("/sim/v1/register").status_code == 405


def test_requests_are_recorded(control: ControlServer, api: httpx.Client) -> None:
    """Tests can see which calls were made, e.g. to assert a rerun wrote nothing."""
    api.get("/tailnet/-/acl")
    api.post("/tailnet/-/acl/validate", content="{}")
    assert [(r.method, r.path, r.status) for r in control.requests()] == [
        ("GET", "/api/v2/tailnet/-/acl", 200),
        ("POST", "/api/v2/tailnet/-/acl/validate", 200),
    ]
