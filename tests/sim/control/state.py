"""The control plane's state: policy, credentials, auth keys and devices, behind one lock."""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.sim.control import policy

ONLINE_SECONDS = 15.0  # a device not polled for this long is offline (tests/sim/README.md)
MAX_KEY_EXPIRY = 90 * 24 * 3600  # auth keys live at most 90 days
USER_KEY_EXPIRY = 180 * 24 * 3600  # node key expiry of user-owned devices
ACCESS_TOKEN_SECONDS = 3600  # OAuth access tokens expire after an hour (reference §5)
ZERO_TIME = "0001-01-01T00:00:00Z"  # how the API spells "no expiry"
SCOPES = frozenset(
    {"all", "policy_file", "auth_keys", "devices:core",
     # the logging API (tests/sim/control/audit.py)
     "logs:configuration", "logs:network", "log_streaming"}
)  # each also has a `:read` variant
IPV4_BASE = ipaddress.IPv4Address("100.64.0.0")
IPV6_BASE = ipaddress.IPv6Address("fd7a:115c:a1e0::")
# Where Tailscale hands out IPv4 addresses (the CGNAT range); a lab's prefix must lie inside.
TAILNET_IPV4 = ipaddress.IPv4Network("100.64.0.0/10")
FIRST_USER_ID = 1001  # user IDs are handed out in order from here, one per login


class ControlError(Exception):
    """A refusal with the HTTP status and message the API answers with."""

    def __init__(self, status: int, message: str, data: Any = None) -> None:
        """Remember the status, message and optional data."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        """Return the JSON error body."""
        body: dict[str, Any] = {"message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def timestamp(seconds: float | None) -> str:
    """Format simulated unix seconds as the API's RFC 3339 UTC time (zero time for None)."""
    if seconds is None:
        return ZERO_TIME
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def etag_of(text: str) -> str:
    """Return the (unquoted) ETag of a policy text: the hex SHA-256 of its bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def _stable_id(prefix: str) -> str:
    """Return an ID in the control plane's style, e.g. `n1a2b3c4d5eCNTRL`."""
    return f"{prefix}{secrets.token_hex(5)}CNTRL"


def _not_permitted(tags: list[str]) -> ControlError:
    """Return the refusal for tags that are undeclared or not permitted."""
    return ControlError(400, f"requested tags [{' '.join(tags)}] are invalid or not permitted")


@dataclass
class PolicyVersion:
    """One stored policy file: its exact text, its ETag, and whether it is the untouched default."""

    text: str
    etag: str
    default: bool
    saved: float


@dataclass
class Credential:
    """An API token or OAuth access token; scopes None means every scope."""

    token: str
    scopes: frozenset[str] | None
    user: str | None
    client_tags: list[str] | None = None
    expires: float | None = None
    client_id: str | None = None  # the OAuth client an access token was issued to


@dataclass
class OAuthClient:
    """An OAuth client: its ID, secret, scopes and tags."""

    client_id: str
    secret: str
    scopes: frozenset[str]
    tags: list[str]


@dataclass
class AuthKey:
    """An auth key; the secret is shown only when created."""

    id: str
    secret: str
    reusable: bool
    ephemeral: bool
    preauthorized: bool
    tags: list[str]
    description: str
    created: float
    expires: float
    creator: str
    revoked: float | None = None
    uses: int = 0

    def invalid_at(self, now: float) -> str | None:
        """Return why the key cannot register a node at `now`, or None when it can."""
        if self.revoked is not None:
            return "revoked"
        if now >= self.expires:
            return "expired"
        if self.uses and not self.reusable:
            return "already used"
        return None

    def api(self, now: float) -> dict[str, Any]:
        """Return the key as the API shows it, without the secret."""
        body: dict[str, Any] = {
            "id": self.id,
            "keyType": "auth",
            "description": self.description,
            "created": timestamp(self.created),
            "expires": timestamp(self.expires),
            "invalid": self.invalid_at(now) is not None,
            "capabilities": {
                "devices": {
                    "create": {
                        "reusable": self.reusable,
                        "ephemeral": self.ephemeral,
                        "preauthorized": self.preauthorized,
                        "tags": list(self.tags),
                    }
                }
            },
        }
        if self.revoked is not None:
            body["revoked"] = timestamp(self.revoked)
        return body


@dataclass
class Device:
    """A node of the tailnet, as registered through the enrollment protocol."""

    id: str
    node_id: str
    machine_key: str
    node_key: str
    hostname: str
    name: str
    tags: list[str]
    addresses: list[str]
    os: str
    client_version: str
    endpoint: str
    user: str
    ssh: bool
    ephemeral: bool
    created: float
    last_seen: float
    logged_out: float | None = None
    key_expiry: float | None = None

    def online(self, now: float) -> bool:
        """Return whether the device polled within the last ONLINE_SECONDS and is logged in."""
        return self.logged_out is None and now - self.last_seen < ONLINE_SECONDS

    def ipv4(self) -> str:
        """Return the device's tailnet IPv4 address."""
        return next(a for a in self.addresses if ipaddress.ip_address(a).version == 4)

    def node(self, tailnet: str, suffix: str, now: float) -> dict[str, Any]:
        """Return the enrollment protocol's NODE object: the peer view and the node's own."""
        return {**self.peer(now), "os": self.os, "clientVersion": self.client_version,
                "tailnet": tailnet, "magicDNSSuffix": suffix, "authorized": True}

    def peer(self, now: float) -> dict[str, Any]:
        """Return the device as another node's netmap shows it (for SSH and recording)."""
        return {
            "id": self.id,
            "nodeId": self.node_id,
            "name": self.name,
            "hostname": self.hostname,
            "tags": list(self.tags),
            "addresses": list(self.addresses),
            "endpoint": self.endpoint,
            "user": self.user,
            "online": self.online(now),
        }

    def api(self, now: float) -> dict[str, Any]:
        """Return the device as API v2 shows it (`tags` absent when untagged)."""
        expires = self.logged_out if self.logged_out is not None else self.key_expiry
        body: dict[str, Any] = {
            "addresses": list(self.addresses),
            "id": self.id,
            "nodeId": self.node_id,
            "user": self.user,
            "name": self.name,
            "hostname": self.hostname,
            "clientVersion": self.client_version,
            "updateAvailable": False,
            "os": self.os,
            "created": timestamp(self.created),
            "lastSeen": timestamp(self.last_seen),
            "connectedToControl": self.online(now),
            "keyExpiryDisabled": expires is None,
            "expires": timestamp(expires),
            "authorized": True,
            "isExternal": False,
            "machineKey": self.machine_key,
            "nodeKey": self.node_key,
            "blocksIncomingConnections": False,
        }
        if self.tags:
            body["tags"] = list(self.tags)
        return body


@dataclass
class RequestRecord:
    """One request the server answered."""

    method: str
    path: str
    status: int
    token: str | None = None  # the API credential it carried (None: unauthenticated routes)


@dataclass
class InjectedFailure:
    """A test switch: answer matching API requests with an error status (see inject_failure)."""

    method: str
    path: re.Pattern[str]
    status: int
    retry_after: str | None
    after_handling: bool
    remaining: int

    def body(self) -> dict[str, Any]:
        """The JSON error body, shaped like the API's own."""
        if self.status == 429:
            return {"message": "rate limit exceeded"}
        return {"message": f"simulated server error {self.status}"}


@dataclass
class _Store:
    """Everything the lock protects."""

    policies: list[PolicyVersion] = field(default_factory=list)
    credentials: dict[str, Credential] = field(default_factory=dict)
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    keys: dict[str, AuthKey] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    next_address: int = 1
    user_ids: dict[str, int] = field(default_factory=dict)
    failures: list[InjectedFailure] = field(default_factory=list)
    policy_warnings: list[str] = field(default_factory=list)


class ControlState:
    """The tailnet's state and every rule about changing it; all methods are thread-safe."""

    def __init__(self, tailnet: str, ipv4_prefix: str | None = None) -> None:
        """Start with the untouched default policy and nothing else.

        `ipv4_prefix` (a network inside 100.64.0.0/10, e.g. a lab's `100.64.3.0/24`): hand out
        IPv4 addresses inside it, keeping its first address for `add_user_node(reserved=True)`,
        and announce it to nodes as `simTailnetPrefix` (their data plane); None: addresses
        from 100.64.0.1 in order and no data plane.
        """
        self.ipv4_prefix = None if ipv4_prefix is None else ipaddress.IPv4Network(ipv4_prefix)
        if self.ipv4_prefix is not None and not self.ipv4_prefix.subnet_of(TAILNET_IPV4):
            raise ValueError(f"{ipv4_prefix} is not inside {TAILNET_IPV4}")
        # A lab hook: called (under the state lock) with an address WhoIs found nobody at;
        # True when it made a node there. The lab's control machine joins the tailnet this way
        # on its first Tailscale SSH connection, so that tests counting devices before any
        # tailnet traffic see only the hosts (tests/lab/tailnet.py).
        self.whois_miss: Callable[[str], bool] | None = None
        self.tailnet = tailnet
        self.magic_dns_suffix = f"tail{hashlib.sha256(tailnet.encode()).hexdigest()[:6]}.ts.net"
        self.admin = f"admin@{tailnet}"
        self._lock = threading.RLock()
        self._offset = 0.0
        self._store = _Store()
        self._store.policies.append(
            PolicyVersion(policy.DEFAULT_POLICY, etag_of(policy.DEFAULT_POLICY), True, self.now())
        )

    def locked(self) -> threading.RLock:
        """The state's lock (re-entrant), for a lab hook that must act atomically with it."""
        return self._lock

    def now(self) -> float:
        """Return the simulated time: the wall clock plus what advance_clock added."""
        return time.time() + self._offset

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward (expiring keys and tokens, taking devices offline)."""
        with self._lock:
            self._offset += seconds

    # Reading state (copies, so callers never race the server).

    def policy(self) -> PolicyVersion:
        """Return the current policy version."""
        with self._lock:
            return copy.copy(self._store.policies[-1])

    def policy_versions(self) -> list[PolicyVersion]:
        """Return every policy version, oldest first, the default included."""
        with self._lock:
            return [copy.copy(version) for version in self._store.policies]

    def auth_keys(self) -> list[AuthKey]:
        """Return every auth key ever created, revoked ones included."""
        with self._lock:
            return [copy.deepcopy(key) for key in self._store.keys.values()]

    def devices(self) -> list[Device]:
        """Return the devices currently in the tailnet."""
        with self._lock:
            return [copy.deepcopy(device) for device in self._store.devices.values()]

    def requests(self) -> list[RequestRecord]:
        """Return every request answered so far, in order."""
        with self._lock:
            return list(self._store.requests)

    def record(self, method: str, path: str, status: int, token: str | None = None) -> None:
        """Remember one answered request, and which API credential made it."""
        with self._lock:
            self._store.requests.append(RequestRecord(method, path, status, token))

    # Credentials.

    def create_api_token(self, scopes: list[str] | None = None, user: str | None = None) -> str:
        """Create an API token of the admin user (or of `user`, another admin of the tailnet,
        whose edits the audit log names), limited to scopes when given."""
        token = f"tskey-api-{_stable_id('k')}-{secrets.token_hex(16)}"
        with self._lock:
            self._store.credentials[token] = Credential(token, self._scopes(scopes),
                                                        user or self.admin)
        return token

    def create_oauth_client(self, scopes: list[str], tags: list[str]) -> tuple[str, str]:
        """Create an OAuth client and return (client_id, client_secret)."""
        client_id = _stable_id("k")
        secret = f"tskey-client-{client_id}-{secrets.token_hex(16)}"
        client = OAuthClient(client_id, secret, self._scopes(scopes) or frozenset(), list(tags))
        with self._lock:
            self._store.clients[client_id] = client
        return client_id, secret

    def _scopes(self, scopes: list[str] | None) -> frozenset[str] | None:
        """Check scope names and return them as a set (None stays None: every scope)."""
        if scopes is None:
            return None
        unknown = [s for s in scopes if s.removesuffix(":read") not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scopes {unknown}")
        return frozenset(scopes)

    def issue_access_token(
        self, client_id: str, client_secret: str, requested: list[str] | None
    ) -> dict[str, Any]:
        """Exchange OAuth client credentials for an access token (client credentials grant)."""
        with self._lock:
            client = self._store.clients.get(client_id)
            if client is None or not secrets.compare_digest(client.secret, client_secret):
                raise ControlError(401, "invalid client_id or client_secret")
            scopes = client.scopes if requested is None else frozenset(requested)
            if not scopes <= client.scopes:
                raise ControlError(400, f"scope {sorted(scopes - client.scopes)} not granted")
            token = f"tskey-api-{_stable_id('k')}-{secrets.token_hex(16)}"
            self._store.credentials[token] = Credential(
                token, scopes, None, list(client.tags), self.now() + ACCESS_TOKEN_SECONDS,
                client_id=client.client_id,
            )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "scope": " ".join(sorted(scopes)),
        }

    def authenticate(self, token: str) -> Credential:
        """Return the credential for a token, or raise 401."""
        with self._lock:
            credential = self._store.credentials.get(token)
            if credential is None or (
                credential.expires is not None and self.now() >= credential.expires
            ):
                raise ControlError(401, "API token invalid")
            return credential

    # Test switches: what the real API does at times, on demand.

    def inject_failure(
        self, method: str, path: str, status: int, *, retry_after: str | None = None,
        times: int = 1, after_handling: bool = False,
    ) -> None:
        """Answer the next `times` requests `method path` (`path` a regular expression the whole
        request path must match) with `status` instead, after authentication and scope checks.

        429 (with `Retry-After` when given) is a refusal before anything happened, as a rate
        limit is. A 5xx by default also happens before the request is carried out; with
        `after_handling` the request is carried out and then answered with the error, as when a
        server fails after committing: a client that retries blindly then does it twice.
        """
        if status != 429 and not 500 <= status <= 599:
            raise ValueError(f"only 429 and 5xx are injected, not {status}")
        if after_handling and status == 429:
            raise ValueError("a 429 is a refusal: nothing was carried out")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._store.failures.append(InjectedFailure(
                method, re.compile(path), status, retry_after, after_handling, times))

    def take_failure(self, method: str, path: str) -> InjectedFailure | None:
        """The injected failure for this request, if one is left (and count it used)."""
        with self._lock:
            for failure in self._store.failures:
                if failure.method == method and failure.path.fullmatch(path):
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._store.failures.remove(failure)
                    return copy.copy(failure)
            return None

    def set_policy_warnings(self, warnings: list[str]) -> None:
        """Make validate answer every well-formed, valid candidate with these warnings:
        200 `{"message": "warning(s) found", "data": [{"warnings": [...]}]}` (reference §6).

        A stand-in for what the real control plane warns about (for example groups it cannot
        resolve, as with SCIM-synced groups): which policies draw warnings is not documented,
        so a test says when. Writes are not affected: warnings are not a rejection. `[]` ends it.
        """
        with self._lock:
            self._store.policy_warnings = list(warnings)

    def policy_warnings(self) -> list[str]:
        """The warnings validate answers with now (set_policy_warnings)."""
        with self._lock:
            return list(self._store.policy_warnings)

    # The policy file.

    def seed_policy(self, text: str) -> PolicyVersion:
        """Store a policy as if an admin saved it (it must be valid); return the new version."""
        _, invalid = policy.check(text)
        if invalid:
            raise ValueError(f"seed policy is invalid: {invalid.message} {invalid.data}")
        with self._lock:
            version = PolicyVersion(text, etag_of(text), False, self.now())
            self._store.policies.append(version)
            return copy.copy(version)

    def write_policy(self, text: str, if_match: str | None) -> PolicyVersion:
        """Replace the policy: check If-Match, validate (tests included), then store."""
        with self._lock:
            current = self._store.policies[-1]
            if if_match is not None and not _etag_matches(if_match, current):
                raise ControlError(412, "precondition failed, invalid old hash")
            _, invalid = policy.check(text)
            if invalid:
                raise ControlError(400, invalid.message, invalid.data)
            version = PolicyVersion(text, etag_of(text), False, self.now())
            self._store.policies.append(version)
            return copy.copy(version)

    def _current_policy(self) -> dict[str, Any]:
        """Return the current policy parsed (stored policies are always valid)."""
        parsed, _ = policy.check(self._store.policies[-1].text)
        return parsed or {}

    def _check_tags(self, tags: list[str], credential: Credential | None) -> None:
        """Refuse tags that are undeclared or, for an OAuth caller, not owned by its tags."""
        current = self._current_policy()
        refused = policy.undeclared_tags(current, tags)
        if credential is not None and credential.client_tags is not None:
            owner_tags = credential.client_tags
            refused += [
                t
                for t in tags
                if t not in refused and not policy.owned_by_tags(current, t, owner_tags)
            ]
        if refused:
            raise _not_permitted(refused)

    # Auth keys.

    def create_auth_key(
        self,
        *,
        tags: list[str] | None = None,
        reusable: bool = False,
        ephemeral: bool = False,
        preauthorized: bool = True,
        expiry_seconds: int = MAX_KEY_EXPIRY,
        description: str = "",
        credential: Credential | None = None,
    ) -> AuthKey:
        """Create an auth key (for credential, or as the admin when None); return it with secret."""
        tags = list(tags or [])
        if not 0 < expiry_seconds <= MAX_KEY_EXPIRY:
            raise ControlError(400, f"expirySeconds must be between 1 and {MAX_KEY_EXPIRY}")
        if credential is not None and credential.client_tags is not None and not tags:
            raise ControlError(400, "keys created by an OAuth client must be tagged")
        with self._lock:
            self._check_tags(tags, credential)
            key_id = _stable_id("k")
            now = self.now()
            creator = self.admin if credential is None else credential.user or "oauth-client"
            key = AuthKey(
                id=key_id,
                secret=f"tskey-auth-{key_id}-{secrets.token_hex(16)}",
                reusable=reusable,
                ephemeral=ephemeral,
                preauthorized=preauthorized,
                tags=tags,
                description=description,
                created=now,
                expires=now + expiry_seconds,
                creator=creator,
            )
            self._store.keys[key_id] = key
            return copy.deepcopy(key)

    def key_api(self, key_id: str) -> dict[str, Any]:
        """Return one key as the API shows it, or raise 404."""
        with self._lock:
            key = self._store.keys.get(key_id)
            if key is None:
                raise ControlError(404, "key not found")
            return key.api(self.now())

    def keys_api(self) -> list[dict[str, Any]]:
        """Return every auth key as the API lists them."""
        with self._lock:
            return [key.api(self.now()) for key in self._store.keys.values()]

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key, or raise 404."""
        with self._lock:
            key = self._store.keys.get(key_id)
            if key is None:
                raise ControlError(404, "key not found")
            if key.revoked is None:
                key.revoked = self.now()

    # Devices, through the API.

    def _device(self, device_id: str) -> Device:
        """Return a device by numeric ID or stable node ID, or raise 404."""
        for device in self._store.devices.values():
            if device_id in (device.id, device.node_id):
                return device
        raise ControlError(404, "device not found")

    def device_api(self, device_id: str) -> dict[str, Any]:
        """Return one device as the API shows it."""
        with self._lock:
            return self._device(device_id).api(self.now())

    def devices_api(self) -> list[dict[str, Any]]:
        """Return every device as the API lists them."""
        with self._lock:
            return [device.api(self.now()) for device in self._store.devices.values()]

    def set_device_tags(self, device_id: str, tags: list[str], credential: Credential) -> None:
        """Replace a device's tags, refusing tags that are not permitted."""
        with self._lock:
            device = self._device(device_id)
            self._check_tags(tags, credential)
            if not tags and credential.user is None:
                raise ControlError(400, "an OAuth client cannot own an untagged device")
            if tags:
                device.user = "tagged-devices"
                device.key_expiry = None
            elif device.tags:
                device.user = credential.user or device.user
                device.key_expiry = self.now() + USER_KEY_EXPIRY
            device.tags = list(tags)

    def delete_device(self, device_id: str) -> None:
        """Remove a device from the tailnet."""
        with self._lock:
            del self._store.devices[self._device(device_id).id]

    # Devices, through the enrollment protocol.

    def register(self, request: RegisterRequest) -> dict[str, Any]:
        """Register (or re-authenticate) a node with an auth key; return its NODE."""
        with self._lock:
            now = self.now()
            key = next((k for k in self._store.keys.values() if k.secret == request.auth_key), None)
            if key is None:
                raise ControlError(401, "invalid key: unable to validate API key")
            reason = key.invalid_at(now)
            if reason:
                raise ControlError(401, f"invalid key: API key {key.id} is {reason}")
            outside = [tag for tag in request.advertise_tags if tag not in key.tags]
            if outside:
                raise _not_permitted(outside)
            tags = list(request.advertise_tags or key.tags)
            self._check_tags(tags, None)
            device = self._by_machine_key(request.machine_key)
            if device is None:
                device = self._new_device(request, key, now)
            device.hostname = request.hostname
            device.name = self._unique_name(request.hostname, device)
            device.tags = tags
            device.user = "tagged-devices" if tags else key.creator
            device.key_expiry = None if tags else now + USER_KEY_EXPIRY
            device.os = request.os
            device.client_version = request.client_version
            device.endpoint = request.endpoint
            device.ssh = request.ssh
            device.last_seen = now
            device.logged_out = None
            device.node_key = f"nodekey:{secrets.token_hex(32)}"
            key.uses += 1
            return self._node(device, now)

    def poll(
        self,
        machine_key: str,
        *,
        ssh: bool | None = None,
        client_version: str | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """Record a heartbeat (updating what was sent) and return the node; 404 when gone."""
        with self._lock:
            device = self._by_machine_key(machine_key)
            if device is None or device.logged_out is not None:
                raise ControlError(404, "node not found or logged out")
            device.last_seen = self.now()
            if ssh is not None:
                device.ssh = ssh
            if client_version:
                device.client_version = client_version
            if endpoint:
                device.endpoint = endpoint
            return self._node(device, device.last_seen)

    def logout(self, machine_key: str) -> None:
        """Expire a node's key; an ephemeral node is removed at once."""
        with self._lock:
            device = self._by_machine_key(machine_key)
            if device is None or device.logged_out is not None:
                raise ControlError(404, "node not found or logged out")
            if device.ephemeral:
                del self._store.devices[device.id]
            else:
                device.logged_out = self.now()

    def _node(self, device: Device, now: float) -> dict[str, Any]:
        """Return a device's NODE, with the lab's tailnet prefix when there is one."""
        node = device.node(self.tailnet, self.magic_dns_suffix, now)
        if self.ipv4_prefix is not None:
            node["simTailnetPrefix"] = str(self.ipv4_prefix)
        return node

    def user_id(self, login: str) -> int:
        """Return the numeric ID of the user with `login` (made on first use)."""
        with self._lock:
            ids = self._store.user_ids
            return ids.setdefault(login, FIRST_USER_ID + len(ids))

    def add_user_node(
        self, login: str, hostname: str, *, machine_key: str | None = None, endpoint: str = "",
        reserved: bool = False,
    ) -> dict[str, Any]:
        """Add a node owned by the user `login` (as an interactive login would) and return it.

        `reserved`: give it the first address of the lab prefix (the control machine's).
        Its machine key is `node["machineKey"]` in the answer; poll with it to keep it online.
        """
        with self._lock:
            now = self.now()
            if reserved and self.ipv4_prefix is not None:
                first = str(self.ipv4_prefix.network_address + 1)
                if any(first in d.addresses for d in self._store.devices.values()):
                    raise ControlError(409, f"{first} is already a node's address")
            key = machine_key or "mkey:" + secrets.token_hex(32)
            if self._by_machine_key(key) is not None:
                raise ControlError(409, "a node with this machine key exists")
            device = Device(
                id=str(secrets.randbelow(9 * 10**15) + 10**15),
                node_id=_stable_id("n"),
                machine_key=key,
                node_key=f"nodekey:{secrets.token_hex(32)}",
                hostname=hostname,
                name="",
                tags=[],
                addresses=self._addresses(reserved),
                os="linux",
                client_version="",
                endpoint=endpoint,
                user=login,
                ssh=False,
                ephemeral=False,
                created=now,
                last_seen=now,
                key_expiry=now + USER_KEY_EXPIRY,
            )
            device.name = self._unique_name(hostname, device)
            self._store.devices[device.id] = device
            self.user_id(login)
            return {**self._node(device, now), "machineKey": key}

    def _authenticated(self, machine_key: str) -> Device:
        """Return the logged-in device with this machine key, or raise 401 (node requests)."""
        device = self._by_machine_key(machine_key)
        if device is None or device.logged_out is not None:
            raise ControlError(401, "node not found or logged out")
        return device

    def whois(self, machine_key: str, address: str) -> dict[str, Any]:
        """Answer a node's WhoIs for a peer's tailnet address: the peer and its owner; 404."""
        with self._lock:
            self._authenticated(machine_key)
            for attempt in range(2):
                now = self.now()
                for device in self._store.devices.values():
                    if address in device.addresses and device.logged_out is None:
                        owner = device.user
                        return {
                            "node": device.peer(now),
                            "userProfile": {
                                "id": 0 if device.tags else self.user_id(owner),
                                "loginName": owner,
                            },
                        }
                if attempt or self.whois_miss is None or not self.whois_miss(address):
                    break
            raise ControlError(404, f"no node has the address {address}")

    def netmap(self, machine_key: str) -> dict[str, Any]:
        """Return what a node's netmap holds for its SSH server: itself, its peers (with the
        online ones' endpoints) and the SSH part of the policy (`ssh`, `groups`)."""
        with self._lock:
            me = self._authenticated(machine_key)
            now = self.now()
            current = self._current_policy()
            return {
                "node": self._node(me, now),
                "peers": [d.peer(now) for d in self._store.devices.values()
                          if d is not me and d.logged_out is None],
                "sshPolicy": {"ssh": current.get("ssh", []), "groups": current.get("groups", {})},
            }

    def _by_machine_key(self, machine_key: str) -> Device | None:
        """Return the device registered with this machine key, if any."""
        return next((d for d in self._store.devices.values() if d.machine_key == machine_key), None)

    def _addresses(self, reserved: bool = False) -> list[str]:
        """Return the next free IPv4 and IPv6 addresses (a lower one: an earlier device).

        With a lab prefix the IPv4 address is inside it, after the first (reserved) address.
        """
        reserved = reserved and self.ipv4_prefix is not None
        number = 0 if reserved else self._store.next_address
        if not reserved:
            self._store.next_address += 1
        if self.ipv4_prefix is None:
            return [str(IPV4_BASE + number), str(IPV6_BASE + number)]
        ipv4 = self.ipv4_prefix.network_address + 1 + number
        if ipv4 >= self.ipv4_prefix.broadcast_address:
            raise ControlError(500, f"no tailnet address left in {self.ipv4_prefix}")
        return [str(ipv4), str(IPV6_BASE + number + 1)]

    def _new_device(self, request: RegisterRequest, key: AuthKey, now: float) -> Device:
        """Create and store a device with fresh IDs and addresses."""
        device_id = str(secrets.randbelow(9 * 10**15) + 10**15)
        device = Device(
            id=device_id,
            node_id=_stable_id("n"),
            machine_key=request.machine_key,
            node_key="",
            hostname=request.hostname,
            name="",
            tags=[],
            addresses=self._addresses(),
            os=request.os,
            client_version=request.client_version,
            endpoint=request.endpoint,
            user=key.creator,
            ssh=request.ssh,
            ephemeral=key.ephemeral,
            created=now,
            last_seen=now,
        )
        self._store.devices[device_id] = device
        return device

    def _unique_name(self, hostname: str, device: Device) -> str:
        """Return the device's MagicDNS name, adding -1, -2... when another device has it."""
        label = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-") or "device"
        taken = {d.name for d in self._store.devices.values() if d is not device}
        candidate, suffix = label, 0
        while f"{candidate}.{self.magic_dns_suffix}" in taken:
            suffix += 1
            candidate = f"{label}-{suffix}"
        return f"{candidate}.{self.magic_dns_suffix}"


@dataclass(frozen=True)
class RegisterRequest:
    """The body of POST /sim/v1/register."""

    auth_key: str
    machine_key: str
    hostname: str
    advertise_tags: list[str]
    os: str
    client_version: str
    endpoint: str
    ssh: bool


def _etag_matches(if_match: str, current: PolicyVersion) -> bool:
    """Return whether an If-Match value (quoted exactly once) names the current version."""
    if not (len(if_match) >= 2 and if_match[0] == if_match[-1] == '"'):
        return False
    wanted = if_match[1:-1]
    if wanted == "ts-default":
        return current.default
    return wanted == current.etag
