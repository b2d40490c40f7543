"""Log streaming as the inventory wants it, compared with what the API reads back.

Reading a stream back never returns its secrets (`token`, `s3SecretAccessKey`), so whether a
secret is current cannot be read from the API. tsops decides it from a record it keeps when it
writes a stream: a salted SHA-256 of the secrets it wrote, per log type, in a private file in
its state directory (beside the policy history). A stream is unchanged when every field the
API shows equals the inventory's and the record matches the secrets the inventory's references
resolve to now; a rotated secret, or no record on this machine, means one write. Values of
secrets (and of the S3 access key ID, also a reference) are never shown: a plan names them.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsops.checks import Check, StreamStatus
from tsops.files import replace_file
from tsops.inventory.model import LogStream, SecretRef

LOG_TYPES = ("configuration", "network")
SECRET_FIELDS = ("token", "s3SecretAccessKey")  # write-only: never read back
HIDDEN_FIELDS = (*SECRET_FIELDS, "s3AccessKeyId")  # from secret references: never shown
DEFAULTS: dict[str, Any] = {"compressionFormat": "none", "uploadPeriodMinutes": 0}
RECORD_NAME = "log-streaming.json"


@dataclass(frozen=True)
class Wanted:
    """One log type's stream as the inventory wants it: the API's fields, and the references
    of the fields that are secrets (or come from secret references)."""

    log_type: str
    fields: dict[str, Any]
    references: dict[str, SecretRef]

    @property
    def destination(self) -> str:
        """The destination type."""
        return str(self.fields["destinationType"])

    def describe(self) -> str:
        """One line naming the destination, never a secret."""
        where = self.fields.get("url") or "s3://{}/{}".format(
            self.fields.get("s3Bucket", ""), self.fields.get("s3KeyPrefix", "")).rstrip("/")
        return f"{self.destination} {where}"


def wanted(log_type: str, stream: LogStream) -> Wanted:
    """The API's fields of an inventory stream (secrets as references)."""
    fields: dict[str, Any] = {
        "destinationType": stream.destination, "url": stream.url, "user": stream.user,
        "compressionFormat": stream.compression, "uploadPeriodMinutes":
            stream.upload_period_minutes,
        "s3Bucket": stream.s3_bucket, "s3Region": stream.s3_region,
        "s3KeyPrefix": stream.s3_key_prefix, "s3AuthenticationType": stream.s3_authentication,
        "s3RoleArn": stream.s3_role_arn, "s3ExternalId": stream.s3_external_id,
    }
    references = {name: ref for name, ref in (
        ("token", stream.token), ("s3AccessKeyId", stream.s3_access_key_id),
        ("s3SecretAccessKey", stream.s3_secret_access_key)) if ref is not None}
    return Wanted(log_type, {k: v for k, v in fields.items() if v is not None}, references)


def shown(found: dict[str, Any]) -> dict[str, Any]:
    """What the API read back, normalized: no `logType`, no empty values, defaults filled."""
    fields = {k: v for k, v in found.items()
              if k != "logType" and k not in SECRET_FIELDS and v not in (None, "")}
    return {**DEFAULTS, **fields}


def digest(salt: str, values: dict[str, str]) -> str:
    """The salted SHA-256 of a stream's secret values."""
    text = json.dumps(values, sort_keys=True)
    return hashlib.sha256((salt + "\0" + text).encode()).hexdigest()


@dataclass(frozen=True)
class StreamPlan:
    """What bootstrap would do to one log type's stream: `create`, `update` or `none`, the
    fields that differ (names only for secrets), and the values to write."""

    log_type: str
    action: str
    changes: tuple[str, ...]
    want: Wanted
    current: dict[str, Any] | None

    def summary(self) -> str:
        """One line for the plan (no secret)."""
        if self.action == "create":
            return f"log streaming {self.log_type}: create {self.want.describe()}"
        if self.action == "update":
            return (f"log streaming {self.log_type}: update {self.want.describe()} ("
                    + "; ".join(self.changes) + ")")
        return f"log streaming {self.log_type}: no change ({self.want.describe()})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data, secrets named never shown."""
        return {"log_type": self.log_type, "action": self.action, "changes": list(self.changes),
                "destination": self.want.describe()}


def compare(want: Wanted, current: dict[str, Any] | None, values: dict[str, str],
            record: dict[str, str] | None) -> StreamPlan:
    """The plan for one stream: `values` are the secrets resolved now (by API field name),
    `record` what tsops wrote last from this machine ({"salt", "digest"}), if anything."""
    if current is None:
        return StreamPlan(want.log_type, "create", (), want, None)
    now = shown(current)
    target = {**DEFAULTS, **want.fields}
    changes = []
    for name in sorted(set(now) | set(target)):
        if name in HIDDEN_FIELDS:
            continue
        if now.get(name) != target.get(name):
            changes.append(f"{name}: {_show(now.get(name))} -> {_show(target.get(name))}")
    if "s3AccessKeyId" in values and now.get("s3AccessKeyId") != values["s3AccessKeyId"]:
        changes.append("s3AccessKeyId: differs")
    secret_values = {k: v for k, v in values.items() if k in SECRET_FIELDS}
    if secret_values:
        if record is None:
            changes.append(f"{', '.join(sorted(secret_values))}: not known to be current "
                           "(no record of writing it from here)")
        elif record.get("digest") != digest(record.get("salt", ""), secret_values):
            changes.append(f"{', '.join(sorted(secret_values))}: changed")
    return StreamPlan(want.log_type, "update" if changes else "none", tuple(changes), want,
                      current)


def _show(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value)


def body(want: Wanted, values: dict[str, str]) -> dict[str, Any]:
    """The PUT body: the fields and the secrets' values."""
    return {**want.fields, **values}


class Records:
    """The record of the secrets tsops wrote per log type (salted digests, a private file)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RECORD_NAME

    def load(self) -> dict[str, dict[str, str]]:
        """Every log type's record ({} when none or unreadable: then streams are rewritten)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)}

    def save(self, log_type: str, values: dict[str, str]) -> None:
        """Remember the secrets just written for `log_type` (as a salted digest)."""
        data = self.load()
        secret_values = {k: v for k, v in values.items() if k in SECRET_FIELDS}
        salt = random.token_hex(16)
        data[log_type] = {"salt": salt, "digest": digest(salt, secret_values)}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A private file (0600, written atomically): the digests are salted, yet not for others.
        replace_file(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(),
                     expected=None)


def stream_status(plan: StreamPlan, status: dict[str, Any] | None) -> StreamStatus:
    """The status of a stream from its plan (drift: bootstrap would write) and the API's
    publishing status."""
    name = f"log-streaming-{plan.log_type}"
    expected = f"{plan.log_type} logs streamed to {plan.want.describe()}"
    if plan.action == "create":
        return StreamStatus(plan.log_type, Check(name, "drift", expected, "not configured"))
    check = Check(name, "drift" if plan.action == "update" else "ok", expected,
                  "; ".join(plan.changes) if plan.changes else "match")
    if status is None:
        return StreamStatus(plan.log_type, check)
    error = str(status.get("lastError") or "")
    sent = status.get("numEntriesSent", 0)
    activity = status.get("lastActivity") or "never"
    actual = f"{sent} entries sent, last activity {activity}"
    publishing = Check(f"{name}-publishing", "drift" if error else "ok",
                       "publishing without errors",
                       f"last error: {error}; {actual}" if error else actual)
    return StreamStatus(plan.log_type, check, publishing, status)
