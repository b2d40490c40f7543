"""An S3-compatible server for the lab: moto in server mode."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tests.lab.errors import LabError, LabUnavailable
from tests.lab.journal import Journal, reap_stale
from tests.lab.managed import Managed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def free_port(host: str) -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class S3Server(Managed):
    """moto_server on one address the lab owns (loopback by default); cleaned up always."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    journal: Journal | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """The endpoint URL to give boto3."""
        return f"http://{self.host}:{self.port}"

    def start(self, journal: Journal | None = None) -> None:
        """Start the server and wait until it answers."""
        executable = Path(sys.executable).with_name("moto_server")
        if not executable.exists():
            found = shutil.which("moto_server")
            if found is None:
                raise LabUnavailable("moto_server is not installed (pip install 'moto[server]')")
            executable = Path(found)
        if journal is None:
            reap_stale()
            journal = self.journal = Journal.create()
        self.port = self.port or free_port(self.host)
        if self.log_path is not None:
            self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(executable), "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log if self._log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        journal.add_pid(self.process.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabError(f"moto_server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise LabError(f"moto_server did not answer on {self.endpoint} within 30s")

    def stop(self) -> None:
        """Stop the server (and forget the journal this server opened itself)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.journal is not None:
            self.journal.cleanup()
            self.journal = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API), between tests."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, **kwargs: Any) -> S3Client:
        """Return a boto3 S3 client for this server with throwaway credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=kwargs.pop("region_name", "us-east-1"),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **kwargs,
        )
