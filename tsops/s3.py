"""The one seam between tsops and S3: every boto3 client is built here, every S3 failure is
translated here.

Deployment (the bucket and the recorders' health gate), status, verify, rotation and recording
review all take their clients from `client()`, so every S3 call tsops makes has the same bounded
timeouts and retries; `failure()` turns botocore's exceptions into the S3Error an operator reads.
Import inside functions only: boto3 is slow to import and `tsops --help` must not load it.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tsops.errors import ExitCode, TsopsError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tsops.inventory.model import Storage

# Bounded waits: each attempt waits at most TIMEOUT_S to connect and TIMEOUT_S for each read,
# and a request makes at most ATTEMPTS attempts (botocore's standard retry mode; its backoff
# between attempts is well under a second for anything but throttling). So an endpoint that
# accepts and never answers fails after about ATTEMPTS * TIMEOUT_S = 12 s.
TIMEOUT_S = 4.0
ATTEMPTS = 3
# Enough pooled connections for the parallel readers (recordings review, migration).
POOL_CONNECTIONS = 32
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
DENIED = ("403", "AccessDenied")
# S3's answers that mean the credentials themselves are the problem, not the request.
EXPIRED = ("ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired")
UNKNOWN_KEYS = ("InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken",
                "SignatureDoesNotMatch", "UnrecognizedClientException")
# API operations whose IAM action is not `s3:<operation>` (the rest are).
_ACTIONS = {
    "HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket", "ListObjectVersions": "s3:ListBucketVersions",
    "HeadObject": "s3:GetObject", "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "CopyObject": "s3:PutObject", "DeleteObjects": "s3:DeleteObject",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
}


class S3Error(TsopsError):
    """S3 refused a request or could not be reached (`reached` False: no answer at all)."""

    def __init__(self, message: str, code: str = "", *, reached: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.reached = reached


class S3CredentialsError(S3Error):
    """The operator's AWS credentials are missing, unknown, expired or not allowed: theirs to
    fix, so exit 2 (the message says how)."""

    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class _Choice:
    """What the command line chose for every S3 client of this run (None: not given)."""

    profile: str | None = None
    timeout: float | None = None


_chosen = _Choice()
_last_call = threading.local()  # the operation and resource of this thread's latest S3 call
_loader: list[Any] = []  # botocore's data loader, shared (its cache holds the service model)
_loader_lock = threading.Lock()


def choose(*, profile: str | None = None, timeout: float | None = None) -> None:
    """Set `--profile` and `--s3-timeout` for every S3 client this process builds; they win
    over the inventory's storage.profile and timeouts.s3."""
    global _chosen
    _chosen = _Choice(profile if profile is not None else _chosen.profile,
                      timeout if timeout is not None else _chosen.timeout)


def settings(profile: str | None = None, timeout: float | None = None
             ) -> tuple[str | None, str, float]:
    """The profile, where it was named, and the timeout a client gets: the command line's,
    else the inventory's (the arguments), else AWS_PROFILE and TIMEOUT_S."""
    if _chosen.profile is not None:
        profile, source = _chosen.profile, "--profile"
    elif profile is not None:
        source = "storage.profile"
    else:
        profile, source = os.environ.get("AWS_PROFILE") or None, "AWS_PROFILE"
    wait = _chosen.timeout if _chosen.timeout is not None else timeout
    return profile, source, wait if wait is not None else TIMEOUT_S


def client(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    keys: tuple[str, str] | None = None,
    profile: str | None = None,
    timeout: float | None = None,
) -> S3Client:
    """An S3 client: the operator's AWS credentials (a named profile, else AWS's standard
    chain), or the given (id, secret) keys.

    An endpoint (S3-compatible stores, the lab) is addressed path-style. `profile` and
    `timeout` are the inventory's; the command line's win (`choose`).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    _quiet()
    profile, source, wait = settings(profile, timeout)
    config = Config(
        connect_timeout=wait, read_timeout=wait,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
        max_pool_connections=POOL_CONNECTIONS,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    kwargs: dict[str, Any] = {"config": config}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if region:
        kwargs["region_name"] = region
    try:
        if keys is not None:  # the profile then gives only settings such as the region
            kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = keys
        made = boto3.session.Session(botocore_session=_session(profile)).client("s3", **kwargs)
    except ProfileNotFound:
        raise S3CredentialsError(f"S3: {_unknown_profile(str(profile), source)}",
                                 reached=False) from None
    except BotoCoreError as error:
        raise failure("set up a client", error) from None
    who = ("the keys given (storage.credentials)" if keys is not None
           else _credentials_named(profile, source))
    made.meta.events.register("before-parameter-build.s3",
                              functools.partial(_remember, who, wait))
    return made


def _session(profile: str | None) -> Any:
    """A new botocore session for `profile` (credentials resolved afresh) sharing one data
    loader: a session of its own would parse S3's service model again (0.1 s of CPU)."""
    import botocore.loaders
    import botocore.session

    with _loader_lock:
        if not _loader:
            _loader.append(botocore.loaders.create_loader())
    session = botocore.session.Session(profile=profile)
    session.register_component("data_loader", _loader[0])
    return session


def client_for(storage: Storage, keys: tuple[str, str] | None = None,
               timeout: float | None = None) -> S3Client:
    """An S3 client for the inventory's storage section (its profile; the given timeout)."""
    return client(endpoint=storage.endpoint, region=storage.region, keys=keys,
                  profile=storage.profile, timeout=timeout)


def _quiet() -> None:
    """botocore and urllib3 never write to the terminal: their failures reach the operator as
    one S3Error line (logging's last-resort handler would print their warnings)."""
    import logging

    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())


def _credentials_named(profile: str | None, source: str) -> str:
    return f"profile {profile} (from {source})" if profile else "the default credential chain"


def _remember(who: str, wait: float, params: dict[str, Any], model: Any, **_: Any) -> None:
    """Keep the operation, resource, credentials and wait of the call this thread is about to
    make, so that a failure can name the IAM action, the resource, whose credentials, and how
    long it waited."""
    _last_call.value = (str(model.name), str(params.get("Bucket") or ""),
                        str(params.get("Key") or ""), who, wait)


def error_code(error: BaseException) -> str:
    """S3's error code of a failed call ("" when S3 was not reached)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_s3_failure(error: BaseException) -> bool:
    """Whether `error` is one of botocore's (a refusal or a transport failure)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(error, ClientError | BotoCoreError)


def iam_action(operation: str) -> str:
    """The IAM action an S3 API operation needs, like s3:ListBucket for ListObjectsV2."""
    return _ACTIONS.get(operation, f"s3:{operation}")


def _resource(bucket: str, key: str) -> str:
    """` on <the resource's ARN>` ("" when not known)."""
    if not bucket:
        return ""
    return f" on arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


def failure(what: str, error: BaseException) -> S3Error:
    """The operator's sentence for a failed S3 call: `S3: <what>: <why>`, one line.

    Credential problems (unknown profile, none found, expired, refused) are S3CredentialsError
    with the remedy; an endpoint that never answered names the endpoint and the wait.
    """
    kind, why, reached = explain(error)
    return kind(f"S3: {what}: {why}", error_code(error), reached=reached)


def explain(error: BaseException) -> tuple[type[S3Error], str, bool]:
    """Why an S3 call failed, for the operator: the error class to raise, the reason with its
    remedy, and whether S3 answered at all."""
    from botocore import exceptions as boto

    code = error_code(error)
    profile, source, wait = settings()
    operation, bucket, key, named, wait = getattr(
        _last_call, "value", ("", "", "", _credentials_named(profile, source), wait))
    remedy = ("pass --profile NAME, set storage.profile or AWS_PROFILE, or set "
              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(error, boto.ProfileNotFound):
        return S3CredentialsError, _unknown_profile(
            str(error.kwargs.get("profile", profile)), source), False
    if isinstance(error, boto.NoCredentialsError | boto.PartialCredentialsError):
        return S3CredentialsError, f"no AWS credentials found ({error}): {remedy}", False
    if isinstance(error, boto.SSOError | boto.TokenRetrievalError):
        login = f"aws sso login{' --profile ' + profile if profile else ''}"
        return S3CredentialsError, (f"the SSO session of {named} has expired or is invalid: "
                                    f"run `{login}`"), False
    if isinstance(error, boto.CredentialRetrievalError):
        return S3CredentialsError, f"cannot get AWS credentials for {named}: {error}", False
    if isinstance(error, boto.ConnectTimeoutError | boto.ReadTimeoutError):
        url = urlsplit(str(error.kwargs.get("endpoint_url", "")))
        endpoint = f"S3 endpoint {url.scheme}://{url.netloc}" if url.netloc else "S3"
        waited = ("to connect" if isinstance(error, boto.ConnectTimeoutError)
                  else f"for an answer to {operation or 'a request'}")
        return S3Error, (f"{endpoint} did not answer: waited {wait:g} s "
                         f"{waited}, {ATTEMPTS} times (raise it with --s3-timeout or "
                         "timeouts.s3)"), False
    if isinstance(error, boto.ClientError):
        message = error.response.get("Error", {}).get("Message", "") or code
        failed_operation = str(getattr(error, "operation_name", ""))
        if failed_operation and failed_operation != operation:  # not the call remembered
            operation, bucket, key = failed_operation, "", ""
            named = _credentials_named(profile, source)
        if code in EXPIRED:
            return S3CredentialsError, (
                f"the AWS credentials of {named} have expired ({code}): renew them (`aws sso "
                f"login`, or new session credentials), or {remedy}"), True
        if code in UNKNOWN_KEYS:
            return S3CredentialsError, (
                f"S3 does not accept the AWS credentials of {named} ({code}: {message}): "
                f"{remedy}"), True
        if code in DENIED:
            return S3CredentialsError, (
                f"access denied: {iam_action(operation)}{_resource(bucket, key)} for "
                f"{named}: allow it in that identity's IAM policy (and the bucket policy), "
                "or use other credentials (--profile)"), True
        return S3Error, f"{code}: {message}", True
    return S3Error, f"cannot reach S3 ({error})", False


def _unknown_profile(profile: str, source: str) -> str:
    return (f"AWS profile {profile!r} (from {source}) is not in ~/.aws/config or "
            "~/.aws/credentials: check its spelling (`aws configure list-profiles` lists them)")


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
