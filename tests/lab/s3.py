"""An S3-compatible server for the lab: moto in server mode, over TLS with a lab CA.

The real recorder speaks HTTPS to S3, so the lab's S3 does too: each server makes a CA of its own
(`tests/lab/ca.py`) and a certificate for its address, kept in a private directory removed with
the server. moto runs through `moto_launcher.py`, which makes moto answer the bucket policy's
`aws:SecureTransport` condition (it would otherwise refuse every write tsops's TLS-only policy
covers). `S3Server(tls=False)` is plain HTTP: for showing that clients refuse it, and for the
benchmarks, whose recorded numbers were measured without TLS.

`S3Server(iam=True)` checks every request's SigV4 credentials against moto's own IAM and
enforces identity policies, as S3 does: moto accepts only its first few requests
unauthenticated (`INITIAL_NO_AUTH_ACTION_COUNT`), and those make the admin principal (the
operator's credentials, `admin_keys`). `iam_user()` makes any other principal, such as the
recorder's, with exactly the policy given.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tests.lab import config
from tests.lab.ca import LabCA
from tests.lab.errors import LabError, LabUnavailable
from tests.lab.journal import Journal, reap_stale
from tests.lab.managed import Managed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.lab.lab import LabHost

LAUNCHER = Path(__file__).with_name("moto_launcher.py")
# The unauthenticated requests that make the admin: create_user, put_user_policy,
# create_access_key. Every later request must carry valid credentials.
ADMIN_REQUESTS = 3
ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# Where a lab host's trust store takes local CAs (Debian's update-ca-certificates).
HOST_CA_DIR = "/usr/local/share/ca-certificates"


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
    tls: bool = True
    iam: bool = False
    admin_keys: tuple[str, str] | None = None
    log_path: Path | None = None
    journal: Journal | None = None
    process: subprocess.Popen[bytes] | None = None
    ca: LabCA | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """`host:port`, what the recorder's `--dst=s3://...` names."""
        return f"{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The endpoint URL to give boto3 and tsops."""
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def ca_bundle(self) -> Path:
        """The lab CA's certificate, the one thing a client must trust to reach this server."""
        if self.ca is None:
            raise LabError("the S3 server has no CA (plain HTTP, or not started)")
        return self.ca.cert_path

    def client_environment(self) -> dict[str, str]:
        """What tsops (or any AWS SDK) needs in its environment to trust this server."""
        return {"AWS_CA_BUNDLE": str(self.ca_bundle)} if self.tls else {}

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
        argv = [str(executable), "-H", self.host, "-p", str(self.port)]
        if self.tls:
            # -P: the launcher's own directory must not shadow the standard library.
            argv = [sys.executable, "-P", str(LAUNCHER), "-H", self.host, "-p", str(self.port),
                    *self._certificate(journal)]
        if self.log_path is not None:
            self._log = self.log_path.open("wb")
        environment = dict(os.environ)
        if self.iam:
            environment["INITIAL_NO_AUTH_ACTION_COUNT"] = str(ADMIN_REQUESTS)
        self.process = subprocess.Popen(
            argv,
            env=environment,
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
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1,
                                            context=self._ssl_context()):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        else:
            raise LabError(f"moto_server did not answer on {self.endpoint} within 30s")
        if self.iam:
            self._make_admin()

    def _iam_client(self, keys: tuple[str, str]) -> Any:
        import boto3

        return boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                            verify=str(self.ca_bundle) if self.tls else None,
                            aws_access_key_id=keys[0], aws_secret_access_key=keys[1])

    def _make_admin(self) -> None:
        """The operator's principal, made with moto's unauthenticated first requests."""
        iam = self._iam_client(("bootstrap", "bootstrap"))
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="admin",
                            PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin_keys = (key["AccessKeyId"], key["SecretAccessKey"])

    def iam_user(self, name: str, policy: str | dict[str, Any]) -> tuple[str, str]:
        """A principal with exactly `policy` (JSON text or data) and an access key: its keys."""
        if self.admin_keys is None:
            raise LabError("iam_user needs S3Server(iam=True)")
        iam = self._iam_client(self.admin_keys)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                            PolicyDocument=policy if isinstance(policy, str)
                            else json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def operator_environment(self) -> dict[str, str]:
        """The operator's AWS credentials (the admin principal) and trust, for tsops."""
        keys = self.admin_keys or ("testing", "testing")
        return {**self.client_environment(), "AWS_ACCESS_KEY_ID": keys[0],
                "AWS_SECRET_ACCESS_KEY": keys[1]}

    def _certificate(self, journal: Journal) -> list[str]:
        """Make the CA and this server's certificate in a private directory; moto's flags."""
        directory = config.RUN_DIR / f"s3-tls-{uuid.uuid4().hex[:12]}"
        journal.add_dir(directory)  # recorded first: removed even if this owner is killed
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
        self.ca = LabCA.create(directory)
        cert, key = self.ca.issue("s3-server", [self.host])
        return ["-c", str(cert), "-k", str(key)]

    def _ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the lab CA only (None for plain HTTP)."""
        return ssl.create_default_context(cafile=str(self.ca_bundle)) if self.tls else None

    def trust_on(self, hosts: Iterable[LabHost]) -> None:
        """Put the lab CA into each host's system trust store, as an operator would (about 2 s
        a host: update-ca-certificates rebuilds the whole store, so hosts go in parallel)."""
        pem = self.ca_bundle.read_text()

        def install(host: LabHost) -> None:
            host.nsenter(f"cat > {HOST_CA_DIR}/tsops-lab-s3-{self.port}.crt && "
                         "update-ca-certificates >/dev/null", input=pem)

        with ThreadPoolExecutor() as pool:
            list(pool.map(install, hosts))

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
        with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()):
            pass
        if self.iam:  # the reset forgot every principal: allow the admin's making again
            request = urllib.request.Request(
                f"{self.endpoint}/moto-api/reset-auth", method="POST",
                data=str(ADMIN_REQUESTS).encode(), headers={"Content-Type": "text/plain"})
            with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()):
                pass
            self._make_admin()

    def client(self, **kwargs: Any) -> S3Client:
        """Return a boto3 S3 client for this server: the admin's keys with `iam`, else
        throwaway credentials."""
        import boto3

        keys = self.admin_keys or ("testing", "testing")
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            verify=str(self.ca_bundle) if self.tls else None,
            region_name=kwargs.pop("region_name", "us-east-1"),
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            **kwargs,
        )
