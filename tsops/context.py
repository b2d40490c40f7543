"""The run context: everything one tsops command works with, opened once and closed once.

A flow gets a `RunContext` and takes from it the inventory, the hosts chosen with `--limit`, the
Tailscale API client, SSH connections by host, S3 clients, secrets and the Events sink it reports
through. The context opens each of these on first use and `close()` (or leaving its `with`
block) closes every one of them, whatever happened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsops.errors import TsopsError, UsageError
from tsops.events import Events, Recorded
from tsops.inventory.load import LoadedInventory, Target, load_inventory
from tsops.runner import Runner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tsops.inventory.model import Storage
    from tsops.remote import RemoteLike
    from tsops.tailscale_api import Device, TailscaleApi

Connect = Callable[[Target], "RemoteLike"]


@dataclass
class Overrides:
    """Settings the command line gives for the whole run, over the inventory's."""

    api_timeout: float | None = None  # --api-timeout, over timeouts.api


OVERRIDES = Overrides()
ConnectTailnet = Callable[[Target, str], "RemoteLike"]


def _matches(pattern: str, target: Target) -> bool:
    """Whether one --limit pattern (a name, group or tag; `*`, `?` and `[...]` globs) fits."""
    return any(fnmatchcase(value, pattern) for value in (target.name, target.group, *target.tags)
               if value)


def select(inventory: LoadedInventory, limits: Sequence[str]) -> tuple[Target, ...]:
    """The servers named by `--limit`, or every server.

    Each value is a comma-separated list of patterns, as in Ansible and pyinfra: a host name,
    group or tag, with shell globs (`db*`); `!pattern` takes servers out. Values add up. With
    only exclusions, they apply to every server. A pattern that matches no server is refused
    (exit 2, and the message says when it names a recorder), so a typo never narrows a run
    silently; so is a selection that leaves no server.
    """
    servers = inventory.servers
    patterns = [p.strip() for value in limits for p in value.split(",")]
    if not patterns:
        return servers
    if any(not p or p == "!" for p in patterns):
        raise UsageError(f"--limit {','.join(limits)}: an empty pattern (two commas, or a lone "
                         "!): write host names, groups or tags separated by single commas")
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]
    for pattern in (*include, *exclude):
        if any(_matches(pattern, t) for t in servers):
            continue
        recorders = [t.name for t in inventory.recorders if fnmatchcase(t.name, pattern)]
        if recorders:
            what = "is a recorder" if len(recorders) == 1 else "are recorders"
            raise UsageError(f"--limit {pattern}: {', '.join(recorders)} {what} of "
                             f"{inventory.path}, not servers: --limit chooses servers (recorders "
                             "are always part of bootstrap, plan and status)")
        raise UsageError(f"--limit {pattern}: no server of {inventory.path} has that name, group "
                         "or tag")
    chosen = tuple(
        t for t in servers
        if (not include or any(_matches(p, t) for p in include))
        and not any(_matches(p, t) for p in exclude)
    )
    if not chosen:
        raise UsageError(f"--limit {','.join(limits)}: selects no server (every match is "
                         "excluded by a ! pattern)")
    return chosen


def check_renderable(inventory: LoadedInventory) -> None:
    """Refuse (exit 2) a value that cannot be written into a host's files safely."""
    from tsops.recorders.host import check_renderable as recorder_files

    recorder_files(inventory)


def ssh_connector(inventory: LoadedInventory) -> Connect:
    """Management SSH connections to the inventory's hosts, with its ssh_config."""
    from tsops.remote import Remote

    configured = inventory.model.connection.ssh_config
    ssh_config = str(inventory.local_path(configured)) if configured else None
    timeout = ssh_timeout(inventory)
    return lambda target: Remote(target, ssh_config=ssh_config, timeout=timeout)


def ssh_timeout(inventory: LoadedInventory | None) -> float:
    """How long each SSH wait may last: `tsops --ssh-timeout`, else the inventory's
    `connection.ssh_timeout`."""
    from tsops import remote

    if remote.ssh_timeout_override is not None:
        return remote.ssh_timeout_override
    if inventory is None:
        return remote.DEFAULT_SSH_TIMEOUT
    return float(inventory.model.connection.ssh_timeout)


def tailnet_connector(target: Target, address: str,
                      inventory: LoadedInventory | None = None) -> RemoteLike:
    """A Tailscale SSH connection to `target` at its tailnet address."""
    from tsops.remote import TailnetRemote

    return TailnetRemote(target, address, timeout=ssh_timeout(inventory))


def tailnet_address(target: Target, devices: Sequence[Device]) -> tuple[str | None, str]:
    """Where to reach `target` over Tailscale SSH, or None and why not.

    Matched to its device as verify matches canaries (hostname, or MagicDNS first label; an
    online device before its stale offline twins), and only when the control plane sees the
    device online: a node that is offline does not answer.
    """
    from tsops.canary import tailnet_ipv4
    from tsops.tailscale_api import find_named

    device, why = find_named(devices, target.name)
    if device is None:
        found = "" if why.startswith("no device") else f" ({why})"
        return None, f"no single device of that hostname in the tailnet's device list{found}"
    address = tailnet_ipv4(device)
    if address is None:
        return None, f"device {device.id} has no tailnet IPv4 address"
    if not device.connected_to_control:
        return None, f"device {device.id} is offline"
    return address, ""


@dataclass
class RunContext:
    """One command's inventory, selection and connections to the outside systems."""

    inventory: LoadedInventory
    targets: tuple[Target, ...] = ()
    events: Events = field(default_factory=Recorded)
    concurrency: int = 32
    connect: Connect | None = None
    connect_tailnet: ConnectTailnet | None = None
    api_factory: Callable[[RunContext], TailscaleApi] | None = None
    s3_factory: Callable[[Storage, tuple[str, str] | None], S3Client] | None = None
    limited: bool = False
    remotes: dict[str, RemoteLike] = field(default_factory=dict)
    _api: TailscaleApi | None = None
    _devices: list[Device] | None = None
    _devices_error: TsopsError | None = None  # the API failed to list devices in this run
    _devices_lock: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runner: Runner | None = None

    @classmethod
    def open(cls, path: Path, limits: Sequence[str] = (), *, events: Events,
             concurrency: int = 32) -> RunContext:
        """Load and validate the inventory and the selection; nothing remote is touched."""
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        inventory = load_inventory(path)
        check_renderable(inventory)
        return cls(inventory, select(inventory, limits), events, concurrency,
                   limited=bool(limits))

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def api(self) -> TailscaleApi:
        """The Tailscale API client, with the inventory's credentials resolved on first use."""
        with self._lock:
            if self._api is None:
                factory = self.api_factory or connect_api
                self._api = factory(self)
            return self._api

    @property
    def runner(self) -> Runner:
        """The per-host runner, reporting progress to the events sink."""
        if self._runner is None:
            self._runner = Runner(self.concurrency, self.events.progress)
        return self._runner

    def remote(self, target: Target) -> RemoteLike:
        """The SSH connection to `target`, opened once and shared by every phase of the run.

        `via` chooses the path: OpenSSH, Tailscale SSH to the tailnet address, or (for
        `tailnet-once-enrolled`) Tailscale SSH when the device list shows the server enrolled
        and online, else OpenSSH for the first contact.
        """
        with self._lock:
            existing = self.remotes.get(target.name)
        if existing is not None:
            return existing
        made = self.open_remote(target)  # outside the lock: it may ask the API
        with self._lock:
            return self.remotes.setdefault(target.name, made)

    def open_remote(self, target: Target, *, fresh_devices: bool = False) -> RemoteLike:
        """A new, not yet connected connection to `target` over the path `via` chooses.

        `fresh_devices` reads the device list again first: a server enrolled during this run
        (or whose OpenSSH was just closed) is then reached over Tailscale SSH.
        """
        if target.via != "openssh":
            try:
                address, why = tailnet_address(target, self.devices(refresh=fresh_devices))
            except TsopsError as error:
                if target.via == "tailnet":
                    from tsops.remote import HostUnreachable

                    raise HostUnreachable(target.name, (
                        f"via tailnet, but the tailnet's device list is unknown: "
                        f"{error.message}")) from None
                # tailnet-once-enrolled: the API is down, OpenSSH is the first-contact path.
                address, why = None, error.message
            if address is not None:
                if self.connect_tailnet is not None:
                    return self.connect_tailnet(target, address)
                return tailnet_connector(target, address, self.inventory)
            if target.via == "tailnet":
                from tsops.remote import HostUnreachable

                raise HostUnreachable(target.name, (
                    f"via tailnet, but {why}: enroll it first (via tailnet-once-enrolled "
                    "makes the first contact over OpenSSH)"))
        return (self.connect or ssh_connector(self.inventory))(target)

    def devices(self, *, refresh: bool = False) -> list[Device]:
        """The tailnet's device list, read once per run (again with `refresh`) for choosing
        connection paths."""
        with self._devices_lock:
            if self._devices_error is not None and not refresh:
                # The API already failed this run: say so at once instead of waiting again.
                raise self._devices_error
            if self._devices is None or refresh:
                try:
                    self._devices = self.api.list_devices()
                except TsopsError as error:
                    self._devices_error = error
                    raise
                self._devices_error = None
            return self._devices

    def reconnect(self, target: Target) -> RemoteLike:
        """Drop the cached connection to `target` and open a new one, as `remote` does.

        For a change that could cut tsops off: only a new connection over the path tsops uses
        next for the host proves that path still works.
        """
        # The path is chosen again from a fresh device list: a server enrolled in this run, or
        # just closed to OpenSSH, is reached over Tailscale SSH when its `via` says so.
        fresh = self.open_remote(target, fresh_devices=True)  # outside the lock: asks the API
        with self._lock:
            old = self.remotes.pop(target.name, None)
            self.remotes[target.name] = fresh
        if old is not None:
            old.close()
        return fresh

    def round_trips(self, name: str) -> int:
        """SSH round trips made to the host `name` so far (0: never connected)."""
        remote = self.remotes.get(name)
        return remote.round_trips if remote is not None else 0

    def s3(self, storage: Storage, keys: tuple[str, str] | None = None) -> S3Client:
        """An S3 client for `storage`: the operator's credentials, or the given keys."""
        if self.s3_factory is not None:
            return self.s3_factory(storage, keys)
        from tsops import s3

        return s3.client_for(storage, keys, self.inventory.model.timeouts.s3)

    def secret(self, ref: Any, label: str) -> str:
        """Resolve a secret reference: environment, keyring, or a prompt through the events."""
        from tsops.secrets import resolve

        return resolve(ref, events=self.events, prompt_label=label)

    def close(self) -> None:
        """Close every SSH connection and the API client."""
        with self._lock:
            remotes, self.remotes = list(self.remotes.values()), {}
            api, self._api = self._api, None
        for remote in remotes:
            remote.close()
        if api is not None:
            api.close()


def connect_api(context: RunContext) -> TailscaleApi:
    """A Tailscale API client with the inventory's credentials, resolved now."""
    from tsops.tailscale_api import OAuthClientCredentials, TailscaleApi

    model = context.inventory.model
    tailnet = model.tailnet
    credentials = tailnet.credentials
    # Each retry of a rate-limited or failed call is a line on stderr, so a slow run says why.
    settings: dict[str, Any] = {"timeout": OVERRIDES.api_timeout or model.timeouts.api,
                                "on_retry": context.events.step}
    if credentials.api_token is not None:
        token = context.secret(credentials.api_token, "Tailscale API token")
        return TailscaleApi(tailnet.api_url, tailnet.name, token=token, **settings)
    assert credentials.oauth is not None
    secret = context.secret(credentials.oauth.client_secret, "Tailscale OAuth client secret")
    return TailscaleApi(tailnet.api_url, tailnet.name, oauth=OAuthClientCredentials(
        credentials.oauth.client_id, secret), **settings)
