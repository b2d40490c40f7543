"""The new destination: options checked, and the storage fields to write (pure).

Connection settings (`endpoint`, `region`, `allow_plain_http`) are reused from the current
storage block as a set when both destinations are S3 and neither `--endpoint` nor `--region` is
given; credentials and Object Lock are reused unless given. A local directory needs none of
them, so they are removed from the block when the new destination is a directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from tsops.errors import UsageError
from tsops.inventory.model import ENV_VAR_RE, Storage, bucket_name_problem

ENTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*/[A-Za-z0-9][A-Za-z0-9._@-]*$")
# Fields that only mean something for an S3 destination.
S3_ONLY = ("region", "endpoint", "allow_plain_http", "send_content_md5", "object_lock",
           "encryption", "kms_key", "noncurrent_days", "recorder_principal",
           "break_glass_principal", "credentials")


@dataclass(frozen=True)
class RotateOptions:
    """What the operator asked for on the command line (no secret values, only their names)."""

    to: str
    endpoint: str | None = None
    region: str | None = None
    allow_plain_http: bool = False
    access_key_env: str | None = None
    secret_key_env: str | None = None
    access_key_keyring: str | None = None
    secret_key_keyring: str | None = None
    object_lock: Literal["compliance", "governance", "off"] | None = None
    retention_days: int | None = None
    migrate: bool = False

    @property
    def to_s3(self) -> bool:
        """Whether the new destination is a bucket."""
        return self.to.startswith("s3://")

    @property
    def connection_given(self) -> bool:
        """Whether new S3 connection settings were given (else the current ones are reused)."""
        return self.endpoint is not None or self.region is not None or self.allow_plain_http

    @property
    def credentials_given(self) -> bool:
        """Whether the recorder's S3 keys were named."""
        return any((self.access_key_env, self.secret_key_env, self.access_key_keyring,
                    self.secret_key_keyring))


def check_destination(to: str, option: str = "--to") -> None:
    """Refuse a destination that is neither `s3://BUCKET` nor an absolute directory (exit 2)."""
    if to.startswith("s3://"):
        bucket, _, prefix = to.removeprefix("s3://").partition("/")
        problem = bucket_name_problem(bucket)
        if problem:
            raise UsageError(f"{option} {to}: invalid bucket name {bucket!r}: {problem}")
        if prefix.strip("/"):
            raise UsageError(f"{option} {to}: tsrecorder has no key prefix option; give "
                             f"s3://{bucket} (a bucket for recordings only)")
        return
    if not to.startswith("/") or "\n" in to or to.rstrip("/") == "":
        raise UsageError(f"{option} {to!r}: expected s3://BUCKET or an absolute directory on the "
                         "recorder hosts, like /srv/recordings")


def check_options(current: Storage, options: RotateOptions) -> None:
    """Refuse options that cannot work together, naming the option (exit 2)."""
    check_destination(options.to)
    s3_options = [name for name, given in (
        ("--endpoint", options.endpoint is not None), ("--region", options.region is not None),
        ("--allow-plain-http", options.allow_plain_http),
        ("--access-key-env/--secret-key-env/--access-key-keyring/--secret-key-keyring",
         options.credentials_given),
        ("--object-lock", options.object_lock is not None),
        ("--retention-days", options.retention_days is not None)) if given]
    if not options.to_s3:
        if s3_options:
            raise UsageError(f"{s3_options[0]}: only used with an s3:// --to; "
                             f"{options.to} is a local directory")
        if options.migrate:
            raise UsageError(f"--migrate: copying recordings into a local directory is not "
                             f"supported ({options.to} would exist on every recorder host); "
                             "rotate without --migrate and keep the old destination")
        return
    if options.endpoint is not None:
        if not re.match(r"^https?://[^/\s]+/?$", options.endpoint):
            raise UsageError(f"--endpoint {options.endpoint}: expected https://HOST[:PORT]")
        if options.endpoint.startswith("http://") and not options.allow_plain_http:
            raise UsageError(f"--endpoint {options.endpoint}: plain http:// sends recordings "
                             "and keys unencrypted; use https://, or add --allow-plain-http for "
                             "a lab store")
    if options.region is not None and not re.match(r"^([a-z]{2}(-[a-z]+)+-[0-9]+|auto)$",
                                                   options.region):
        raise UsageError(f"--region {options.region}: expected a region like eu-central-1")
    if not current.is_s3 and options.endpoint is None and options.region is None:
        raise UsageError(f"--to {options.to}: the current destination {current.destination} "
                         "is a local directory, so there are no S3 settings to reuse; give "
                         "--region REGION (AWS) or --endpoint URL (S3-compatible store)")
    _check_credentials(options)
    if options.object_lock in ("compliance", "governance") and options.retention_days is None:
        raise UsageError(f"--object-lock {options.object_lock}: give --retention-days N")
    if options.retention_days is not None and options.object_lock in (None, "off"):
        raise UsageError("--retention-days: only used with --object-lock compliance|governance")
    if options.retention_days is not None and not 1 <= options.retention_days <= 36500:
        raise UsageError(f"--retention-days {options.retention_days}: expected 1 to 36500")


def _check_credentials(options: RotateOptions) -> None:
    if not options.credentials_given:
        return
    access = options.access_key_env or options.access_key_keyring
    secret = options.secret_key_env or options.secret_key_keyring
    if access is None or secret is None:
        raise UsageError("--access-key-env/--access-key-keyring and "
                         "--secret-key-env/--secret-key-keyring go together: name where both "
                         "of the recorder's keys are kept")
    for option, name in (("--access-key-env", options.access_key_env),
                         ("--secret-key-env", options.secret_key_env)):
        if name is not None and not ENV_VAR_RE.match(name):
            raise UsageError(f"{option} {name!r}: expected the NAME of an environment variable "
                             "(never the key itself)")
    for option, name in (("--access-key-keyring", options.access_key_keyring),
                         ("--secret-key-keyring", options.secret_key_keyring)):
        if name is not None and not ENTRY_RE.match(name):
            raise UsageError(f"{option} {name!r}: expected a keyring entry SERVICE/NAME, "
                             "like tsops/recorder-key-id")


def _secret_ref(env: str | None, entry: str | None) -> dict[str, str]:
    ref: dict[str, str] = {}
    if env is not None:
        ref["env"] = env
    if entry is not None:
        ref["keyring"] = entry
    return ref


def storage_changes(current: Storage, options: RotateOptions) -> dict[str, Any]:
    """The storage fields to write for the new destination (None: remove the field)."""
    changes: dict[str, Any] = {"destination": options.to}
    if not options.to_s3:
        changes.update({f: None for f in S3_ONLY})
        return changes
    if options.connection_given or not current.is_s3:
        changes["endpoint"] = options.endpoint.rstrip("/") if options.endpoint else None
        changes["region"] = options.region
        changes["allow_plain_http"] = True if options.allow_plain_http else None
    if options.credentials_given:
        changes["credentials"] = {
            "access_key_id": _secret_ref(options.access_key_env, options.access_key_keyring),
            "secret_access_key": _secret_ref(options.secret_key_env, options.secret_key_keyring),
        }
    if options.object_lock is not None:
        changes["object_lock"] = ({"mode": "off"} if options.object_lock == "off" else
                                  {"mode": options.object_lock,
                                   "retention_days": options.retention_days})
    return changes


def same_destination(current: Storage, options: RotateOptions) -> bool:
    """Whether `--to` names the destination already in use."""
    def norm(value: str) -> str:
        return value.rstrip("/") if value != "/" else value

    return norm(current.destination) == norm(options.to)


OPTION_OF = {"endpoint": "--endpoint", "region": "--region",
             "allow_plain_http": "--allow-plain-http",
             "credentials": "--access-key-*/--secret-key-*", "object_lock": "--object-lock"}


def settings_differ(current: Storage, options: RotateOptions) -> list[str]:
    """Options that would change the destination already in use (a rotation cannot do that)."""
    have = current.model_dump(mode="json", exclude_defaults=True)
    return [OPTION_OF.get(name, name) for name, value in storage_changes(current, options).items()
            if name != "destination" and value != have.get(name)]
