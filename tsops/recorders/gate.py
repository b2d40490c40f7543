"""The health gate's canary: written through the recorder's own credentials and network path.

Every flow that may write `enforceRecorder: true` (bootstrap, `policy apply`, `add-server`,
`rotate-storage`) asks this module whether a recorder can write where its sessions go:

- **static keys** (`storage.credentials`): the canary is put with those keys, the very keys
  the recorder's environment file carries;
- **no static keys** (an instance role): the canary is put *from the recorder host*, over the
  SSH session tsops already has, with the credentials the host's instance metadata gives
  (IMDSv2), signed by `curl --aws-sigv4` (curl 7.75 or later; Debian 12 ships 7.88). For the
  container runtime the request runs inside the container's network namespace (`nsenter -n`),
  so an IMDS hop limit that keeps the container from its role shows as a failure;
- **a local directory**: written as the recorder's user on the host (tsops.recorders.host).

Where none of these can be done the recorder is *not verified* (`GateResult.verified` False,
`GateResult.failed` False) with the reason; the policy step withholds `enforceRecorder` for
it unless `--allow-unverified-recorder`. "Online" alone is never healthy.

Secrets never reach argv: on the host, curl reads its credentials from standard input (`-K -`).
The canary is read back with the operator's credentials.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from shlex import quote
from typing import TYPE_CHECKING, Literal

from tsops import s3
from tsops.inventory.model import Storage
from tsops.recorders.render import WRITE_CHECK_PREFIX
from tsops.remote import RemoteLike

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client

Verdict = Literal["verified", "failed", "not verified"]
HOW_STATIC = "with the recorder's static keys (storage.credentials)"
HOW_HOST = "from the recorder host, with its instance-role credentials"
HOW_HOST_CONTAINER = ("from the recorder host inside the container's network namespace, with "
                      "its instance-role credentials")
HOW_EARLIER = "canary present from an earlier verified write (nothing changed since)"
METADATA = "http://169.254.169.254/latest"
CONTAINER_NAME = "tsrecorder"


@dataclass(frozen=True)
class GateResult:
    """Whether a recorder proved it can write its destination, how, and what was seen."""

    verdict: Verdict
    how: str
    detail: str

    @property
    def verified(self) -> bool:
        """The canary went through the recorder's own credentials and was read back."""
        return self.verdict == "verified"

    @property
    def line(self) -> str:
        """One line for plans, reports and errors."""
        if self.verified:
            return f"{self.detail} ({self.how})"
        return f"{self.verdict}: {self.detail}"


def canary_key(name: str) -> str:
    """The canary object of one recorder host."""
    return f"{WRITE_CHECK_PREFIX}{name}"


def canary_body(name: str, now: float | None = None) -> bytes:
    """What a canary holds (no secret)."""
    return f"tsops canary {name} {time.time() if now is None else now:.0f}\n".encode()


def object_url(storage: Storage, key: str) -> str:
    """The path-style URL of an object (the inventory's endpoint, else AWS's regional one)."""
    region = storage.region or "us-east-1"
    base = str(storage.endpoint).rstrip("/") if storage.endpoint else (
        f"https://s3.{region}.amazonaws.com")
    return f"{base}/{storage.bucket}/{key}"


def host_canary_script(storage: Storage, runtime: str, engine: str, key: str,
                       body: bytes, metadata: str = METADATA) -> str:
    """The script that puts the canary from the recorder host with instance-role credentials.

    It prints `gate=<written|refused|unreachable|unverifiable>` and `detail=<one line>`; it
    never prints or passes on argv a credential (curl reads them from standard input).
    `metadata` is the instance metadata service's base URL (IMDSv2).
    """
    region = storage.region or "us-east-1"
    md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
    sha = hashlib.sha256(body).hexdigest()
    lines = [
        "set -u",
        'out() { printf "gate=%s\\n" "$1"; shift; printf "detail=%s\\n" "$*"; exit 0; }',
        "command -v curl >/dev/null 2>&1 || out unverifiable 'curl is not installed on the "
        "recorder host (the canary is written from there with curl 7.75 or later)'",
        "curl --help all 2>/dev/null | grep -q -- --aws-sigv4 || out unverifiable 'curl on "
        "the recorder host has no --aws-sigv4 (7.75 or later is needed)'",
        'IN=""',
    ]
    if runtime == "container":
        lines += [
            "command -v nsenter >/dev/null 2>&1 || out unverifiable 'nsenter is not installed "
            "on the recorder host (needed to reach S3 as the container does)'",
            f"pid=$({quote(engine)} inspect -f '{{{{.State.Pid}}}}' {CONTAINER_NAME} "
            "2>/dev/null || true)",
            'case "$pid" in ""|0) out unverifiable "the tsrecorder container is not running";; '
            "esac",
            'IN="nsenter -t $pid -n"',
        ]
    lines += [
        # IMDSv2: a session token first (its value goes to curl on stdin, never on argv).
        f"tok=$($IN curl -sf -m 3 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "
        f"{metadata}/api/token 2>/dev/null) || out unverifiable 'no instance metadata service "
        "answered at 169.254.169.254 from the recorder (no instance role, or an IMDS hop limit "
        "too low for a container): give the recorder static keys in storage.credentials'",
        'md() { printf \'header = "X-aws-ec2-metadata-token: %s"\\n\' "$tok" | '
        f'$IN curl -sf -m 3 -K - "{metadata}/meta-data/iam/security-credentials/$1" '
        "2>/dev/null; }",
        "role=$(md '' | head -n 1)",
        '[ -n "$role" ] || out unverifiable "the instance metadata lists no IAM role for this '
        'host"',
        'json=$(md "$role") || out unverifiable "the instance metadata gave no credentials for '
        'role $role"',
        "field() { printf '%s\\n' \"$json\" | sed -n "
        "\"s/.*\\\"$1\\\"[[:space:]]*:[[:space:]]*\\\"\\([^\\\"]*\\)\\\".*/\\1/p\" | head -n 1; }",
        "ak=$(field AccessKeyId); sk=$(field SecretAccessKey); st=$(field Token)",
        '[ -n "$ak" ] && [ -n "$sk" ] || out unverifiable "the instance metadata gave no '
        'credentials for role $role"',
        "resp=$( { printf 'user = \"%s:%s\"\\n' \"$ak\" \"$sk\"; "
        "[ -z \"$st\" ] || printf 'header = \"x-amz-security-token: %s\"\\n' \"$st\"; } | "
        f"$IN curl -sS -m 30 -K - --aws-sigv4 {quote(f'aws:amz:{region}:s3')} -X PUT "
        "-H 'Content-Type: application/octet-stream' "
        f"-H {quote(f'Content-MD5: {md5}')} -H {quote(f'x-amz-content-sha256: {sha}')} "
        f"--data-binary {quote(body.decode())} -w '\\nstatus=%{{http_code}}\\n' "
        f"{quote(object_url(storage, key))} 2>&1)",
        'status=$(printf "%s\\n" "$resp" | sed -n "s/^status=//p" | tail -n 1)',
        'code=$(printf "%s" "$resp" | tr -d "\\n" | sed -n "s/.*<Code>\\([^<]*\\)<\\/Code>.*/'
        '\\1/p")',
        'case "$status" in',
        '  2??) out written "HTTP $status";;',
        '  ""|000) out unreachable "$(printf "%s\\n" "$resp" | grep -m 1 "curl:" | cut -c1-200)"'
        ";;",
        '  *) out refused "HTTP $status ${code:-no error code}";;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def parse_host_canary(output: str) -> tuple[str, str]:
    """The (gate, detail) a host canary script printed (pure); ('', output) if unreadable."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("gate", "detail") and key not in values:
            values[key] = value.strip()
    if "gate" not in values:
        return "", output.strip()[-200:]
    return values["gate"], values.get("detail", "")


def host_verdict(gate: str, detail: str, how: str, bucket: str) -> GateResult | None:
    """The result of a host canary that was not written (None: it was, read it back)."""
    if gate == "written":
        return None
    if gate == "refused":
        return GateResult("failed", how, f"bucket {bucket} is not writable as the recorder "
                                         f"writes (from its host): {detail}")
    if gate == "unreachable":
        return GateResult("failed", how, f"the recorder host cannot reach S3: "
                                         f"{detail or 'no answer'}")
    if gate == "unverifiable":
        return GateResult("not verified", how, detail)
    return GateResult("not verified", how, f"the canary script printed no result: "
                                          f"{detail or 'no output'}")


@dataclass
class Gate:
    """The canary check of one storage, with the run's S3 clients and connections.

    `s3_factory(storage, keys)` is the run's S3 client maker (None keys: the operator's own);
    `keys` the recorder's static keys, resolved (None: an instance role or nothing).
    """

    storage: Storage
    runtime: str
    engine: str
    s3_factory: Callable[[Storage, tuple[str, str] | None], S3Client]
    keys: tuple[str, str] | None
    on_write: Callable[[str], None] | None = None

    @property
    def how(self) -> str:
        """How this storage's recorders are checked."""
        if self.keys is not None:
            return HOW_STATIC
        return HOW_HOST_CONTAINER if self.runtime == "container" else HOW_HOST

    def check(self, name: str, remote: RemoteLike | None, write: bool = True) -> GateResult:
        """Put recorder `name`'s canary through its own credentials and read it back.

        With `write` False an existing canary counts (nothing changed since it was written);
        a missing one is written. `remote` is the connection to the recorder host (needed
        without static keys).
        """
        storage, key = self.storage, canary_key(name)
        reader = self.s3_factory(storage, None)
        if not write:
            try:
                reader.head_object(Bucket=storage.bucket, Key=key)
                return GateResult("verified", HOW_EARLIER,
                                  f"canary s3://{storage.bucket}/{key} present")
            except s3.errors() as error:
                if s3.error_code(error) not in s3.NOT_FOUND:
                    return self._s3_failure(error, "read the canary back")
        body = canary_body(name)
        if self.keys is not None:
            failed = self._put_with_keys(key, body)
        elif remote is None:
            return GateResult("not verified", self.how, "no connection to the recorder host "
                                                        "to write the canary from")
        else:
            failed = self._put_from_host(remote, key, body)
        if failed is not None:
            return failed
        try:
            back = reader.get_object(Bucket=storage.bucket, Key=key)["Body"].read()
        except s3.errors() as error:
            return self._s3_failure(error, "read the canary back")
        if back != body:
            return GateResult("failed", self.how, "the canary read back differs from what the "
                                                  "recorder wrote")
        return GateResult("verified", self.how,
                          f"canary s3://{storage.bucket}/{key} written and read back")

    def _note(self, what: str) -> None:
        if self.on_write is not None:
            self.on_write(what)

    def _put_with_keys(self, key: str, body: bytes) -> GateResult | None:
        storage = self.storage
        writer = self.s3_factory(storage, self.keys)
        self._note("put_object (canary)")
        try:
            writer.put_object(Bucket=storage.bucket, Key=key, Body=body)
        except s3.errors() as error:
            code = s3.error_code(error)
            if not code:
                return GateResult("failed", self.how, f"cannot reach S3 ({error})")
            return GateResult("failed", self.how, f"bucket {storage.bucket} is not writable "
                                                  f"as the recorder writes (its keys): {code}")
        return None

    def _put_from_host(self, remote: RemoteLike, key: str, body: bytes) -> GateResult | None:
        self._note("put_object (canary, from the recorder host)")
        script = host_canary_script(self.storage, self.runtime, self.engine, key, body)
        run = remote.run(script)
        gate, detail = parse_host_canary(run.stdout)
        if not gate and run.stderr.strip():
            detail = run.stderr.strip()[-200:]
        return host_verdict(gate, detail, self.how, self.storage.bucket)

    def _s3_failure(self, error: Exception, what: str) -> GateResult:
        code = s3.error_code(error)
        if not code:
            return GateResult("failed", self.how, f"cannot reach S3 to {what} ({error})")
        return GateResult("failed", self.how, f"cannot {what} with the operator's "
                                              f"credentials: {code}")
