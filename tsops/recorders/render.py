"""Pure renderers for the recorder: its systemd unit, its environment file, bucket and IAM policies.

Every function here takes typed inputs and returns text or JSON-ready data; tests compare the
results with golden files in tests/golden/recorder/. Secrets never reach the unit: they go to
the root-only environment file, which systemd reads before dropping to the service user.

Every value that lands in the unit or an environment file is written with systemd's quoting
rules for the directive it lands in (systemd.syntax(7), systemd.service(5) "Command lines",
systemd.exec(5) `Environment=` and `EnvironmentFile=`), and a value those rules cannot carry
(a control character such as a newline) is refused with a RenderError naming its field. This
does not rely on the inventory's validation: no value can add a line or a directive.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from tsops.errors import ExitCode, TsopsError
from tsops.inventory.model import Storage

if TYPE_CHECKING:
    import jinja2

UNIT_NAME = "tsrecorder.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
CONFIG_DIR = "/etc/tsrecorder"
ENV_FILE = f"{CONFIG_DIR}/env"
AUTHKEY_FILE = f"{CONFIG_DIR}/authkey.env"
CONTAINER_UID = 65532  # the user the tailscale/tsrecorder image runs as
WRITE_CHECK_PREFIX = "tsops-canary/"
LIFECYCLE_RULE_ID = "tsops-noncurrent-versions"
# The container runtime hands secrets to the container as files in this directory (on the /run
# tmpfs, made at each start and removed when the unit stops), mounted read-only at the same path.
# Not a RuntimeDirectory=: systemd would chown it back to the unit's user (root) before ExecStart.
SECRETS_DIR = "/run/tsrecorder"
CONTAINER_AUTHKEY_FILE = f"{SECRETS_DIR}/authkey"
CONTAINER_CREDENTIALS_FILE = f"{SECRETS_DIR}/aws-credentials"


class RenderError(TsopsError):
    """A value cannot be written into the recorder's unit or environment file safely."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


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


# Characters that mean the same in every directive and need no quoting: an ordinary value is
# written exactly as it is, so existing units do not change.
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}")  # systemd's strict user names
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_LINE_BREAKING = ("Cc", "Zl", "Zp")  # control characters (newline, CR, NUL, ...), separators


def _one_line(value: str, field: str, into: str) -> str:
    """Refuse a value holding a control character: it could end the line it is written on."""
    for char in value:
        if unicodedata.category(char) in _LINE_BREAKING:
            raise RenderError(field, f"holds the control character U+{ord(char):04X}, which "
                                     f"{into} cannot carry safely")
    return value


def _path(value: str, field: str) -> str:
    """An absolute path for the unit: no quote or backslash (ReadWritePaths= keeps escapes)."""
    _one_line(value, field, "the recorder's systemd unit")
    if not value.startswith("/"):
        raise RenderError(field, "must be an absolute path")
    if any(char in value for char in "\\\"'"):
        raise RenderError(field, "a path in the recorder's unit cannot hold quotes or backslashes")
    return value


def command_word(value: str, field: str, *, executable: bool = False) -> str:
    """One word of an Exec*= command line (systemd.service(5), "Command lines").

    Quoted with double quotes when it holds anything but plain characters; inside, a backslash
    and a double quote are escaped and `%` is doubled (no specifier expansion). In arguments
    `$` is doubled too (no variable expansion); the executable's path is never expanded, so
    there it stays. A quoted `;` is an argument, never a command separator.
    """
    _one_line(value, field, "the recorder's systemd unit")
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if not executable:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def command_line(words: list[tuple[str, str]]) -> str:
    """An Exec*= value from (word, field) pairs; the first is the executable's absolute path."""
    (executable, field), *arguments = words
    return " ".join([command_word(_path(executable, field), field, executable=True),
                     *(command_word(word, where) for word, where in arguments)])


def environment_assignment(name: str, value: str, field: str) -> str:
    """The value of one `Environment=` line (no variable expansion there, specifiers only)."""
    _one_line(value, field, "the recorder's systemd unit")
    if _PLAIN.fullmatch(value):
        return f"{name}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{name}={escaped}"'


def _specifiers(value: str, field: str) -> str:
    """Free text for a directive such as Description= (only `%` is special)."""
    return _one_line(value, field, "the recorder's systemd unit").replace("%", "%%")


def _path_list_item(value: str, field: str) -> str:
    """One entry of ReadWritePaths= (space-separated, quotes allowed, specifiers expanded)."""
    _path(value, field)
    escaped = value.replace("%", "%%")
    return escaped if _PLAIN.fullmatch(value) else f'"{escaped}"'


def s3_dst(storage: Storage) -> str:
    """The `--dst` tsrecorder takes for S3: `s3://<endpoint host[:port]>`, never the bucket."""
    if storage.endpoint is not None:
        return "s3://" + urlsplit(storage.endpoint).netloc
    region = storage.region or "us-east-1"
    return f"s3://s3.{region}.amazonaws.com"


def _flags(spec: RecorderSpec) -> list[tuple[str, str]]:
    """tsrecorder's flags, each with the inventory field it comes from."""
    storage = spec.storage
    if storage.is_s3:
        where = "storage.endpoint" if storage.endpoint is not None else "storage.region"
        # urlsplit drops newlines and tabs silently: refuse them before it sees the endpoint.
        _one_line(storage.endpoint or storage.region or "", where, "the recorder's systemd unit")
        _one_line(storage.destination, "storage.destination", "the recorder's systemd unit")
        try:
            dst = s3_dst(storage)
        except ValueError as error:
            raise RenderError(where, f"is not a usable endpoint: {error}") from error
        flags = [(f"--dst={dst}", where),
                 (f"--bucket={storage.bucket}", "storage.destination")]
    else:
        flags = [(f"--dst={_path(storage.destination, 'storage.destination')}",
                  "storage.destination")]
    flags += [(f"--statedir={_path(spec.statedir, 'recorders.statedir')}", "recorders.statedir"),
              (f"--hostname={spec.hostname}", "recorders.hosts")]
    if spec.ui:
        flags.append(("--ui", "recorders.ui"))
    return flags


def recorder_flags(spec: RecorderSpec) -> list[str]:
    """tsrecorder's command-line flags (the statedir as a flag: the env form is not honoured)."""
    return [flag for flag, _ in _flags(spec)]


def _environment(spec: RecorderSpec) -> list[tuple[str, str, str]]:
    """(name, value, field) of the unit's Environment= lines."""
    triples = []
    if spec.login_server:
        triples.append(("TSRECORDER_LOGIN_SERVER", spec.login_server, "tailnet.login_server"))
    storage = spec.storage
    # S3 refuses a PutObject without Content-MD5 (or a checksum) in an Object Lock bucket.
    if storage.is_s3 and (storage.send_content_md5 or storage.object_lock.mode != "off"):
        triples.append(("S3_SEND_CONTENT_MD5", "true", "storage.send_content_md5"))
    return triples


def _has_own_keys(spec: RecorderSpec) -> bool:
    return spec.storage.is_s3 and spec.storage.credentials is not None


def _secrets_script(spec: RecorderSpec) -> str:
    """Shell run by the container unit before the container: the secrets as files.

    systemd has already read the root-only environment files into this process's environment;
    the script writes the auth key (empty once the recorder has joined: it resumes from its
    statedir) and the S3 keys as an AWS shared credentials file, readable only by the image's
    user, in a tmpfs directory that ExecStopPost removes. Values reach `printf` as
    arguments of a shell built-in: never in argv of a process, never in `docker inspect`.
    """
    uid = CONTAINER_UID
    steps = [
        "set -eu", "umask 077", f"rm -rf {SECRETS_DIR}", f"mkdir -m 0700 {SECRETS_DIR}",
        f"printf '%s\\n' \"${{TS_AUTHKEY:-}}\" > {CONTAINER_AUTHKEY_FILE}",
    ]
    if _has_own_keys(spec):
        steps.append("printf '[default]\\naws_access_key_id = %s\\naws_secret_access_key = %s\\n' "
                     '"$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" '
                     f"> {CONTAINER_CREDENTIALS_FILE}")
    steps += [f"chmod 0400 {SECRETS_DIR}/*", f"chmod 0500 {SECRETS_DIR}",
              f"chown -R {uid}:{uid} {SECRETS_DIR}"]
    return "; ".join(steps)


def _container_run(spec: RecorderSpec, writable: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The engine's `run` command: secrets as files on a read-only volume, never as values."""
    engine = "recorders.container_engine"
    words = [(f"/usr/bin/{spec.container_engine}", engine), ("run", engine), ("--rm", engine),
             ("--name=tsrecorder", engine), (f"--user={CONTAINER_UID}:{CONTAINER_UID}", engine),
             ("--read-only", engine), ("--cap-drop=ALL", engine),
             ("--security-opt=no-new-privileges", engine)]
    for path, field in writable:
        if ":" in path or "," in path:
            raise RenderError(field, "a path mounted into the container cannot hold ':' or ','")
        words.append((f"--volume={path}:{path}", field))
    words.append((f"--volume={SECRETS_DIR}:{SECRETS_DIR}:ro", engine))
    words.append((f"--env=TS_AUTHKEY_FILE={CONTAINER_AUTHKEY_FILE}", engine))
    if _has_own_keys(spec):
        words.append((f"--env=AWS_SHARED_CREDENTIALS_FILE={CONTAINER_CREDENTIALS_FILE}",
                      "storage.credentials"))
    words += [(f"--env={name}", field) for name, _, field in _environment(spec)]
    if not _IMAGE.fullmatch(spec.image):
        raise RenderError("recorders.image", "expected an image reference such as "
                                             "tailscale/tsrecorder:v1.80.0")
    words += [(spec.image, "recorders.image"), ("/tsrecorder", "recorders.image")]
    return words + _flags(spec)


def render_unit(spec: RecorderSpec) -> str:
    """The systemd unit for one recorder host, for either runtime (RenderError if unsafe)."""
    writable = [(spec.statedir, "recorders.statedir")]
    if not spec.storage.is_s3:
        writable.append((spec.storage.destination, "storage.destination"))
    environment = [environment_assignment(name, value, field)
                   for name, value, field in _environment(spec)]
    values: dict[str, object] = {
        "env_file": ENV_FILE, "authkey_file": AUTHKEY_FILE, "environment": environment,
        "writable": " ".join(_path_list_item(path, field) for path, field in writable),
    }
    if spec.runtime == "binary":
        _one_line(spec.service_user, "recorders.service_user", "the recorder's systemd unit")
        if not _USER.fullmatch(spec.service_user):
            raise RenderError("recorders.service_user", "expected a user name of letters, "
                                                        "digits, '_' and '-'")
        values["user"] = spec.service_user
        values["exec_start"] = command_line(
            [(spec.binary_path, "recorders.binary_path"), *_flags(spec)])
    else:
        engine = f"/usr/bin/{spec.container_engine}"
        field = "recorders.container_engine"
        values["image"] = _specifiers(spec.image, "recorders.image")
        values["docker"] = spec.container_engine == "docker"
        values["exec_forget"] = command_line([("/bin/rm", field), ("-rf", field),
                                              (SECRETS_DIR, field)])
        values["exec_remove"] = command_line([(engine, field), ("rm", field),
                                              ("--force", field), ("tsrecorder", field)])
        values["exec_secrets"] = command_line([("/bin/sh", field), ("-c", field),
                                               (_secrets_script(spec), field)])
        values["exec_start"] = command_line(_container_run(spec, writable))
        values["exec_stop"] = command_line([(engine, field), ("stop", field),
                                            ("tsrecorder", field)])
    return _template(f"tsrecorder-{spec.runtime}.service.j2").render(**values)


def render_env(access_key_id: str | None, secret_access_key: str | None) -> str:
    """The root-only environment file: the recorder's S3 keys, if it has its own."""
    variables = []
    if access_key_id is not None and secret_access_key is not None:
        for name, value, field in [
            ("AWS_ACCESS_KEY_ID", access_key_id, "storage.credentials.access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", secret_access_key, "storage.credentials.secret_access_key"),
        ]:
            # The container runtime copies the keys into an AWS credentials file, whose
            # parsers strip white space around a value.
            if value != value.strip():
                raise RenderError(field, "starts or ends with white space, which the AWS "
                                         "credentials file cannot carry")
            variables.append((name, env_file_value(value, field)))
    return _template("tsrecorder.env.j2").render(variables=variables)


def render_authkey_env(key: str) -> str:
    """The one-shot environment file holding the recorder's auth key until it has joined."""
    return f"TS_AUTHKEY={env_file_value(key, 'the recorder auth key')}\n"


def env_file_value(value: str, field: str) -> str:
    """A value for a systemd EnvironmentFile, double-quoted (systemd.exec(5)).

    Inside double quotes systemd (and a POSIX shell) take a backslash before one of
    `"`, `\\`, `` ` `` and `$` as that character; nothing else is special but a newline,
    which is refused: the value never leaves its line. The value is never shown (a secret).
    """
    _one_line(value, field, "an environment file")
    escaped = value.replace("\\", "\\\\")
    for special in '"`$':
        escaped = escaped.replace(special, "\\" + special)
    return f'"{escaped}"'


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
    """What the recorder needs: (bucket-level, object-level) actions.

    tsrecorder checks its bucket with GetBucketLocation at start and writes each recording with
    PutObject (reference section 2); s3:PutObject also covers the calls of a multipart upload
    (create, upload part, complete). Left out on purpose: s3:AbortMultipartUpload (with it the
    recorder's keys could abort other recordings still being uploaded; the lifecycle rule
    aborts stale uploads after 7 days), s3:ListMultipartUploadParts and
    s3:ListBucketMultipartUploads (a writer that does not resume uploads needs neither), and
    every delete, retention and legal-hold action. Reading is only for the UI.
    """
    if ui:
        return ["s3:GetBucketLocation", "s3:ListBucket"], ["s3:GetObject", "s3:PutObject"]
    return ["s3:GetBucketLocation"], ["s3:PutObject"]


def recorder_objects(storage: Storage) -> list[str]:
    """The keys the recorder may write: recordings (`<node ID>/<time>.cast`, the only layout
    tsrecorder writes, reference section 2) and tsops's canaries, written with its keys."""
    bucket, _ = _arn(storage)
    return [f"{bucket}/*.cast", f"{bucket}/{WRITE_CHECK_PREFIX}*"]


def _kms_region(storage: Storage) -> str | None:
    """The AWS region of the KMS key: from its ARN, else the storage's region."""
    key = storage.kms_key or ""
    if key.startswith("arn:"):
        return key.split(":")[3]
    region = storage.region
    return region if region and region != "auto" else None


def kms_statement(storage: Storage) -> dict[str, Any] | None:
    """The recorder's use of the SSE-KMS key, or None without SSE-KMS.

    With SSE-KMS a PutObject needs kms:GenerateDataKey, and a multipart upload also
    kms:Decrypt (S3 decrypts the data key to complete it); whether tsrecorder uploads in parts
    is not documented, so both are granted; the UI's reads need kms:Decrypt anyway. Only
    through S3 in the key's region (kms:ViaService), so the keys cannot use the KMS key
    directly.
    """
    if storage.encryption != "sse-kms" or storage.kms_key is None:
        return None
    statement: dict[str, Any] = {"Sid": "RecorderKmsKey", "Effect": "Allow",
                                 "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                                 "Resource": storage.kms_key}
    region = _kms_region(storage)
    if region is not None:
        suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
        statement["Condition"] = {"StringEquals": {"kms:ViaService": f"s3.{region}{suffix}"}}
    return statement


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
                           "Action": object_actions, "Resource": recorder_objects(storage)})
    return {"Version": "2012-10-17", "Statement": statements}


def iam_policy(storage: Storage, ui: bool) -> dict[str, Any]:
    """The least-privilege IAM policy for the recorder's own S3 credentials (see
    recorder_actions, recorder_objects and kms_statement for what is granted and why)."""
    bucket, _ = _arn(storage)
    bucket_actions, object_actions = recorder_actions(ui)
    statements: list[dict[str, Any]] = [
        {"Sid": "RecorderBucket", "Effect": "Allow", "Action": bucket_actions,
         "Resource": bucket},
        {"Sid": "RecorderObjects", "Effect": "Allow", "Action": object_actions,
         "Resource": recorder_objects(storage)},
    ]
    kms = kms_statement(storage)
    if kms is not None:
        statements.append(kms)
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
