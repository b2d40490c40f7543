"""Canary sessions: prove, end to end, that a server's SSH sessions are recorded.

For each server: open a Tailscale SSH session to its tailnet address that prints a marker no one
else can guess (`echo tsops-canary-<random>`), then watch the recording destination for a new
`.cast` under that server's stable node ID (tsrecorder's layout, `<dst>/<node ID>/...`) that
contains the marker. Found: the sessions of that server are recorded, by the recorders and the
policy as they are now. Not found within the timeout, or the session refused: they are not.

Pure planning and a polling loop with the session and the destination behind small protocols,
so the logic is tested without a tailnet; `tsops/tailnet_ssh.py` is the session seam.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from shlex import quote
from typing import TYPE_CHECKING, Literal, Protocol

from tsops.errors import TsopsError
from tsops.probe import Probe
from tsops.s3 import DENIED

if TYPE_CHECKING:
    from tsops.inventory.load import LoadedInventory, Target
    from tsops.inventory.model import SshRule
    from tsops.recordings.store import S3Store
    from tsops.remote import RemoteLike
    from tsops.tailnet_ssh import SessionResult
    from tsops.tailscale_api import Device

MARKER_PREFIX = "tsops-canary-"
MARKER_RE = re.compile(rf"{MARKER_PREFIX}[0-9a-f]{{16}}")
# Recorder clocks may differ from ours: look at recordings modified since a little before.
CLOCK_SLACK_S = 300
HEAD_BYTES = 64 * 1024  # the marker is in the first output event, right after the header
DEFAULT_TIMEOUT_S = 30.0

State = Literal["recorded", "not-recorded", "refused", "error"]


@dataclass(frozen=True)
class Canary:
    """One planned canary: which server, how to reach it, as whom, under which rule."""

    host: str
    node_id: str
    address: str
    user: str
    rule: str
    marker: str


@dataclass(frozen=True)
class CanaryResult:
    """What one server's canary showed."""

    host: str
    state: State
    detail: str
    key: str | None = None  # where the recording was found (relative to the destination)
    seconds: float | None = None  # from opening the session to finding the recording
    node_id: str = ""
    user: str = ""


def new_marker() -> str:
    """A marker nobody else prints: the prefix and 64 random bits."""
    return MARKER_PREFIX + secrets.token_hex(8)


def canary_command(marker: str) -> str:
    """The command the canary session runs: it prints the marker and nothing else."""
    return f"echo {marker}"


def covering_rule(rules: Sequence[SshRule], tags: Iterable[str],
                  user: str | None = None) -> SshRule | None:
    """The managed rule a canary for a server with `tags` logs in under, or None.

    Of the rules whose `dst` names one of the tags: the first `accept` rule that admits `user`
    (by name, or `autogroup:nonroot`), else the first `accept` rule (a `check` rule cannot be
    passed unattended, and a user the rule admits in a way tsops cannot evaluate, such as
    `localpart:`, is the operator's call), else the first of them, so that the caller can say
    why it cannot be used.
    """
    wanted = set(tags)
    covering = [rule for rule in rules if wanted & set(rule.dst)]
    accepting = [rule for rule in covering if rule.action == "accept"]
    admitting = (rule for rule in accepting if user is not None and rule.admits(user))
    return next(admitting, next(iter(accepting), covering[0] if covering else None))


def canary_user(rule: SshRule) -> str | None:
    """A concrete local user the rule admits (`root` or a name), or None when it names none."""
    return next((user for user in rule.users
                 if not user.startswith(("autogroup:", "localpart:")) and user != "*"), None)


def tailnet_ipv4(device: Device) -> str | None:
    """The device's tailnet IPv4 address, if it has one."""
    for address in device.addresses:
        try:
            if ipaddress.ip_address(address).version == 4:
                return address
        except ValueError:
            continue
    return None


def find_device(devices: Sequence[Device], name: str) -> Device | None:
    """The enrolled device of server `name` (its hostname, or its MagicDNS name's first label),
    chosen among stale twins as tailscale_api.find_named says."""
    from tsops.tailscale_api import find_named

    return find_named(devices, name)[0]


def plan_canaries(inventory: LoadedInventory, targets: Sequence[Target],
                  devices: Sequence[Device], user: str | None,
                  marker: Callable[[], str] = new_marker,
                  ) -> tuple[list[Canary], list[CanaryResult]]:
    """Canaries for the servers that can have one, and a result for each that cannot."""
    rules = inventory.model.ssh_rules
    if user is None and inventory.model.canary is not None:
        user = inventory.model.canary.user
    canaries: list[Canary] = []
    unplanned: list[CanaryResult] = []
    for target in targets:
        rule = covering_rule(rules, target.tags, user)
        if rule is None:
            unplanned.append(CanaryResult(target.name, "not-recorded", (
                f"no ssh_rules rule has one of its tags ({', '.join(target.tags)}) in dst: "
                "nothing tsops manages records its sessions")))
            continue
        if rule.action == "check":
            unplanned.append(CanaryResult(target.name, "error", (
                f"rule {rule.name} is a `check` rule: a session needs a fresh browser login, "
                "so no unattended canary can open one")))
            continue
        who = user or canary_user(rule)
        if who is None:
            unplanned.append(CanaryResult(target.name, "error", (
                f"rule {rule.name} names no concrete user ({', '.join(rule.users)}): "
                "name one to log in as (--canary-user, or canary.user in the inventory)")))
            continue
        device = find_device(devices, target.name)
        address = tailnet_ipv4(device) if device is not None else None
        if device is None or address is None:
            unplanned.append(CanaryResult(target.name, "error", (
                "no single device of that hostname with a tailnet IPv4 address in the tailnet "
                "(is it enrolled? `tsops status` tells)")))
            continue
        canaries.append(Canary(target.name, device.node_id, address, who, rule.name, marker()))
    return canaries, unplanned


class Destination(Protocol):
    """Where recordings land, searched for canary markers."""

    def describe(self) -> str:
        """The destination, for messages."""

    def find(self, wanted: dict[str, str], since: float) -> dict[str, str]:
        """Of `wanted` (marker -> node ID), the markers found in a recording, with its key."""


SessionRunner = Callable[[str, str, str, float], "SessionResult"]


def run_canaries(canaries: Sequence[Canary], session: SessionRunner, destination: Destination,
                 timeout: float = DEFAULT_TIMEOUT_S, session_timeout: float = 20.0,
                 concurrency: int = 8, poll_interval: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> list[CanaryResult]:
    """Open every canary session (in parallel), then wait for their recordings."""
    if not canaries:
        return []
    since = clock() - CLOCK_SLACK_S
    started: dict[str, float] = {}
    results: dict[str, CanaryResult] = {}

    def one(canary: Canary) -> tuple[Canary, SessionResult]:
        started[canary.host] = clock()
        return canary, session(canary.address, canary.user, canary_command(canary.marker),
                               session_timeout)

    waiting: dict[str, Canary] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(canaries)))) as pool:
        for canary, outcome in pool.map(one, canaries):
            failure = outcome.failure
            if failure is None and outcome.exit_status != 0:
                failure = (f"the session as {canary.user} exited {outcome.exit_status}: "
                           f"{(outcome.stderr or outcome.stdout).strip()[-300:]}")
            elif failure is None and canary.marker not in outcome.stdout:
                failure = f"the session as {canary.user} did not print the marker back"
            if failure is not None:
                results[canary.host] = CanaryResult(canary.host, "refused", failure,
                                                    node_id=canary.node_id)
            else:
                waiting[canary.marker] = canary
    deadline = clock() + timeout
    while waiting:
        try:
            found = destination.find({m: c.node_id for m, c in waiting.items()}, since)
        except TsopsError as error:
            for canary in waiting.values():
                results[canary.host] = CanaryResult(
                    canary.host, "error", f"cannot search {destination.describe()}: "
                    f"{error.message}", node_id=canary.node_id)
            break
        now = clock()
        for marker, key in found.items():
            canary = waiting.pop(marker)
            results[canary.host] = CanaryResult(
                canary.host, "recorded", f"session as {canary.user} recorded (rule {canary.rule})",
                key=key, seconds=now - started[canary.host], node_id=canary.node_id,
                user=canary.user)
        if not waiting:
            break
        if now >= deadline:
            for canary in waiting.values():
                results[canary.host] = CanaryResult(canary.host, "not-recorded", (
                    f"the session as {canary.user} ran, but no recording of it appeared under "
                    f"{canary.node_id}/ in {destination.describe()} within {timeout:.0f} s"),
                    node_id=canary.node_id)
            break
        sleep(poll_interval)
    return [results[c.host] for c in canaries]


def find_script(root: str, wanted: dict[str, str], since: float) -> str:
    """One shell command: the markers found in recent `.cast` files under the nodes' folders.

    Prints `<path>:<marker>` lines (grep -o -H); `root` is the recorder's local destination.
    """
    folders = " ".join(quote(f"{root.rstrip('/')}/{node}") for node in sorted(set(wanted.values())))
    patterns = " ".join(f"-e {quote(marker)}" for marker in sorted(wanted))
    return (f"for d in {folders}; do [ -d \"$d\" ] || continue; "
            f"find \"$d\" -type f -name '*.cast' -newermt @{int(since)} "
            f"-exec grep -H -o -F {patterns} {{}} + 2>/dev/null; done; true\n")


def parse_found(output: str, root: str, wanted: dict[str, str]) -> dict[str, str]:
    """Markers found by `find_script`, each with its key relative to `root` (right node only)."""
    prefix = root.rstrip("/") + "/"
    found: dict[str, str] = {}
    for line in output.splitlines():
        path, _, marker = line.rpartition(":")
        node = wanted.get(marker)
        if node is None or not path.startswith(prefix):
            continue
        key = path[len(prefix):]
        if key.split("/", 1)[0] == node:
            found.setdefault(marker, key)
    return found


def found_probe(root: str, wanted: dict[str, str], since: float) -> Probe[dict[str, str]]:
    """The canary markers in the recordings under `root` (marker -> key), one round trip."""
    return Probe("the canary search", find_script(root, wanted, since),
                 lambda output: parse_found(output, root, wanted))


@dataclass
class RecorderFolders:
    """A local destination: the same folder on every recorder host, searched over SSH."""

    root: str
    remotes: dict[str, RemoteLike]  # recorder host name -> its connection

    def describe(self) -> str:
        """The destination, for messages."""
        return f"{self.root} on {', '.join(self.remotes)}"

    def find(self, wanted: dict[str, str], since: float) -> dict[str, str]:
        """Search every recorder host in one round trip each."""
        from tsops.remote import HostUnreachable

        found: dict[str, str] = {}
        unreachable: list[str] = []
        for remote in self.remotes.values():
            try:
                markers = found_probe(self.root, wanted, since).run(remote)
            except HostUnreachable as error:
                unreachable.append(error.message)
                continue
            for marker, key in markers.items():
                found.setdefault(marker, key)
        if unreachable and not found and len(unreachable) == len(self.remotes):
            raise TsopsError("; ".join(unreachable))
        return found


@dataclass
class BucketObjects:
    """An S3 destination, read through the recordings store with the operator's credentials
    (list and ranged GET only)."""

    store: S3Store
    _seen: set[str] = field(default_factory=set)

    def describe(self) -> str:
        """The destination, for messages."""
        return f"s3://{self.store.bucket}"

    def find(self, wanted: dict[str, str], since: float) -> dict[str, str]:
        """List each node's folder; read the head of every recent recording not read yet."""
        from tsops.recordings.store import RecordingMissing, StoreError

        found: dict[str, str] = {}
        markers = sorted(wanted)
        try:
            for node in sorted(set(wanted.values())):
                for item in self.store.list(node):
                    if (item.key in self._seen
                            or (item.modified is not None and item.modified < since)):
                        continue
                    self._seen.add(item.key)  # an S3 object is whole once listed
                    try:
                        head = self.store.read_range(item.key, 0, HEAD_BYTES)
                    except RecordingMissing:  # deleted since it was listed: not the canary's
                        continue
                    text = head.decode(errors="replace")
                    for marker in markers:
                        if wanted[marker] == node and marker in text:
                            found.setdefault(marker, item.key)
        except StoreError as error:
            if error.code in DENIED:
                raise TsopsError("access denied (403): reading recordings needs s3:ListBucket "
                                 "and s3:GetObject for your AWS credentials") from error
            if error.code:
                raise TsopsError(f"S3 said {error.code}") from error
            raise TsopsError(f"cannot reach S3 ({error.reason})") from error
        return found
