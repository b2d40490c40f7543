"""Where recordings go: a local directory, or an S3 bucket through SigV4-signed requests.

S3 is always reached over HTTPS, verified against the system trust store (or the file
`SSL_CERT_FILE` names), as the real recorder does: `--dst=s3://<host>` has no scheme to ask for
plain HTTP, and an endpoint that does not speak TLS, or whose certificate is not trusted, is
refused.

Layout (reference section 2): `<dst>/<stable node ID of the SSH server>/<timestamp>.cast`.
A recording cut off mid-way keeps what was received (reference section 3: files can be
truncated).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import io
import os
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from xml.etree import ElementTree

S3_TIMEOUT_S = 30.0
S3_XML = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class StorageError(Exception):
    """Recordings cannot be stored; the message is for the log and the SSH server."""


class Recording(Protocol):
    """One recording being written."""

    key: str

    def write(self, data: bytes) -> None:
        """Append bytes of the .cast stream."""

    def close(self) -> None:
        """Finish the recording (for S3: upload it); raise StorageError on failure."""


class Storage(Protocol):
    """A destination for recordings."""

    def check(self) -> None:
        """Raise StorageError when recordings cannot be stored at all."""

    def open(self, node_id: str) -> Recording:
        """Start a new recording for the SSH server `node_id`."""

    def describe(self) -> str:
        """Say where recordings go, for the log."""

    def recording_keys(self) -> list[str]:
        """Return every stored recording's key, `<node ID>/<name>.cast`, sorted."""

    def read(self, key: str) -> bytes:
        """Return a stored recording; raise StorageError when it cannot be read."""


def recording_name(now: datetime.datetime) -> str:
    """Return a file name for a recording started at `now` (UTC, microseconds)."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + ".cast"


@dataclass
class LocalRecording:
    """A recording written to a local file as it arrives, so a cut-off upload leaves a prefix."""

    key: str
    file: io.BufferedWriter

    def write(self, data: bytes) -> None:
        """Append and flush, so a full disk fails the upload now rather than at the end."""
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as error:
            raise StorageError(f"writing {self.file.name}: {error.strerror}") from error

    def close(self) -> None:
        """Close the file."""
        try:
            self.file.close()
        except OSError as error:
            raise StorageError(f"closing {self.file.name}: {error.strerror}") from error


@dataclass
class LocalStorage:
    """Recordings in a local directory (created when missing, like the real recorder)."""

    root: Path

    def check(self) -> None:
        """Create the directory and make sure it takes files."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".tsrecorder-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StorageError(f"destination {self.root} is not writable: {error}") from error

    def open(self, node_id: str) -> LocalRecording:
        """Create `<root>/<node_id>/<timestamp>.cast`; a clash takes the next microsecond."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            (self.root / node_id).mkdir(exist_ok=True)
            while True:
                key = f"{node_id}/{recording_name(now)}"
                try:
                    fd = os.open(self.root / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                except FileExistsError:
                    now += datetime.timedelta(microseconds=1)
                    continue
                return LocalRecording(key, os.fdopen(fd, "wb"))
        except OSError as error:
            raise StorageError(f"creating a recording in {self.root}: {error}") from error

    def describe(self) -> str:
        """Name the directory."""
        return str(self.root)

    def recording_keys(self) -> list[str]:
        """List `<root>/*/*.cast`."""
        return sorted(str(path.relative_to(self.root)) for path in self.root.glob("*/*.cast"))

    def read(self, key: str) -> bytes:
        """Read one recording (only keys that recording_keys() lists)."""
        if key not in self.recording_keys():
            raise StorageError(f"no recording {key}")
        try:
            return (self.root / key).read_bytes()
        except OSError as error:
            raise StorageError(f"reading {key}: {error.strerror}") from error


@dataclass(frozen=True)
class S3Credentials:
    """Static credentials (flags or AWS_* variables)."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"S3Credentials(access_key={self.access_key!r}, secret_key=<hidden>)"


def region_of(endpoint: str) -> str:
    """Return the signing region the endpoint implies (there is no region flag)."""
    match = re.match(r"s3[.-]([a-z0-9-]+)\.amazonaws\.com(?::\d+)?$", endpoint)
    if match and match.group(1) != "external-1":
        return match.group(1)
    return "us-east-1"


def _quote(text: str, safe: str) -> str:
    return urllib.parse.quote(text, safe=safe)


def sign_v4(
    *,
    method: str,
    host: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    payload_sha256: str,
    region: str,
    credentials: S3Credentials,
    now: datetime.datetime,
) -> dict[str, str]:
    """Return `headers` plus x-amz-date, x-amz-content-sha256 and a SigV4 Authorization."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now.strftime('%Y%m%d')}/{region}/s3/aws4_request"
    signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    signed.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256})
    names = sorted(signed)
    canonical = "\n".join([
        method,
        _quote(path, "/~"),
        "&".join(f"{_quote(k, '~')}={_quote(v, '~')}" for k, v in sorted(query.items())),
        "".join(f"{name}:{signed[name]}\n" for name in names),
        ";".join(names),
        payload_sha256,
    ])
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()
    ])
    key = ("AWS4" + credentials.secret_key).encode()
    for part in (now.strftime("%Y%m%d"), region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = dict(headers)
    result["x-amz-date"] = amz_date
    result["x-amz-content-sha256"] = payload_sha256
    result["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return result


def s3_error(status: int, body: bytes) -> str:
    """Return `Code: Message` from an S3 XML error body, or the HTTP status."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 (the lab's own S3 server)
    except ElementTree.ParseError:
        return f"HTTP {status}"
    code = root.findtext("Code") or f"HTTP {status}"
    message = root.findtext("Message") or ""
    return f"{code}: {message}" if message else code


def tls_context() -> ssl.SSLContext:
    """A TLS client context with the system's trusted CAs (SSL_CERT_FILE/SSL_CERT_DIR honoured),
    certificates and host names verified."""
    return ssl.create_default_context()


@dataclass
class S3Storage:
    """Recordings in an S3 bucket, path-style, over HTTPS (the lab's moto server with a lab CA)."""

    endpoint: str
    bucket: str
    credentials: S3Credentials
    send_content_md5: bool = False
    context: ssl.SSLContext = field(default_factory=tls_context, repr=False)

    def request(
        self, method: str, key: str, query: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        """Send one signed request; return status and body; raise StorageError when unreachable."""
        path = f"/{self.bucket}/{key}" if key else f"/{self.bucket}"
        headers: dict[str, str] = {}
        if method == "PUT":
            headers["Content-Type"] = "application/x-asciicast"
            if self.send_content_md5:
                headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 (S3's Content-MD5 is MD5)
        signed = sign_v4(
            method=method, host=self.endpoint, path=path, query=query, headers=headers,
            payload_sha256=hashlib.sha256(body).hexdigest(), region=region_of(self.endpoint),
            credentials=self.credentials, now=datetime.datetime.now(datetime.UTC),
        )
        target = _quote(path, "/~")
        if query:
            target += "?" + "&".join(
                f"{_quote(k, '~')}={_quote(v, '~')}" if v else _quote(k, "~")
                for k, v in sorted(query.items())
            )
        connection = http.client.HTTPSConnection(self.endpoint, timeout=S3_TIMEOUT_S,
                                                  context=self.context)
        try:
            connection.request(method, target, body=body, headers=signed)
            response = connection.getresponse()
            return response.status, response.read()
        except ssl.SSLCertVerificationError as error:
            raise StorageError(
                f"S3 endpoint {self.endpoint}: TLS failed (certificate verify failed: "
                f"{error.verify_message}); the endpoint must serve HTTPS with a certificate "
                "the system trusts") from error
        except ssl.SSLError as error:
            raise StorageError(
                f"S3 endpoint {self.endpoint}: TLS failed ({error.reason or error}); the "
                "endpoint must serve HTTPS with a certificate the system trusts") from error
        except OSError as error:
            raise StorageError(f"S3 endpoint {self.endpoint}: {error}") from error
        finally:
            connection.close()

    def check(self) -> None:
        """GetBucketLocation: fail now when the bucket is missing or the key cannot see it."""
        status, body = self.request("GET", "", {"location": ""})
        if status != 200:
            problem = s3_error(status, body)
            raise StorageError(f"bucket {self.bucket!r} on {self.endpoint}: {problem}")

    def open(self, node_id: str) -> S3Recording:
        """Start a recording that is uploaded with PutObject when it ends."""
        key = f"{node_id}/{recording_name(datetime.datetime.now(datetime.UTC))}"
        return S3Recording(key, self)

    def describe(self) -> str:
        """Name the bucket and endpoint."""
        return f"s3://{self.bucket} on https://{self.endpoint}"

    def recording_keys(self) -> list[str]:
        """ListObjectsV2 through every page (needs s3:ListBucket)."""
        keys: list[str] = []
        query = {"list-type": "2"}
        while True:
            status, body = self.request("GET", "", query)
            if status != 200:
                raise StorageError(f"listing bucket {self.bucket!r}: {s3_error(status, body)}")
            root = ElementTree.fromstring(body)  # noqa: S314 (the lab's own S3 server)
            keys += [element.text or "" for element in root.iter(f"{S3_XML}Key")]
            token = root.findtext(f"{S3_XML}NextContinuationToken")
            if root.findtext(f"{S3_XML}IsTruncated") != "true" or not token:
                return sorted(key for key in keys if key.endswith(".cast"))
            query = {"list-type": "2", "continuation-token": token}

    def read(self, key: str) -> bytes:
        """GetObject (needs s3:GetObject)."""
        status, body = self.request("GET", key, {})
        if status != 200:
            raise StorageError(f"reading {key}: {s3_error(status, body)}")
        return body


@dataclass
class S3Recording:
    """A recording held until it ends (or is cut off), then stored with one PutObject."""

    key: str
    storage: S3Storage
    buffer: bytearray = field(default_factory=bytearray)

    def write(self, data: bytes) -> None:
        """Keep the bytes for the upload."""
        self.buffer += data

    def close(self) -> None:
        """PutObject what was received; raise StorageError when S3 refuses."""
        status, body = self.storage.request("PUT", self.key, {}, bytes(self.buffer))
        if status != 200:
            raise StorageError(f"PutObject {self.key}: {s3_error(status, body)}")
