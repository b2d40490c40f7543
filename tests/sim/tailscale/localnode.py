"""tailscaled run on this machine (not in a lab host), with private paths, and its CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sim.tailscale.build import PACKAGE_DIR


@dataclass
class LocalNode:
    """tailscaled running on this machine with private paths, and a way to run the CLI."""

    state: Path
    socket: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """Where tailscaled's stderr goes."""
        return self.socket.with_suffix(".log")

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start tailscaled, with `env` added to our environment, and wait for its socket."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PACKAGE_DIR / "tailscaled.py"), f"--state={self.state}",
                 f"--socket={self.socket}", "--port=0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tailscaled did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop tailscaled (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `tailscale --socket=... ARGS` and return its result."""
        return subprocess.run(
            [sys.executable, str(PACKAGE_DIR / "tailscale.py"), f"--socket={self.socket}", *args],
            capture_output=True, text=True, check=False, timeout=60, stdin=subprocess.DEVNULL,
            env=env if env is not None else {"PATH": os.environ.get("PATH", "")},
        )
