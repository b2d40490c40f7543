"""Pure renderers for the recorder: its systemd unit, its environment file, bucket and IAM policies.

Every function here takes typed inputs and returns text or JSON-ready data; tests compare the
results with golden files in tests/golden/recorder/. Secrets never reach the unit: they go to
the root-only environment file, which systemd reads before dropping to the service user.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from tsops.inventory.model import Storage

if TYPE_CHECKING:
    import jinja2

UNIT_NAME = "tsrecorder.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
CONFIG_DIR = "/etc/tsrecorder"
ENV_FILE = f"{CONFIG_DIR}/env"
AUTHKEY_FILE = f"{CONFIG_DIR}/authkey.env"
CONTAINER_UID = 65532  # the user the tailscale/tsrecorder image runs as
CANARY_PREFIX = "tsops-canary/"
LIFECYCLE_RULE_ID = "tsops-noncurrent-versions"


@dataclass(frozen=True)
class RecorderSpec:
    """Everything one recorder host's unit depends on (no secrets)."""

    hostname: str
    runtime: Literal["binary", "container"]
    binary_path: str
    image: str
    container_engine: Literal["docker", "podman"]
    service_user: str
    statedir: str
    ui: bool
    login_server: str | None
    storage: Storage

    @property
    def owner(self) -> str:
        """Who owns the statedir and a local destination (user, or uid in the container)."""
        return self.service_user if self.runtime == "binary" else str(CONTAINER_UID)


def s3_dst(storage: Storage) -> str:
    """The `--dst` tsrecorder takes for S3: `s3://<endpoint host[:port]>`, never the bucket."""
    if storage.endpoint is not None:
        return "s3://" + urlsplit(storage.endpoint).netloc
    region = storage.region or "us-east-1"
    return f"s3://s3.{region}.amazonaws.com"


def recorder_flags(spec: RecorderSpec) -> list[str]:
    """tsrecorder's command-line flags (the statedir as a flag: the env form is not honoured)."""
    storage = spec.storage
    if storage.is_s3:
        flags = [f"--dst={s3_dst(storage)}", f"--bucket={storage.bucket}"]
    else:
        flags = [f"--dst={storage.destination}"]
    flags += [f"--statedir={spec.statedir}", f"--hostname={spec.hostname}"]
    if spec.ui:
        flags.append("--ui")
    return flags


def _environment(spec: RecorderSpec) -> list[tuple[str, str]]:
    pairs = []
    if spec.login_server:
        pairs.append(("TSRECORDER_LOGIN_SERVER", spec.login_server))
    storage = spec.storage
    # S3 refuses a PutObject without Content-MD5 (or a checksum) in an Object Lock bucket.
    if storage.is_s3 and (storage.send_content_md5 or storage.object_lock.mode != "off"):
        pairs.append(("S3_SEND_CONTENT_MD5", "true"))
    return pairs


def render_unit(spec: RecorderSpec) -> str:
    """The systemd unit for one recorder host, for either runtime."""
    writable = [spec.statedir]
    if not spec.storage.is_s3:
        writable.append(spec.storage.destination)
    environment = _environment(spec)
    passed = ["TS_AUTHKEY", *(name for name, _ in environment)]
    if spec.storage.is_s3:
        passed += ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    name = f"tsrecorder-{spec.runtime}.service.j2"
    return _template(name).render(
        spec=spec, flags=recorder_flags(spec), environment=environment, writable=writable,
        env_file=ENV_FILE, authkey_file=AUTHKEY_FILE, passed=passed,
        engine=f"/usr/bin/{spec.container_engine}", container_uid=CONTAINER_UID,
    )


def render_env(access_key_id: str | None, secret_access_key: str | None) -> str:
    """The root-only environment file: the recorder's S3 keys, if it has its own."""
    variables = []
    if access_key_id is not None and secret_access_key is not None:
        variables = [("AWS_ACCESS_KEY_ID", _env_value(access_key_id)),
                     ("AWS_SECRET_ACCESS_KEY", _env_value(secret_access_key))]
    return _template("tsrecorder.env.j2").render(variables=variables)


def render_authkey_env(key: str) -> str:
    """The one-shot environment file holding the recorder's auth key until it has joined."""
    return f"TS_AUTHKEY={_env_value(key)}\n"


def _env_value(value: str) -> str:
    """Quote a value for a systemd EnvironmentFile."""
    if "\n" in value:
        raise ValueError("a value for an environment file must be one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@cache
def _environment_jinja() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=False,  # noqa: S701
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def _template(name: str) -> jinja2.Template:
    return _environment_jinja().get_template(name)


def template_dir() -> Path:
    """Where the templates are: inside the installed package, or at the repository's top."""
    packaged = Path(__file__).resolve().parents[1] / "templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "templates"


def _arn(storage: Storage) -> tuple[str, str]:
    partition = "aws"
    if storage.region and storage.region.startswith("cn-"):
        partition = "aws-cn"
    elif storage.region and storage.region.startswith("us-gov-"):
        partition = "aws-us-gov"
    bucket = f"arn:{partition}:s3:::{storage.bucket}"
    return bucket, f"{bucket}/*"


def recorder_actions(ui: bool) -> tuple[list[str], list[str]]:
    """What the recorder needs: (bucket-level, object-level) actions."""
    if ui:
        return ["s3:GetBucketLocation", "s3:ListBucket"], ["s3:GetObject", "s3:PutObject"]
    return ["s3:GetBucketLocation"], ["s3:PutObject"]


def bucket_policy(storage: Storage, ui: bool) -> dict[str, Any]:
    """The bucket policy: TLS only, no deletes or policy changes but by break-glass, recorder puts.

    Without `break_glass_principal` the deny has no exception: only the account's root user
    (which S3 always lets delete a bucket policy) can undo it. With `allow_plain_http` (a lab
    store without TLS) the TLS statement is left out, since it would refuse every request.
    """
    bucket, objects = _arn(storage)
    except_break_glass: dict[str, Any] = {}
    if storage.break_glass_principal is not None:
        except_break_glass = {"Condition": {
            "ArnNotEquals": {"aws:PrincipalArn": storage.break_glass_principal}}}
    statements: list[dict[str, Any]] = []
    if not storage.allow_plain_http:
        statements.append({
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": [bucket, objects],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        })
    statements.append({
        "Sid": "DenyDeletingRecordings", "Effect": "Deny", "Principal": "*",
        "Action": ["s3:BypassGovernanceRetention", "s3:DeleteObject", "s3:DeleteObjectVersion",
                   "s3:PutObjectRetention", "s3:PutObjectLegalHold"],
        "Resource": objects, **except_break_glass,
    })
    statements.append({
        "Sid": "DenyChangingProtection", "Effect": "Deny", "Principal": "*",
        "Action": ["s3:DeleteBucket", "s3:DeleteBucketPolicy", "s3:PutBucketPolicy",
                   "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning",
                   "s3:PutLifecycleConfiguration"],
        "Resource": bucket, **except_break_glass,
    })
    if storage.recorder_principal is not None:
        bucket_actions, object_actions = recorder_actions(ui)
        principal = {"AWS": storage.recorder_principal}
        statements.append({"Sid": "RecorderBucket", "Effect": "Allow", "Principal": principal,
                           "Action": bucket_actions, "Resource": bucket})
        statements.append({"Sid": "RecorderObjects", "Effect": "Allow", "Principal": principal,
                           "Action": object_actions, "Resource": objects})
    return {"Version": "2012-10-17", "Statement": statements}


def iam_policy(storage: Storage, ui: bool) -> dict[str, Any]:
    """The least-privilege IAM policy for the recorder's own S3 credentials."""
    bucket, objects = _arn(storage)
    bucket_actions, object_actions = recorder_actions(ui)
    statements: list[dict[str, Any]] = [
        {"Sid": "RecorderBucket", "Effect": "Allow", "Action": bucket_actions,
         "Resource": bucket},
        {"Sid": "RecorderObjects", "Effect": "Allow", "Action": object_actions,
         "Resource": objects},
    ]
    if storage.encryption == "sse-kms" and storage.kms_key is not None:
        kms_actions = ["kms:GenerateDataKey"] + (["kms:Decrypt"] if ui else [])
        statements.append({"Sid": "RecorderKmsKey", "Effect": "Allow", "Action": kms_actions,
                           "Resource": storage.kms_key})
    return {"Version": "2012-10-17", "Statement": statements}


def normalize_policy(policy: Any) -> Any:
    """A policy in one canonical form: lists sorted, one-item lists as lists, Sids ordered."""
    if isinstance(policy, str):
        policy = json.loads(policy)

    def value(node: Any, key: str = "") -> Any:
        if key == "Statement" and isinstance(node, dict):
            node = [node]
        if isinstance(node, dict):
            return {k: value(v, k) for k, v in sorted(node.items())}
        if isinstance(node, list):
            return sorted((value(v) for v in node), key=lambda s: json.dumps(s, sort_keys=True))
        if key in ("Action", "NotAction", "Resource", "NotResource", "AWS", "Service"):
            return [node]
        if isinstance(node, bool):
            return str(node).lower()
        return node

    normalized = value(policy)
    if isinstance(normalized, dict):
        for statement in normalized.get("Statement", []):
            conditions = statement.get("Condition", {})
            for operator, pairs in conditions.items():
                conditions[operator] = {k: v if isinstance(v, list) else [v]
                                        for k, v in pairs.items()}
    return normalized


def policy_diff(current: Any, desired: Any) -> str:
    """A unified diff of two policies after normalizing; empty when they are equal."""
    def lines(policy: Any) -> list[str]:
        if policy is None:
            return []
        return json.dumps(normalize_policy(policy), indent=2, sort_keys=True).splitlines()

    before, after = lines(current), lines(desired)
    if before == after:
        return ""
    return "\n".join(difflib.unified_diff(before, after, "current", "desired", lineterm=""))
