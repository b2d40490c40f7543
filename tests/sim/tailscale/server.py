"""Serve a built package tree over HTTP on one address, like pkgs.tailscale.com does."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.sim.tailscale.build import KEYRING_PATH, LATEST, SUITE, TRACK, RepoTree


class RepoHandler(SimpleHTTPRequestHandler):
    """Static files, plus the apt source list whose content names the server's own URL."""

    def __init__(self, *args: Any, repo: RepoServer, **kwargs: Any) -> None:
        self.repo = repo
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        """Drop access logs; apt and curl report their own failures."""

    def do_GET(self) -> None:
        """Serve the generated source list, or a file of the tree."""
        if self.path != self.repo.source_list_path:
            super().do_GET()
            return
        content = (
            f"# Tailscale packages for debian {SUITE}\n{self.repo.source_line(KEYRING_PATH)}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


class RepoServer:
    """The package tree served over HTTP in a thread; a context manager that always stops."""

    def __init__(self, tree: RepoTree, host: str, port: int = 0) -> None:
        self.tree = tree
        handler = functools.partial(RepoHandler, repo=self, directory=str(tree.root))
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="tailscale-repo", daemon=True
        )
        self.thread.start()

    # Like pkgs.tailscale.com/stable/debian/bookworm.tailscale-keyring.list, which the official
    # install script copies to /etc/apt/sources.list.d/tailscale.list.
    @property
    def source_list_path(self) -> str:
        """The URL path of the ready-made apt source list."""
        return f"/{TRACK}/debian/{SUITE}.tailscale-keyring.list"

    @property
    def source_list_url(self) -> str:
        """The ready-made apt source list's URL."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{self.source_list_path}"

    @property
    def url(self) -> str:
        """The release track's URL, like https://pkgs.tailscale.com/stable."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/{TRACK}"

    @property
    def apt_url(self) -> str:
        """The apt repository URL for a `deb` line (`<url>/debian`)."""
        return f"{self.url}/debian"

    @property
    def keyring_url(self) -> str:
        """The binary signing keyring, for /usr/share/keyrings/tailscale-archive-keyring.gpg."""
        return f"{self.apt_url}/{SUITE}.noarmor.gpg"

    def tarball_url(self, version: str = LATEST) -> str:
        """The static tarball of `version`; its checksum is at this URL plus `.sha256`."""
        return f"{self.url}/{self.tree.tarball(version).name}"

    def source_line(self, keyring: str) -> str:
        """The line for /etc/apt/sources.list.d/tailscale.list."""
        return f"deb [signed-by={keyring}] {self.apt_url} {SUITE} main"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> RepoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
