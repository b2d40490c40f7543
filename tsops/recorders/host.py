"""A recorder host: its one-round-trip probe, the pure plan, and the scripts that apply it.

The probe reports digests of the unit, the environment file and the binary, the service user,
the statedir's owner, whether the recorder has state (joined before), and the unit's status.
Planning compares digests with the rendered files, so an unchanged host is never rewritten.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from shlex import quote
from typing import Literal

from tsops.inventory.load import LoadedInventory, Target
from tsops.probe import Probe, ProbeError
from tsops.recorders.render import (
    AUTHKEY_FILE,
    CONFIG_DIR,
    CONTAINER_UID,
    ENV_FILE,
    UNIT_NAME,
    UNIT_PATH,
    RecorderSpec,
    RenderError,
    render_unit,
)

STRICT = "set -eu\n"
HostStepKind = Literal["binary", "user", "statedir", "destination", "env", "unit", "authkey",
                       "start"]


class RecorderProbeError(ProbeError):
    """The probe's output could not be read."""


@dataclass(frozen=True)
class RecorderFacts:
    """What the probe found on a recorder host."""

    unit_sha256: str | None
    env_sha256: str | None
    env_mode: str | None
    binary_sha256: str | None
    user_uid: int | None
    statedir_owner: str | None
    has_state: bool
    active: str
    enabled: str
    engine: bool
    destination_owner: str | None = None
    free_kb: int | None = None


@dataclass(frozen=True)
class HostStep:
    """One change on a recorder host."""

    kind: HostStepKind
    summary: str


@dataclass
class RecorderHostPlan:
    """The steps for one recorder host, or the problem that prevents planning it."""

    target: Target
    spec: RecorderSpec
    facts: RecorderFacts | None = None
    steps: tuple[HostStep, ...] = ()
    problem: str | None = None
    warnings: tuple[str, ...] = ()
    needs_key: bool = False
    unit: str = ""
    env: str = field(default="", repr=False)


def spec_for(inventory: LoadedInventory, target: Target) -> RecorderSpec:
    """What the inventory wants on one recorder host (RenderError naming the inventory file)."""
    model = inventory.model
    assert model.recorders is not None and model.storage is not None
    recorders = model.recorders
    spec = RecorderSpec(
        hostname=target.name, runtime=recorders.runtime, binary_path=recorders.binary_path,
        image=recorders.image, container_engine=recorders.container_engine,
        service_user=recorders.service_user, statedir=recorders.statedir, ui=recorders.ui,
        login_server=model.tailnet.login_server, storage=model.storage,
    )
    try:  # a value the unit cannot carry is bad input: say so before any host is touched
        render_unit(spec)
    except RenderError as error:
        raise RenderError(f"{inventory.path}: {error.field}", error.problem) from error
    return spec


def check_renderable(inventory: LoadedInventory) -> None:
    """Raise RenderError (exit 2) if a recorder's unit cannot be written safely; no host touched."""
    if inventory.model.recorders is None or inventory.model.storage is None:
        return
    for target in inventory.recorders:
        spec_for(inventory, target)


def sha256(text: str | bytes) -> str:
    """Hex sha256 of text (UTF-8) or bytes."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def probe(spec: RecorderSpec) -> str:
    """The read-only probe script (one round trip)."""
    statedir = quote(spec.statedir)
    lines = [
        "set -u",
        'h() { if [ -f "$1" ]; then sha256sum "$1" | cut -c1-64; else echo -; fi; }',
        f"echo unit=$(h {UNIT_PATH})",
        f"echo env=$(h {ENV_FILE})",
        f"echo env_mode=$(stat -c %a:%u {ENV_FILE} 2>/dev/null || echo -)",
        f"echo binary=$(h {quote(spec.binary_path)})",
        f"echo uid=$(id -u {quote(spec.service_user)} 2>/dev/null || echo -)",
        f"echo statedir=$(stat -c %u:%a {statedir} 2>/dev/null || echo -)",
        f"echo state=$(ls -A {statedir} 2>/dev/null{_not_destination(spec)} | head -n 1 | wc -l)",
        f"echo active=$(systemctl is-active {UNIT_NAME} 2>/dev/null || true)",
        f"echo enabled=$(systemctl is-enabled {UNIT_NAME} 2>/dev/null || true)",
        f"echo engine=$(command -v {quote(spec.container_engine)} >/dev/null 2>&1 && echo 1 "
        "|| echo 0)",
    ]
    if not spec.storage.is_s3:
        dst = quote(spec.storage.destination)
        lines += [
            f"echo dst=$(stat -c %u:%a {dst} 2>/dev/null || echo -)",
            f'd={dst}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done',
            "echo free_kb=$(df -Pk \"$d\" | awk 'NR==2 {print $4}')",
        ]
    return "\n".join(lines) + "\n"


def facts_probe(spec: RecorderSpec) -> Probe[RecorderFacts]:
    """What a recorder host has of what `spec` wants, in one round trip."""
    return Probe("the recorder probe", probe(spec), parse_probe)


def _not_destination(spec: RecorderSpec) -> str:
    """A filter that hides a local destination kept inside the statedir (it is not state)."""
    inside = spec.storage.destination.removeprefix(spec.statedir.rstrip("/") + "/")
    if spec.storage.is_s3 or inside == spec.storage.destination:
        return ""
    return f" | grep -vx {quote(inside.split('/')[0])}"


def parse_probe(output: str) -> RecorderFacts:
    """Read the probe's `key=value` lines (pure)."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    required = ("unit", "env", "env_mode", "binary", "uid", "statedir", "state", "active")
    missing = [k for k in required if k not in values]
    if missing:
        raise RecorderProbeError(f"the recorder probe printed no {', '.join(missing)}")

    def optional(key: str) -> str | None:
        value = values.get(key, "-")
        return None if value in ("-", "") else value

    uid = optional("uid")
    free = optional("free_kb")
    return RecorderFacts(
        unit_sha256=optional("unit"), env_sha256=optional("env"), env_mode=optional("env_mode"),
        binary_sha256=optional("binary"), user_uid=int(uid) if uid and uid.isdigit() else None,
        statedir_owner=optional("statedir"), has_state=values["state"] not in ("", "0"),
        active=values["active"], enabled=values.get("enabled", ""),
        engine=values.get("engine") == "1", destination_owner=optional("dst"),
        free_kb=int(free) if free and free.isdigit() else None,
    )


def plan_recorder_host(
    target: Target, spec: RecorderSpec, facts: RecorderFacts, unit: str, env: str,
    binary_sha256: str | None, registered: bool, min_free_gb: int,
) -> RecorderHostPlan:
    """Compare a recorder host with the rendered files (pure).

    `binary_sha256` is the digest of the executable tsops uploads (None: the operator installs
    it). `registered` says whether the API lists this recorder with its tag.
    """
    plan = RecorderHostPlan(target=target, spec=spec, facts=facts, unit=unit, env=env)
    steps: list[HostStep] = []
    warnings: list[str] = []
    if spec.runtime == "binary":
        if binary_sha256 is not None and facts.binary_sha256 != binary_sha256:
            steps.append(HostStep("binary", f"install tsrecorder at {spec.binary_path}"))
        elif binary_sha256 is None and facts.binary_sha256 is None:
            plan.problem = (f"no tsrecorder at {spec.binary_path}: install it there, or set "
                            "recorders.binary to a local file for tsops to upload")
            return plan
        if facts.user_uid is None:
            steps.append(HostStep("user", f"create the system user {spec.service_user}"))
    elif not facts.engine:
        plan.problem = f"{spec.container_engine} is not installed (runtime: container)"
        return plan
    owner_uid = CONTAINER_UID if spec.runtime == "container" else facts.user_uid
    wanted_owner = f"{owner_uid}:700" if owner_uid is not None else None
    if facts.statedir_owner is None or facts.statedir_owner != wanted_owner:
        steps.append(HostStep("statedir", f"statedir {spec.statedir} owned by {spec.owner}, "
                                          "mode 0700"))
    if not spec.storage.is_s3:
        if facts.destination_owner is None or facts.destination_owner != wanted_owner:
            steps.append(HostStep("destination", f"recordings directory "
                                  f"{spec.storage.destination} owned by {spec.owner}, mode 0700"))
        if facts.free_kb is not None and facts.free_kb < min_free_gb * 1024 * 1024:
            warnings.append(
                f"only {facts.free_kb // 1024} MiB free for {spec.storage.destination} "
                f"(threshold {min_free_gb} GiB): a full disk blocks every recorded session")
    if facts.env_sha256 != sha256(env) or facts.env_mode != "600:0":
        steps.append(HostStep("env", f"write {ENV_FILE} (root-only, mode 0600)"))
    if facts.unit_sha256 != sha256(unit):
        steps.append(HostStep("unit", f"write {UNIT_PATH}"))
    plan.needs_key = not facts.has_state or not registered
    if plan.needs_key:
        steps.append(HostStep("authkey", "mint a single-use auth key with the recorder tag "
                                         f"into {AUTHKEY_FILE} (removed after joining)"))
    if steps or facts.active != "active" or facts.enabled != "enabled":
        verb = "restart" if facts.active == "active" else "start"
        steps.append(HostStep("start", f"enable and {verb} {UNIT_NAME}"))
    plan.steps = tuple(steps)
    plan.warnings = tuple(warnings)
    return plan


# The names of the files tsops stages for a recorder host (tsops.remote.Stage): the privileged
# script finds them in "$stage".
STAGED_BINARY = "tsrecorder"
STAGED_ENV = "env"
STAGED_UNIT = "unit"
STAGED_AUTHKEY = "authkey.env"


def prepare_script(spec: RecorderSpec, kinds: set[HostStepKind],
                   uploaded: bool | None = None) -> str:
    """One script for the file-system steps that carry no secret; `uploaded`: the binary is
    staged as `$stage/tsrecorder` (see install_script)."""
    user = quote(spec.service_user)
    # Owner and group quoted each: a ':' inside a quoted name must not split it.
    name = str(CONTAINER_UID) if spec.runtime == "container" else spec.service_user
    owner, group = quote(name), quote(name)
    parts = [STRICT, "umask 077\n"]
    if "binary" in kinds and uploaded:
        parts.append(f"install -m 0755 -o root -g root \"$stage/{STAGED_BINARY}\" "
                     f"{quote(spec.binary_path)}\nrm -f \"$stage/{STAGED_BINARY}\"\n")
    if "user" in kinds:
        parts.append(f"id -u {user} >/dev/null 2>&1 || useradd --system --no-create-home "
                     f"--home-dir /nonexistent --shell /usr/sbin/nologin {user}\n")
    if "statedir" in kinds:
        parts.append(f"install -d -m 0700 -o {owner} -g {group} {quote(spec.statedir)}\n"
                     f"chown {owner}:{group} {quote(spec.statedir)}\n"
                     f"chmod 0700 {quote(spec.statedir)}\n")
    if "destination" in kinds:
        dst = quote(spec.storage.destination)
        parts.append(f"install -d -m 0700 {dst}\nchown {owner}:{group} {dst}\n"
                     f"chmod 0700 {dst}\n")
    return "".join(parts)


def _install_staged(name: str, path: str, mode: str) -> str:
    """Lines that move the staged file `name` to `path` (root-owned, `mode`) atomically and
    remove the staged copy at once."""
    new = quote(f"{path}.tsops-new")
    return (f"cp \"$stage/{name}\" {new}\nchown root:root {new}\nchmod {mode} {new}\n"
            f"mv {new} {quote(path)}\nrm -f \"$stage/{name}\"\n")


def install_script(spec: RecorderSpec, kinds: set[HostStepKind]) -> str:
    """One privileged script for the file steps: the binary, user and directories, then the
    environment file and auth key (root-only, 0600) and the unit, each copied from the files
    the SSH user staged in `$stage` (tsops.remote.Stage): no secret on argv or on sudo's
    standard input. Each staged copy is removed as soon as it is installed."""
    parts = [prepare_script(spec, kinds, uploaded="binary" in kinds)]
    if kinds & {"env", "authkey"}:
        parts.append(f"install -d -m 0755 {CONFIG_DIR}\n")
    if "env" in kinds:
        parts.append(_install_staged(STAGED_ENV, ENV_FILE, "0600"))
    if "authkey" in kinds:
        parts.append(_install_staged(STAGED_AUTHKEY, AUTHKEY_FILE, "0600"))
    if "unit" in kinds:
        parts.append(_install_staged(STAGED_UNIT, UNIT_PATH, "0644"))
        parts.append("systemctl daemon-reload\n")
    return "".join(parts)


def start_script(restart: bool) -> str:
    """Enable the unit and (re)start it."""
    verb = "restart" if restart else "start"
    return STRICT + f"systemctl enable {UNIT_NAME} >/dev/null 2>&1\nsystemctl {verb} {UNIT_NAME}\n"


def status_script(settle_seconds: int = 3) -> str:
    """The unit's state, one word, after it stayed active a few seconds (a crash shows)."""
    return (
        f"i=0; while [ $i -lt {settle_seconds} ] && systemctl is-active -q {UNIT_NAME}; do\n"
        "  sleep 1; i=$((i + 1))\n"
        "done\n"
        f"systemctl is-active {UNIT_NAME} || true\n"
    )


def unit_state(settle_seconds: int = 3) -> Probe[str]:
    """The unit's state word once it settled: the health gate's read of the unit."""
    return Probe("the recorder's unit state", status_script(settle_seconds), str.strip)


def last_log_line() -> Probe[str]:
    """The recorder's last log line (one line, at most 300 characters; empty if none): why a
    unit that is not active stopped, e.g. the bucket refusing its keys at startup."""
    # _TRANSPORT=stdout: what the recorder printed, not systemd's own lines about the unit.
    script = (f"journalctl -u {UNIT_NAME} _TRANSPORT=stdout -n 1 -o cat --no-pager "
              "2>/dev/null | tail -n 1 | cut -c1-300 || true\n")
    return Probe("the recorder's last log line", script, lambda out: " ".join(out.split()))


def remove_authkey_script() -> str:
    """Remove the one-shot auth key file once the recorder has joined."""
    return STRICT + f"rm -f {AUTHKEY_FILE}\n"


def write_check_script(spec: RecorderSpec, token: str) -> str:
    """Write, read back and remove a file in the local destination as the recorder's user."""
    dst = spec.storage.destination
    canary = quote(f"{dst.rstrip('/')}/.tsops-canary")
    if spec.runtime == "container":
        who = f"--reuid={CONTAINER_UID} --regid={CONTAINER_UID}"
    else:
        user = quote(spec.service_user)
        who = f"--reuid=$(id -u {user}) --regid=$(id -g {user})"
    inner = quote(f"printf %s {quote(token)} > {canary} && cat {canary} && rm -f {canary}")
    return STRICT + f"setpriv {who} --clear-groups sh -c {inner}\n"
