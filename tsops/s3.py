"""The one seam between tsops and S3: every boto3 client is built here, every S3 failure is
translated here.

Deployment (the bucket and the recorders' health gate), status, verify, rotation and recording
review all take their clients from `client()`, so every S3 call tsops makes has the same bounded
timeouts and retries; `failure()` turns botocore's exceptions into the S3Error an operator reads.
Import inside functions only: boto3 is slow to import and `tsops --help` must not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tsops.errors import TsopsError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tsops.inventory.model import Storage

# Bounded waits: a hung endpoint costs at most CONNECT_TIMEOUT_S + READ_TIMEOUT_S per attempt,
# and at most ATTEMPTS attempts (botocore's standard retry mode, with its backoff).
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
ATTEMPTS = 3
# Enough pooled connections for the parallel readers (recordings review, migration).
POOL_CONNECTIONS = 32
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
DENIED = ("403", "AccessDenied")


class S3Error(TsopsError):
    """S3 refused a request or could not be reached."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def client(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    keys: tuple[str, str] | None = None,
) -> S3Client:
    """An S3 client: the operator's standard AWS credentials, or the given (id, secret) keys.

    An endpoint (S3-compatible stores, the lab) is addressed path-style.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
        max_pool_connections=POOL_CONNECTIONS,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    kwargs: dict[str, Any] = {"config": config}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if region:
        kwargs["region_name"] = region
    if keys is not None:
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = keys
    return boto3.client("s3", **kwargs)


def client_for(storage: Storage, keys: tuple[str, str] | None = None) -> S3Client:
    """An S3 client for the inventory's storage section."""
    return client(endpoint=storage.endpoint, region=storage.region, keys=keys)


def error_code(error: BaseException) -> str:
    """S3's error code of a failed call ("" when S3 was not reached)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_s3_failure(error: BaseException) -> bool:
    """Whether `error` is one of botocore's (a refusal or a transport failure)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(error, ClientError | BotoCoreError)


def failure(what: str, error: BaseException) -> S3Error:
    """The operator's sentence for a failed S3 call: `S3: <what>: <code>: <message>`."""
    from botocore.exceptions import ClientError

    code = error_code(error)
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "") or code
        return S3Error(f"S3: {what}: {code}: {message}", code)
    return S3Error(f"S3: {what}: cannot reach S3 ({error})")


def errors() -> tuple[type[Exception], ...]:
    """The exceptions an S3 call raises on failure, for `except` clauses."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def transfer_config(threshold: int, chunk: int) -> Any:
    """boto3's managed-transfer settings: parts of `chunk` bytes above `threshold`, one thread
    per transfer (the callers run transfers in parallel themselves)."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=threshold, multipart_chunksize=chunk,
                          use_threads=False)
