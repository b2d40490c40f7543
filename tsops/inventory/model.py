"""The inventory as frozen, typed objects; every field here is documented in docs/inventory.md."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

TAG_RE = re.compile(r"^tag:[A-Za-z][A-Za-z0-9-]*$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


def _tag(value: str) -> str:
    if not TAG_RE.fullmatch(value):
        raise PydanticCustomError(
            "tag", 'expected a tag like "tag:server", got {value}', {"value": repr(value)}
        )
    return value


def _hostname(value: str) -> str:
    if not HOSTNAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "hostname",
            "expected a host name of lowercase letters, digits and hyphens, got {value}",
            {"value": repr(value)},
        )
    return value


def _version(value: str) -> str:
    if not VERSION_RE.fullmatch(value):
        raise PydanticCustomError(
            "version", 'expected a version like "1.76.1", got {value}', {"value": repr(value)}
        )
    return value


def _sha256(value: str) -> str:
    if not SHA256_RE.fullmatch(value):
        raise PydanticCustomError(
            "sha256", "expected 64 lowercase hex digits, got {value}", {"value": repr(value)}
        )
    return value


URL_RE = re.compile(
    r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?P<path>/(?:[A-Za-z0-9._~/+=:@,&-]|%[0-9A-Fa-f]{2})*)?"
    r"(?P<query>\?(?:[A-Za-z0-9._~/+=:@,&-]|%[0-9A-Fa-f]{2})*)?"
)
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL"}
TAILNET_RE = re.compile(r"-|[A-Za-z0-9][A-Za-z0-9._@+-]*")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
HOST_PATH_RE = re.compile(r"/[A-Za-z0-9._/+@=:,-]*")
HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
DURATION_RE = re.compile(r"(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+")
DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                  "m": 60.0, "h": 3600.0}
CHECK_PERIOD_MIN, CHECK_PERIOD_MAX = 60.0, 168 * 3600.0
REVERT_MIN, REVERT_MAX = 10.0, 3600.0


def _text(value: str) -> str:
    """Refuse an empty value and any control, format or line-separator character."""
    # A newline in a value rendered into a systemd unit, an environment file or a script would
    # add a line of the writer's choosing (ExecStartPre=+...); bidi overrides hide text.
    if not value:
        raise PydanticCustomError("empty", "expected a value, got an empty string")
    for char in value:
        if unicodedata.category(char) in CONTROL_CATEGORIES:
            name = CONTROL_NAMES.get(char, f"the control character U+{ord(char):04X}")
            raise PydanticCustomError(
                "control_character", "{name} is not allowed in a value (control characters "
                "can add lines to units, environment files and scripts), got {value}",
                {"name": name, "value": repr(value)},
            )
    return value


def _word(value: str) -> str:
    """A value without whitespace (a policy selector, a user name, an id)."""
    _text(value)
    if any(char.isspace() for char in value):
        raise PydanticCustomError(
            "whitespace", "expected a value without spaces, got {value}", {"value": repr(value)}
        )
    return value


def _tailnet(value: str) -> str:
    _text(value)
    if not TAILNET_RE.fullmatch(value):
        raise PydanticCustomError(
            "tailnet", 'expected a tailnet name like "example.com" or "-" (letters, digits and '
            ". _ @ + -), got {value}", {"value": repr(value)},
        )
    return value


def _user(value: str) -> str:
    _text(value)
    if not USER_RE.fullmatch(value):
        raise PydanticCustomError(
            "user", "expected a login name of letters, digits and . _ @ - (at most 64), "
            "got {value}", {"value": repr(value)},
        )
    return value


def address_problem(value: str) -> str | None:
    """Why `value` is not a host name, an IPv4 or an IPv6 literal, or None."""
    if not value:
        return "it is empty"
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
        if ":" not in value:
            return "brackets are only for IPv6 literals"
    if ":" in value:
        address, _, scope = value.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return "not a valid IPv6 literal"
        if "%" in value and not re.fullmatch(r"[A-Za-z0-9_.-]+", scope):
            return "not a valid IPv6 zone"
        return None
    if len(value) > 253:
        return "longer than 253 characters"
    labels = value.removesuffix(".").split(".")
    if not all(HOST_LABEL_RE.fullmatch(label) for label in labels):
        return "a host name is labels of letters, digits, - and _ separated by dots"
    if labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return "not a valid IPv4 address"
    return None


def _address(value: str) -> str:
    _text(value)
    problem = address_problem(value)
    if problem:
        raise PydanticCustomError(
            "address", "expected a host name, an IPv4 or an IPv6 address ({problem}), "
            "got {value}", {"problem": problem, "value": repr(value)},
        )
    return value


def _jump_host(value: str) -> str:
    _text(value)
    user, _, rest = value.rpartition("@")
    host, port = rest, ""
    if rest.startswith("["):
        host, _, port = rest.partition("]")
        host, port = host + "]", port.removeprefix(":")
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    if (user and not USER_RE.fullmatch(user)) or address_problem(host) or (
            port and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise PydanticCustomError(
            "jump_host", "expected [USER@]HOST[:PORT] with HOST a host name or an address, "
            "got {value}", {"value": repr(value)},
        )
    return value


def _url(value: str) -> str:
    _text(value)
    if not URL_RE.fullmatch(value):
        raise PydanticCustomError(
            "url", "expected an http:// or https:// URL (no spaces, quotes, user:password@ "
            "or fragment), got {value}", {"value": repr(value)},
        )
    return value.rstrip("/")


def _api_url(value: str) -> str:
    value = _url(value)
    if "?" in value:
        raise PydanticCustomError("url", "expected the API's base URL without a query, got "
                                  "{value}", {"value": repr(value)})
    if value.lower().endswith("/api/v2"):
        raise PydanticCustomError(
            "api_url", "give the API's base URL without /api/v2 (tsops adds it), e.g. "
            "{suggested}", {"suggested": value[: -len("/api/v2")]},
        )
    return value


def duration_seconds(value: str) -> float | None:
    """Seconds in a Go duration like "12h" or "1h30m" (Go's time.ParseDuration), or None."""
    if value == "0":
        return 0.0
    if not DURATION_RE.fullmatch(value):
        return None
    return sum(float(number) * DURATION_UNITS[unit]
               for number, unit in DURATION_PART_RE.findall(value))


def _check_period(value: str) -> str:
    """A check period as the control plane accepts it: `always`, or 1m to 168h."""
    if value == "always":
        return value
    seconds = duration_seconds(value)
    if seconds is None:
        raise PydanticCustomError(
            "check_period", 'expected a duration like "12h", "30m" or "1h30m", or "always", '
            "got {value}", {"value": repr(value)},
        )
    if not CHECK_PERIOD_MIN <= seconds <= CHECK_PERIOD_MAX:
        raise PydanticCustomError(
            "check_period", "a check period is between 1m and 168h (one week), got {value}",
            {"value": repr(value)},
        )
    return value


def _destination(value: str) -> str:
    _text(value)
    if value.startswith("s3://"):
        bucket, _, prefix = value.removeprefix("s3://").partition("/")
        problem = bucket_name_problem(bucket)
        if problem:
            raise PydanticCustomError(
                "destination", "invalid bucket name {bucket}: {problem}",
                {"bucket": repr(bucket), "problem": problem},
            )
        if prefix.strip("/"):
            raise PydanticCustomError(
                "destination",
                "tsrecorder has no key prefix option: it writes to the bucket's top level, so "
                "{prefix} cannot be honoured; give s3://{bucket} (a bucket for recordings only)",
                {"prefix": repr(prefix), "bucket": bucket},
            )
        return value
    if not value.startswith("/"):
        raise PydanticCustomError(
            "destination",
            "expected s3://BUCKET[/PREFIX] or an absolute local path, got {value}",
            {"value": repr(value)},
        )
    return _absolute(value)


BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
KMS_KEY_RE = re.compile(
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]+)"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|alias/[A-Za-z0-9/_-]+)$"
)
PRINCIPAL_RE = re.compile(
    r"^arn:aws[a-z-]*:iam::[0-9]{12}:(root|(user|role)/[A-Za-z0-9+=,.@_/-]+)$"
)
IMAGE_RE = re.compile(r"^[a-z0-9./_-]+:(?!latest$)[A-Za-z0-9._-]+(@sha256:[0-9a-f]{64})?$")


def bucket_name_problem(bucket: str) -> str | None:
    """Why `bucket` is not a valid S3 bucket name (AWS naming rules), or None."""
    if not BUCKET_RE.fullmatch(bucket):
        return "3-63 lowercase letters, digits, dots and hyphens, starting and ending alphanumeric"
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return "no two adjacent dots, and no dot next to a hyphen"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        return "must not look like an IP address"
    if bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3")):
        return "uses a prefix or suffix AWS reserves"
    return None


def _region(value: str) -> str:
    if not REGION_RE.fullmatch(value) and value != "auto":
        raise PydanticCustomError(
            "region", 'expected a region like "eu-central-1", got {value}', {"value": repr(value)}
        )
    return value


def _aws_profile(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+@-]{0,63}", value):
        raise PydanticCustomError(
            "aws_profile", "expected an AWS profile name (letters, digits, and _.+@-), got "
            "{value}", {"value": repr(value)})
    return value


def _kms_key(value: str) -> str:
    if not KMS_KEY_RE.fullmatch(value):
        raise PydanticCustomError(
            "kms_key",
            "expected a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/UUID or .../alias/NAME), "
            "a key id (UUID) or alias/NAME, got {value}",
            {"value": repr(value)},
        )
    return value


def _principal(value: str) -> str:
    if not PRINCIPAL_RE.fullmatch(value):
        raise PydanticCustomError(
            "principal",
            "expected an IAM principal ARN like arn:aws:iam::123456789012:role/NAME, got {value}",
            {"value": repr(value)},
        )
    return value


def _absolute(value: str) -> str:
    _text(value)
    if not value.startswith("/"):
        raise PydanticCustomError(
            "absolute_path", "expected an absolute path on the host, got {value}",
            {"value": repr(value)},
        )
    if not HOST_PATH_RE.fullmatch(value):
        raise PydanticCustomError(
            "host_path", "a path on the host may only hold letters, digits and . _ - + @ = : , / "
            "(no spaces, quotes, $ or %), got {value}", {"value": repr(value)},
        )
    return value


def _image(value: str) -> str:
    if not IMAGE_RE.fullmatch(value):
        raise PydanticCustomError(
            "image", 'expected an image with a pinned tag like "tailscale/tsrecorder:v1.80.0" '
            "(not latest), got {value}", {"value": repr(value)},
        )
    return value


Tag = Annotated[str, AfterValidator(_tag)]
HostName = Annotated[str, AfterValidator(_hostname)]
Port = Annotated[int, Field(ge=1, le=65535)]
Text = Annotated[str, AfterValidator(_text)]
Word = Annotated[str, AfterValidator(_word)]
Url = Annotated[str, AfterValidator(_url)]
HostPath = Annotated[str, AfterValidator(_absolute)]


class Model(BaseModel):
    """Base of every inventory object: immutable, strict types, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class SecretRef(Model):
    """Where a secret is kept: an environment variable, a keyring entry, or both (env wins)."""

    env: str | None = None
    keyring: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise PydanticCustomError(
                "inline_secret",
                "a secret must not be written in the inventory; name where it is kept, "
                "e.g. {env: TS_API_KEY} or {keyring: tsops/api-token}",
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if self.env is None and self.keyring is None:
            raise PydanticCustomError("secret_source", "give `env`, `keyring` or both")
        if self.env is not None and not ENV_VAR_RE.fullmatch(self.env):
            raise PydanticCustomError(
                "env_name", "`env` must be an environment variable name, got {value}",
                {"value": repr(self.env)},
            )
        return self


class OAuthClient(Model):
    """An OAuth client of the tailnet; its secret is a reference, never inline."""

    client_id: Word
    client_secret: SecretRef


class Credentials(Model):
    """How tsops authenticates to the Tailscale API: one API token or one OAuth client."""

    api_token: SecretRef | None = None
    oauth: OAuthClient | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        if (self.api_token is None) == (self.oauth is None):
            raise PydanticCustomError("credentials", "give exactly one of `api_token` or `oauth`")
        return self


class Tailnet(Model):
    """The tailnet tsops manages."""

    name: Annotated[str, AfterValidator(_tailnet)] = "-"
    api_url: Annotated[str, AfterValidator(_api_url)] = "https://api.tailscale.com"
    allow_plain_http: bool = False
    login_server: Url | None = None
    credentials: Credentials


Via = Literal["openssh", "tailnet", "tailnet-once-enrolled"]


def _tailnet_identity(value: str) -> str:
    """A user login (ops@example.com) or a tag (tag:tsops): who the control machine is."""
    _word(value)
    if value.startswith("tag:"):
        return _tag(value)
    local, at, domain = value.partition("@")
    if not (local and at and domain and "@" not in domain and USER_RE.fullmatch(value)):
        raise PydanticCustomError(
            "tailnet_identity", 'expected the control machine\'s tailnet identity: a user '
            'login like "ops@example.com" or a tag like "tag:tsops", got {value}',
            {"value": repr(value)})
    return value


class Connection(Model):
    """How tsops reaches hosts over SSH; each field can be overridden per group or host."""

    user: Annotated[str, AfterValidator(_user)] | None = None
    port: Port | None = None
    identity_file: Text | None = None
    sudo: bool | None = None
    jump_host: Annotated[str, AfterValidator(_jump_host)] | None = None
    via: Via | None = None


class Defaults(Connection):
    """SSH defaults for every host, plus the ssh_config file to read them from."""

    ssh_config: Text | None = None
    # Seconds tsops waits for each of an SSH hop's TCP connection, banner, key exchange and
    # authentication (`tsops --ssh-timeout` overrides it for one run).
    ssh_timeout: Annotated[int, Field(ge=1, le=600)] = 10
    tailnet_identity: Annotated[str, AfterValidator(_tailnet_identity)] | None = None


class Tarball(Model):
    """A static Tailscale tarball, by URL or local file, with the digest it must have."""

    url: Url | None = None
    path: Text | None = None
    sha256: Annotated[str, AfterValidator(_sha256)]

    @model_validator(mode="after")
    def _one_location(self) -> Tarball:
        if (self.url is None) == (self.path is None):
            raise PydanticCustomError("tarball", "give exactly one of `url` or `path`")
        return self


class Install(Model):
    """How Tailscale gets onto hosts."""

    method: Literal["apt", "rhel", "tarball", "preinstalled"] = "apt"
    repository: Url = "https://pkgs.tailscale.com/stable"
    version: Annotated[str, AfterValidator(_version)] | None = None
    tarball: Tarball | None = None

    @model_validator(mode="after")
    def _tarball_given(self) -> Install:
        if self.method == "tarball" and self.tarball is None:
            raise PydanticCustomError("tarball", "method `tarball` needs a `tarball` section")
        if self.method != "tarball" and self.tarball is not None:
            raise PydanticCustomError(
                "tarball", "a `tarball` section is only used with method `tarball`"
            )
        return self


class Tailscale(Model):
    """Tailscale on the hosts."""

    install: Install = Install()


def split_listen_address(value: str) -> tuple[str, str] | None:
    """(address, port or "") of `ADDR`, `IPV4:PORT` or `[IPV6]:PORT`; None when malformed."""
    if value.startswith("["):
        inner, sep, rest = value[1:].partition("]")
        if not sep or ":" not in inner or not rest.startswith(":"):
            return None
        return inner, rest[1:] or "-"
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port or "-"
    return value, ""


def listen_problem(value: str) -> bool:
    """Whether `value` is not a literal address with an optional port from 1 to 65535."""
    parts = split_listen_address(value)
    if parts is None:
        return True
    host, port = parts
    if "%" in host:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return bool(port) and not (port.isdigit() and 1 <= int(port) <= 65535)


def _listen_address(value: str) -> str:
    """An sshd ListenAddress: an IPv4 or IPv6 literal, optionally with a port."""
    _text(value)
    if listen_problem(value):
        raise PydanticCustomError(
            "listen_address", "expected an IP address sshd listens on: an IPv4 or IPv6 literal, "
            "optionally with a port (10.0.0.5, 10.0.0.5:2222, ::1, [::1]:2222); no host names, "
            "got {value}", {"value": repr(value)},
        )
    return value


def _revert_after(value: str) -> str:
    seconds = duration_seconds(value)
    if seconds is None or not REVERT_MIN <= seconds <= REVERT_MAX:
        raise PydanticCustomError(
            "revert_after", 'expected a duration from 10s to 1h like "2m" or "90s", got {value}',
            {"value": repr(value)},
        )
    return value


class OpenSSH(Model):
    """Whether OpenSSH stays reachable on a server: see docs/openssh.md."""

    mode: Literal["keep", "restrict", "off"] = "keep"
    listen: tuple[Annotated[str, AfterValidator(_listen_address)], ...] = ()
    revert_after: Annotated[str, AfterValidator(_revert_after)] = "2m"

    @property
    def revert_seconds(self) -> float:
        """The dead-man window in seconds."""
        seconds = duration_seconds(self.revert_after)
        assert seconds is not None
        return seconds


class Host(Connection):
    """One machine: where it is, how to reach it, its extra tags."""

    address: Annotated[str, AfterValidator(_address)] | None = None
    tags: tuple[Tag, ...] = ()
    openssh: OpenSSH | None = None


class Group(Connection):
    """Hosts that share tags and connection settings."""

    tags: tuple[Tag, ...] = ()
    hosts: dict[HostName, Host | None] = Field(min_length=1)
    openssh: OpenSSH | None = None


class Servers(Connection):
    """The servers whose SSH sessions are recorded."""

    tags: tuple[Tag, ...] = ("tag:server",)
    hosts: dict[HostName, Host | None] = {}
    groups: dict[HostName, Group] = {}
    openssh: OpenSSH | None = None


class Recorders(Connection):
    """The hosts that run tsrecorder; each joins the tailnet with `tag`."""

    tag: Tag = "tag:recorder"
    runtime: Literal["binary", "container"] = "binary"
    hosts: dict[HostName, Host | None] = Field(min_length=1)
    binary: Text | None = None
    binary_path: HostPath = "/usr/local/bin/tsrecorder"
    image: Annotated[str, AfterValidator(_image)] = "tailscale/tsrecorder:v1.80.0"
    container_engine: Literal["docker", "podman"] = "docker"
    service_user: Annotated[str, AfterValidator(_hostname)] = "tsrecorder"
    statedir: HostPath = "/var/lib/tsrecorder"
    ui: bool = False
    openssh: OpenSSH | None = None


# One year: long enough to cover the usual audit cycle (an annual audit looks back over the
# year before it), short enough that a governance-locked bucket does not grow for ever by
# default. Compliance regimes that need longer (PCI DSS, SOX, HIPAA) say so in the inventory.
DEFAULT_RETENTION_DAYS = 365


class ObjectLock(Model):
    """S3 Object Lock: the default retention mode and days for new recordings.

    On by default (governance, DEFAULT_RETENTION_DAYS): without it anyone holding the
    recorder's keys can overwrite a recording and the original is expired by the lifecycle
    rule. `off` must be written explicitly, and plan and status then warn.
    """

    mode: Literal["compliance", "governance", "off"] = "governance"
    retention_days: Annotated[int, Field(ge=1, le=36500)] | None = None

    @property
    def days(self) -> int | None:
        """The default retention in days (the written value, else the default); None when off."""
        if self.mode == "off":
            return None
        return self.retention_days or DEFAULT_RETENTION_DAYS


class S3Credentials(Model):
    """The recorder's own S3 access key (secret references); without it, the host's role."""

    access_key_id: SecretRef
    secret_access_key: SecretRef


class Storage(Model):
    """Where recordings land."""

    destination: Annotated[str, AfterValidator(_destination)]
    region: Annotated[str, AfterValidator(_region)] | None = None
    endpoint: Url | None = None
    allow_plain_http: bool = False
    send_content_md5: bool = False
    object_lock: ObjectLock = ObjectLock()
    encryption: Literal["sse-s3", "sse-kms"] = "sse-s3"
    kms_key: Annotated[str, AfterValidator(_kms_key)] | None = None
    noncurrent_days: Annotated[int, Field(ge=1, le=36500)] | None = None
    recorder_principal: Annotated[str, AfterValidator(_principal)] | None = None
    break_glass_principal: Annotated[str, AfterValidator(_principal)] | None = None
    credentials: S3Credentials | None = None
    min_free_gb: Annotated[int, Field(ge=0)] = 10
    # The AWS profile tsops itself reads and provisions the bucket with (not the recorders').
    profile: Annotated[str, AfterValidator(_aws_profile)] | None = None

    @property
    def is_s3(self) -> bool:
        """Whether recordings go to an S3 bucket (else a local directory on the recorder)."""
        return self.destination.startswith("s3://")

    @property
    def bucket(self) -> str:
        """The bucket of an S3 destination."""
        return self.destination.removeprefix("s3://").partition("/")[0]

    @property
    def noncurrent_expiry_days(self) -> int:
        """After how many days noncurrent versions expire: as written, else the retention.

        Never shorter than the retention (the loader refuses that): a rewritten recording's
        original must outlive the lock, or the evidence of the rewrite expires with it. With
        Object Lock off the default is still DEFAULT_RETENTION_DAYS, for the same reason.
        """
        if self.noncurrent_days is not None:
            return self.noncurrent_days
        return self.object_lock.days or DEFAULT_RETENTION_DAYS


def _one_recorder(value: Any) -> Any:
    """Accept `tag:x` or `[tag:x]`: a policy ssh rule records to exactly one recorder tag."""
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise PydanticCustomError(
                "one_recorder", "a rule sends its sessions to exactly one recorder tag, "
                "got {count}", {"count": len(value)})
        return value[0]
    return value


class SshRule(Model):
    """One `ssh` rule of the tailnet policy that tsops manages."""

    name: HostName
    action: Literal["accept", "check"] = "accept"
    src: tuple[Word, ...] = Field(min_length=1)
    dst: tuple[Tag, ...] = Field(min_length=1)
    users: tuple[Word, ...] = Field(min_length=1)
    check_period: Annotated[str, AfterValidator(_check_period)] | None = None
    enforce_recorder: bool = True
    recorder: Annotated[str, BeforeValidator(_one_recorder), AfterValidator(_tag)] | None = None

    def admits(self, local_user: str) -> bool:
        """Whether `users` lets a session log in as `local_user` (by name, or as a non-root)."""
        return local_user in self.users or (
            local_user != "root" and "autogroup:nonroot" in self.users)


LOCAL_ACCOUNT_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _canary_account(value: str) -> str:
    _text(value)
    if not LOCAL_ACCOUNT_RE.fullmatch(value):
        raise PydanticCustomError(
            "canary_user", "expected a local account name (lower-case letters, digits, _ and -, "
            "starting with a letter or _, at most 32), got {value}", {"value": repr(value)})
    if value == "root":
        raise PydanticCustomError(
            "canary_user", "the canary account must not be root: a verifier identity needs no "
            "more than a login that can run `echo`")
    return value


class Canary(Model):
    """The account that canary sessions (verify, add-server's proof) log in as."""

    user: Annotated[str, AfterValidator(_canary_account)]


class Policy(Model):
    """Where the tailnet policy file lives that tsops patches (see docs/policy.md)."""

    source: Literal["api", "file"] = "api"
    file: Text | None = None
    state_dir: Text | None = None
    tag_owners: tuple[Word, ...] = ()
    # Where tsops's ssh rules go: after the operator's (`last`), or before them (`first`), so
    # that an earlier hand-written rule cannot take the sessions they record.
    managed_rules: Literal["first", "last"] = "last"

    @model_validator(mode="after")
    def _file_given(self) -> Policy:
        if self.source == "file" and self.file is None:
            raise PydanticCustomError("policy_file", "source `file` needs `file`: the path of "
                                      "the policy file in your repository")
        return self


class Timeouts(Model):
    """How long tsops waits on an outside system before it gives up, in seconds."""

    s3: Annotated[float, Field(gt=0, le=600)] | None = None  # per attempt (tsops.s3)
    # Each read of a Tailscale API answer (connecting: at most 5 s of it); tailscale_api.py's
    # DEFAULT_TIMEOUT_S is the same default. A hung API then fails within 20 s.
    api: Annotated[float, Field(gt=0, le=600)] = 15.0


LOG_DESTINATIONS = ("splunk", "elastic", "panther", "cribl", "datadog", "axiom", "s3")


class LogStream(Model):
    """Where Tailscale streams one log type (docs/audit.md): a SIEM's URL and token, or an S3
    bucket; every secret by reference, never inline."""

    destination: Literal["splunk", "elastic", "panther", "cribl", "datadog", "axiom", "s3"]
    url: Url | None = None
    user: Text | None = None
    token: SecretRef | None = None
    compression: Literal["none", "zstd", "gzip"] = "none"
    upload_period_minutes: Annotated[int, Field(ge=0, le=1440)] = 0
    s3_bucket: Text | None = None
    s3_region: Annotated[str, AfterValidator(_region)] | None = None
    s3_key_prefix: Text | None = None
    s3_authentication: Literal["accesskey", "rolearn"] | None = None
    s3_access_key_id: SecretRef | None = None
    s3_secret_access_key: SecretRef | None = None
    s3_role_arn: Text | None = None
    s3_external_id: Text | None = None

    @model_validator(mode="after")
    def _fields_of_destination(self) -> LogStream:
        s3 = {"s3_bucket": self.s3_bucket, "s3_region": self.s3_region,
              "s3_key_prefix": self.s3_key_prefix, "s3_authentication": self.s3_authentication,
              "s3_access_key_id": self.s3_access_key_id,
              "s3_secret_access_key": self.s3_secret_access_key,
              "s3_role_arn": self.s3_role_arn, "s3_external_id": self.s3_external_id}
        if self.destination != "s3":
            missing = [n for n, v in (("url", self.url), ("token", self.token)) if v is None]
            if missing:
                raise PydanticCustomError(
                    "log_stream", "destination {kind} needs {missing}",
                    {"kind": self.destination, "missing": " and ".join(missing)})
            extra = [n for n, v in s3.items() if v is not None]
            if extra:
                raise PydanticCustomError(
                    "log_stream", "{extra}: only for destination s3",
                    {"extra": ", ".join(extra)})
            return self
        if self.url is not None or self.token is not None or self.user is not None:
            raise PydanticCustomError("log_stream", "url, user and token are not used by "
                                      "destination s3 (give s3_bucket, s3_region...)")
        need = ["s3_bucket", "s3_region", "s3_authentication"]
        if self.s3_authentication == "accesskey":
            need += ["s3_access_key_id", "s3_secret_access_key"]
        elif self.s3_authentication == "rolearn":
            need += ["s3_role_arn", "s3_external_id"]
        missing = [n for n in need if s3[n] is None]
        if missing:
            raise PydanticCustomError("log_stream", "destination s3 needs {missing}",
                                      {"missing": ", ".join(missing)})
        return self


class LogStreaming(Model):
    """Log streaming per log type: configuration audit logs and network flow logs."""

    configuration: LogStream | None = None
    network: LogStream | None = None


class Inventory(Model):
    """A whole inventory file."""

    version: Literal[1]
    tailnet: Tailnet
    connection: Defaults = Defaults()
    tailscale: Tailscale = Tailscale()
    servers: Servers = Servers()
    recorders: Recorders | None = None
    storage: Storage | None = None
    ssh_rules: tuple[SshRule, ...] = ()
    canary: Canary | None = None
    policy: Policy = Policy()
    timeouts: Timeouts = Timeouts()
    log_streaming: LogStreaming | None = None
