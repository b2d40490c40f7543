"""The one seam between tsops and the Tailscale API (v2): an httpx client behind a small class.

Facts relied on are in ../shared/reference/tailscale.md sections 5 and 6: bearer API tokens or
OAuth client credentials, `{"message"}` errors, quoted ETags, tailnet `-` for the credential's
own, validate answering "warning(s) found" for warnings that are not a rejection.

Every wait is bounded: connecting takes at most CONNECT_TIMEOUT_S (or the whole timeout when
shorter) and each read of an answer at most the API timeout (DEFAULT_TIMEOUT_S, changed by
`timeouts.api` in the inventory or `--api-timeout`). A timeout is not retried: an API that hangs
once hangs again, and retrying would multiply the wait; the error names the endpoint and what
was waited for.

Rate limits (429) and server errors (5xx) are retried a bounded number of times (MAX_ATTEMPTS
tries, at most MAX_TOTAL_WAIT_S of waiting in all), waiting as `Retry-After` asks (seconds or an
HTTP date) up to MAX_WAIT_S (a longer wait is not attempted: the call fails at once), else with
exponential backoff and jitter. A 429 is retried for every request, since nothing happened. A
5xx, or a connection dropped before the answer, may come after the server carried the request
out, so it is retried only for requests that are safe to repeat: GET and DELETE, validation,
setting a device's tags, minting an OAuth token, and the policy write (its If-Match makes a
repeat fail with 412 instead of writing twice).

Creating an auth key is not safe to repeat blindly: a key the failed try made would stay alive.
Each creation carries a description unique to the call; after a 5xx or a dropped connection the
keys are listed, any key with that description is revoked, and only then is creation tried
again, so at most one key of the call is ever alive (and its secret is known to tsops). After a
timeout it is not retried: the lookup would wait on the same hung API; the error names the
description, and such a key's secret was never received by anyone.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from tsops.errors import TsopsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

DEFAULT_TIMEOUT_S = 15.0  # the longest wait for an answer: a hung API fails within 20 s
CONNECT_TIMEOUT_S = 5.0  # the longest wait to connect (or the timeout, when shorter)
MAX_ATTEMPTS = 4  # tries of one request, the first included
MAX_WAIT_S = 30.0  # the longest wait between tries tsops accepts from Retry-After
MAX_TOTAL_WAIT_S = 60.0  # the longest time one call spends waiting between its tries
BACKOFF_S = (1.0, 2.0, 4.0)  # waits before the 2nd, 3rd and 4th try when no Retry-After is given
TIMEOUT_HINT = "change it with --api-timeout or timeouts.api in the inventory"
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE", "PUT"})
# How validate says that a valid policy drew warnings (reference §6): not a rejection.
WARNINGS_MESSAGE = re.compile(r"warnings?(\(s\))? found", re.IGNORECASE)


class ApiError(TsopsError):
    """The API refused or failed a request; `status` is the HTTP status (0: no answer)."""

    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"Tailscale API: {what}: {message}")
        self.status = status


class NoAnswer(ApiError):
    """No answer came: `sent` tells whether the request may have reached the API (a read that
    timed out or a dropped connection) or certainly did not (no connection); `timed_out`
    whether a timeout ended it."""

    def __init__(self, what: str, message: str, *, sent: bool, timed_out: bool) -> None:
        super().__init__(what, 0, message)
        self.sent = sent
        self.timed_out = timed_out


@dataclass(frozen=True)
class Device:
    """A device of the tailnet, as the API lists it."""

    id: str
    node_id: str
    name: str
    hostname: str
    tags: tuple[str, ...]
    addresses: tuple[str, ...]
    authorized: bool
    connected_to_control: bool = False
    last_seen: str = ""

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Device:
        """Build from one entry of `GET /tailnet/{t}/devices`."""
        return cls(
            id=str(data["id"]), node_id=str(data.get("nodeId", "")), name=str(data.get("name", "")),
            hostname=str(data.get("hostname", "")), tags=tuple(data.get("tags") or ()),
            addresses=tuple(data.get("addresses") or ()),
            authorized=bool(data.get("authorized", True)),
            connected_to_control=bool(data.get("connectedToControl", False)),
            last_seen=str(data.get("lastSeen") or ""),
        )


def _seen(device: Device) -> float:
    """When the control plane last heard from the device (0: never, or unreadable)."""
    try:
        return datetime.fromisoformat(device.last_seen.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def find_named(devices: Sequence[Device], name: str, *, tag: str | None = None,
               node_id: str | None = None) -> tuple[Device | None, str]:
    """The device of host `name`, chosen the same way everywhere, or None and why.

    Real tailnets accumulate stale twins: a host that enrolled again (new state, reinstall)
    leaves its old device behind, offline, with the same hostname (one of them gets a MagicDNS
    name with a suffix, `host-1`). So: the device with the host's own node ID when it is known
    (no other will do); else among the devices of that hostname or MagicDNS first label (and
    `tag`, when given) the one online; when none is online, the most recently seen. Two online
    devices of one name are two machines, and offline ones seen at the same moment cannot be
    told apart: None, with the IDs, never a guess.
    """
    candidates = [d for d in devices if tag is None or tag in d.tags]
    if node_id is not None:
        exact = next((d for d in candidates if d.node_id == node_id), None)
        return exact, "" if exact is not None else f"no device has node ID {node_id}"
    named = [d for d in candidates
             if d.hostname == name or d.name.split(".", 1)[0] == name]
    if not named:
        return None, f"no device named {name}" + (f" with {tag}" if tag else "")
    online = [d for d in named if d.connected_to_control]
    if len(online) > 1:
        ids = ", ".join(sorted(d.id for d in online))
        return None, f"{len(online)} online devices are named {name} ({ids})"
    if online:
        return online[0], ""
    latest = max(_seen(d) for d in named)
    newest = [d for d in named if _seen(d) == latest]
    if len(newest) > 1:
        ids = ", ".join(sorted(d.id for d in newest))
        return None, f"{len(newest)} devices are named {name} ({ids}), none online or seen last"
    return newest[0], ""


class PolicyChanged(ApiError):
    """The policy file changed after it was read: the If-Match write got 412."""


@dataclass(frozen=True)
class PolicyFile:
    """The policy file as HuJSON text, with its ETag (unquoted)."""

    text: str
    etag: str


@dataclass(frozen=True)
class PolicyValidation:
    """What validate said of a candidate policy: an objection (nothing may be written), and
    warnings (shown to the operator; the write goes ahead)."""

    problem: str | None = None
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class AuthKey:
    """A freshly minted auth key; `key` is the secret, shown once by the API."""

    id: str
    key: str

    def __repr__(self) -> str:
        return f"AuthKey(id={self.id!r}, key=<redacted>)"


@dataclass(frozen=True)
class OAuthClientCredentials:
    """An OAuth client's id and resolved secret."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"OAuthClientCredentials(client_id={self.client_id!r}, client_secret=<redacted>)"


class TailscaleApi:
    """A client for the subset of API v2 tsops uses."""

    def __init__(
        self,
        base_url: str,
        tailnet: str,
        *,
        token: str | None = None,
        oauth: OAuthClientCredentials | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = DEFAULT_TIMEOUT_S,
        jitter: Callable[[float], float] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """`sleep` waits between tries of a rate-limited or failed request and `jitter` spreads
        a backoff wait (tests pass fakes); `timeout` bounds each read of an answer (and the
        connection, up to CONNECT_TIMEOUT_S); `on_retry` hears one line per retry."""
        import httpx

        if (token is None) == (oauth is None):
            raise ValueError("give exactly one of token or oauth")
        self.base = base_url.rstrip("/") + "/api/v2"
        self.tailnet = tailnet
        self._token = token
        self._oauth = oauth
        self._oauth_token: str | None = None
        self._expires = 0.0
        self.timeout = timeout
        self.http = http or httpx.Client(timeout=httpx.Timeout(
            timeout, connect=min(timeout, CONNECT_TIMEOUT_S)))
        self.requests = 0
        self._sleep = sleep
        self._jitter = jitter or _equal_jitter
        self._on_retry = on_retry

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def list_devices(self) -> list[Device]:
        """Return every device of the tailnet."""
        data = self._json("GET", f"/tailnet/{self.tailnet}/devices", "list devices")
        return [Device.from_api(d) for d in data.get("devices", [])]

    def set_device_tags(self, device_id: str, tags: tuple[str, ...]) -> None:
        """Replace a device's tags."""
        # Setting the same tags twice is the same as once: safe to repeat after a 5xx.
        self._json("POST", f"/device/{device_id}/tags", f"set tags of device {device_id}",
                   json={"tags": list(tags)}, idempotent=True)

    def delete_device(self, device_id: str) -> None:
        """Remove a device from the tailnet (already gone, 404, is fine)."""
        self._request("DELETE", f"/device/{device_id}", f"delete device {device_id}",
                      allow=(404,))

    def create_auth_key(
        self, tags: tuple[str, ...], description: str, expiry_seconds: int = 600
    ) -> AuthKey:
        """Mint a single-use, preauthorized, non-ephemeral key carrying exactly `tags`.

        The description gets a suffix unique to this call, so that after an answer that may
        hide a created key (a 5xx, a dropped connection) that key is found and revoked before
        creation is tried again: the call never leaves a second live key.
        """
        what = "create an auth key"
        # The API keeps 50 characters of a description: the unique part must survive that.
        unique = f"{description[:41]} {secrets.token_hex(4)}"
        body = {
            "capabilities": {"devices": {"create": {
                "reusable": False, "ephemeral": False, "preauthorized": True, "tags": list(tags),
            }}},
            "expirySeconds": expiry_seconds,
            "description": unique,
        }
        path = f"/tailnet/{self.tailnet}/keys"
        waited, tries = 0.0, 0
        while True:
            tries += 1
            asked: float | None = None  # what a 5xx's Retry-After asks for
            try:
                response, posts = self._send("POST", path, what, idempotent=False, json=body)
            except NoAnswer as error:
                if not error.sent:
                    raise
                if error.timed_out:
                    raise ApiError(what, 0, (
                        f"{error.message.split(': ', 2)[-1]}; a key described {unique!r} may "
                        "have been created: its secret never arrived, it expires in "
                        f"{expiry_seconds // 60} min, and it can be revoked in the admin "
                        "console")) from error
                cause, status = error.message.split(": ", 2)[-1], 0
            else:
                if response.status_code < 500:
                    _raise_for_status(response, what, posts, safe=False)
                    data = _json_of(response, what)
                    return AuthKey(id=str(data["id"]), key=str(data["key"]))
                cause, status = _message(response), response.status_code
                asked = retry_after_seconds(response.headers.get("Retry-After"))
            try:
                revoked = self._revoke_described(unique)
            except ApiError as error:
                raise ApiError(what, status, (
                    f"{cause}; a key described {unique!r} may have been created and could not "
                    f"be looked up ({error.message}): it expires in {expiry_seconds // 60} min "
                    "unused, and it can be revoked in the admin console")) from error
            left = (f"revoked {revoked} key(s) the failed tries made" if revoked
                    else "no key was left behind")
            wait = _backoff(tries, self._jitter) if asked is None else asked
            if wait > MAX_WAIT_S:
                raise ApiError(what, status, (
                    f"{cause}; the API asks to wait {wait:.0f} s, longer than tsops waits "
                    f"({MAX_WAIT_S:.0f} s): try again later ({left})"))
            if tries >= MAX_ATTEMPTS or waited + wait > MAX_TOTAL_WAIT_S:
                raise ApiError(what, status, f"{cause}; gave up after {tries} tries ({left})")
            self._retrying(what, f"{cause} ({left})", wait, tries)
            waited += wait

    def _revoke_described(self, description: str) -> int:
        """Revoke every live key with exactly this description; return how many.

        The list may show only key IDs (the API's documented list is terse): a key without a
        description in it is read on its own.
        """
        data = self._json("GET", f"/tailnet/{self.tailnet}/keys", "list auth keys")
        revoked = 0
        for entry in data.get("keys") or []:
            key_id = str(entry.get("id", ""))
            if not key_id:
                continue
            if "description" not in entry:
                entry = self._json("GET", f"/tailnet/{self.tailnet}/keys/{key_id}",
                                   "read an auth key")
            if entry.get("description") == description and not entry.get("revoked"):
                self.delete_key(key_id)
                revoked += 1
        return revoked

    def delete_key(self, key_id: str) -> None:
        """Revoke a key (a used single-use key may already be gone: 404 is fine)."""
        self._request("DELETE", f"/tailnet/{self.tailnet}/keys/{key_id}", "revoke an auth key",
                      allow=(404,))

    def get_policy(self) -> PolicyFile:
        """The policy file exactly as stored (HuJSON, comments kept) and its ETag."""
        response = self._request("GET", f"/tailnet/{self.tailnet}/acl", "read the policy file",
                                 headers={"Accept": "application/hujson"})
        return PolicyFile(response.text, _etag(response, "read the policy file"))

    def validate_policy(self, text: str) -> PolicyValidation:
        """The API's verdict on a candidate policy: its objection, or its warnings, or neither.

        A message of "warning(s) found" means valid with warnings (its `data` holds them); any
        other non-empty message is an objection.
        """
        data = self._json("POST", f"/tailnet/{self.tailnet}/acl/validate",
                          "validate the policy file", content=text.encode(),
                          headers={"Content-Type": "application/hujson"}, idempotent=True)
        message = str(data.get("message") or "").strip()
        if not message:
            return PolicyValidation()
        details = data.get("data")
        if WARNINGS_MESSAGE.fullmatch(message):
            return PolicyValidation(warnings=tuple(_messages(details)) or (message,))
        return PolicyValidation(problem=f"{message}: {json.dumps(details)}" if details
                                else message)

    def set_policy(self, text: str, etag: str) -> PolicyFile:
        """Replace the policy file if it is still version `etag`; raise PolicyChanged if not.

        A retry after a server error may meet 412 because the first try did write: then the
        policy is read back, and if it is exactly `text` the write is done.
        """
        what = "write the policy file"
        response, tries = self._send("POST", f"/tailnet/{self.tailnet}/acl", what,
                                     idempotent=True, content=text.encode(), headers={
                                         "Content-Type": "application/hujson",
                                         "Accept": "application/hujson",
                                         "If-Match": f'"{etag}"'})
        if response.status_code == 412:
            if tries > 1:
                current = self.get_policy()
                if current.text == text:
                    return current
            raise PolicyChanged(what, 412, "the policy file changed since it was read "
                                "(412 Precondition Failed)")
        _raise_for_status(response, what, tries, safe=True)
        return PolicyFile(response.text, _etag(response, what))

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        return _json_of(self._request(method, path, what, **kwargs), what)

    def _request(
        self, method: str, path: str, what: str, *, allow: tuple[int, ...] = (),
        idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        response, tries = self._send(method, path, what, idempotent=safe, **kwargs)
        if response.status_code not in allow:
            _raise_for_status(response, what, tries, safe)
        return response

    def _send(
        self, method: str, path: str, what: str, *, idempotent: bool | None = None,
        **kwargs: Any
    ) -> tuple[httpx.Response, int]:
        """Send one API request, retrying a 429 or 5xx as the module says; return the last
        answer and how many tries it took. `idempotent`: whether repeating it after a 5xx is
        safe (default: by method)."""
        headers = dict(kwargs.pop("headers", {}))
        safe = method in SAFE_METHODS if idempotent is None else idempotent

        def send() -> httpx.Response:
            headers["Authorization"] = f"Bearer {self._bearer()}"
            return self.http.request(method, self.base + path, headers=headers, **kwargs)

        return self._with_retries(send, what, safe, f"{method} {self.base}{path}")

    def _with_retries(
        self, send: Callable[[], httpx.Response], what: str, safe: bool, endpoint: str
    ) -> tuple[httpx.Response, int]:
        import httpx

        tries, waited = 0, 0.0
        while True:
            tries += 1
            self.requests += 1
            try:
                response = send()
            except httpx.HTTPError as error:
                failure = self._no_answer(what, endpoint, error)
                wait = _backoff(tries, self._jitter)
                # A dropped connection may hide a request carried out: repeated only when safe.
                if (not safe or not failure.sent or failure.timed_out or tries >= MAX_ATTEMPTS
                        or waited + wait > MAX_TOTAL_WAIT_S):
                    if tries > 1:
                        failure.message += f"; gave up after {tries} tries"
                    raise failure from None
                self._retrying(what, failure.message.split(": ", 2)[-1], wait, tries)
                waited += wait
                continue
            pause = _retry_wait(response, safe, tries, waited, self._jitter)
            if pause is None:
                return response, tries
            self._retrying(what, _message(response), pause, tries)
            waited += pause

    def _retrying(self, what: str, why: str, wait: float, tries: int) -> None:
        """Say that a call is tried again and why, then wait."""
        if self._on_retry is not None:
            self._on_retry(f"Tailscale API: {what}: {why}; trying again in {wait:.1f} s "
                           f"(try {tries + 1} of at most {MAX_ATTEMPTS})")
        self._sleep(wait)

    def _no_answer(self, what: str, endpoint: str, error: Exception) -> NoAnswer:
        """One line for a request that got no answer: the endpoint, and what was waited for."""
        import httpx

        connect = min(self.timeout, CONNECT_TIMEOUT_S)
        if isinstance(error, httpx.ConnectTimeout):
            return NoAnswer(what, f"{endpoint}: could not connect within {connect:g} s "
                            f"({TIMEOUT_HINT})", sent=False, timed_out=True)
        if isinstance(error, httpx.PoolTimeout):
            return NoAnswer(what, f"{endpoint}: no free connection within {self.timeout:g} s",
                            sent=False, timed_out=True)
        if isinstance(error, httpx.TimeoutException):
            doing = "sending the request" if isinstance(error, httpx.WriteTimeout) else (
                "the answer")
            return NoAnswer(what, f"{endpoint}: no progress on {doing} within "
                            f"{self.timeout:g} s ({TIMEOUT_HINT})", sent=True, timed_out=True)
        reason = _reason(error)
        if isinstance(error, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.ProxyError):
            return NoAnswer(what, f"{endpoint}: cannot connect ({reason})", sent=False,
                            timed_out=False)
        return NoAnswer(what, f"{endpoint}: the connection broke before the answer ({reason})",
                        sent=True, timed_out=False)

    def _bearer(self) -> str:
        if self._token is not None:
            return self._token
        assert self._oauth is not None
        if time.monotonic() >= self._expires - 60:
            self._fetch_oauth_token(self._oauth)
        assert self._oauth_token is not None
        return self._oauth_token

    def _fetch_oauth_token(self, oauth: OAuthClientCredentials) -> None:
        def send() -> httpx.Response:
            return self.http.post(self.base + "/oauth/token", data={
                "grant_type": "client_credentials",
                "client_id": oauth.client_id,
                "client_secret": oauth.client_secret,
            })

        # Minting an access token twice is harmless: safe to repeat after a 5xx.
        response, tries = self._with_retries(send, "OAuth token", True,
                                             f"POST {self.base}/oauth/token")
        if response.status_code != 200:
            _raise_for_status(response, "OAuth token", tries, safe=True, always=True)
        data = response.json()
        self._oauth_token = str(data["access_token"])
        self._expires = time.monotonic() + float(data.get("expires_in", 3600))

    # The logging API (reference §6; docs/audit.md): the configuration audit log, network flow
    # logs, and log streaming per log type. Scopes: `logs:configuration:read`,
    # `logs:network:read`, `log_streaming` (`log_streaming:read` to read a stream).

    def configuration_log(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The configuration audit events from `start` to `end` (both required by the API, no
        pagination), as the API returns them (tsops.audit.events parses them)."""
        data = self._json("GET", f"/tailnet/{self.tailnet}/logging/configuration",
                          "read the configuration audit log",
                          params={"start": _rfc3339(start), "end": _rfc3339(end)})
        logs = data.get("logs")
        return [e for e in logs if isinstance(e, dict)] if isinstance(logs, list) else []

    def network_log(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Network flow log entries from `start` to `end` (plans with network flow logs)."""
        data = self._json("GET", f"/tailnet/{self.tailnet}/logging/network",
                          "read the network flow logs",
                          params={"start": _rfc3339(start), "end": _rfc3339(end)})
        logs = data.get("logs")
        return [e for e in logs if isinstance(e, dict)] if isinstance(logs, list) else []

    def get_log_stream(self, log_type: str) -> dict[str, Any] | None:
        """A log type's stream configuration without its secrets (the API never returns
        them), or None when none is configured."""
        response = self._request("GET", f"/tailnet/{self.tailnet}/logging/{log_type}/stream",
                                 f"read the {log_type} log stream", allow=(404,))
        if response.status_code == 404 or not response.content:
            return None
        try:
            data = response.json()
        except ValueError as error:
            raise ApiError(f"read the {log_type} log stream", response.status_code,
                           "the answer is not JSON") from error
        if not isinstance(data, dict) or not data.get("destinationType"):
            return None
        return data

    def set_log_stream(self, log_type: str, config: dict[str, Any]) -> None:
        """Create or replace a log type's stream (`config` in the API's field names, secrets
        included: they are write-only)."""
        self._request("PUT", f"/tailnet/{self.tailnet}/logging/{log_type}/stream",
                      f"set the {log_type} log stream", json=config)

    def delete_log_stream(self, log_type: str) -> None:
        """Stop streaming a log type (none configured, 404, is fine)."""
        self._request("DELETE", f"/tailnet/{self.tailnet}/logging/{log_type}/stream",
                      f"delete the {log_type} log stream", allow=(404,))

    def log_stream_status(self, log_type: str) -> dict[str, Any] | None:
        """A log type's stream publishing status (lastActivity, lastError, numEntriesSent...),
        or None when no stream is configured."""
        response = self._request(
            "GET", f"/tailnet/{self.tailnet}/logging/{log_type}/stream/status",
            f"read the {log_type} log stream status", allow=(404,))
        if response.status_code == 404 or not response.content:
            return None
        try:
            data = response.json()
        except ValueError as error:
            raise ApiError(f"read the {log_type} log stream status", response.status_code,
                           "the answer is not JSON") from error
        return data if isinstance(data, dict) else None


def _equal_jitter(wait: float) -> float:
    """A backoff wait spread over its upper half, so that parallel callers do not retry in step."""
    return random.uniform(wait / 2, wait)  # noqa: S311 (timing, not a secret)


def _backoff(tries: int, jitter: Callable[[float], float]) -> float:
    """The wait after `tries` failed tries when the API asked for none: exponential, jittered."""
    return jitter(BACKOFF_S[min(tries, len(BACKOFF_S)) - 1])


def _retry_wait(response: httpx.Response, safe: bool, tries: int, waited: float,
                jitter: Callable[[float], float]) -> float | None:
    """How long to wait before trying again, or None: do not try again."""
    status = response.status_code
    if status not in RETRIED_STATUSES or (status != 429 and not safe) or tries >= MAX_ATTEMPTS:
        return None
    asked = retry_after_seconds(response.headers.get("Retry-After"))
    wait = _backoff(tries, jitter) if asked is None else asked
    if wait > MAX_WAIT_S or waited + wait > MAX_TOTAL_WAIT_S:
        return None
    return wait


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a Retry-After header asks for (seconds, or an HTTP date), or None if none
    (or unreadable)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _raise_for_status(response: httpx.Response, what: str, tries: int, safe: bool,
                      always: bool = False) -> None:
    """Raise ApiError for an error answer, saying how often it was tried and why it stopped."""
    status = response.status_code
    if status < 400 and not always:
        return
    message = _message(response)
    retried = status in RETRIED_STATUSES and (status == 429 or safe)
    asked = retry_after_seconds(response.headers.get("Retry-After"))
    if retried and tries < MAX_ATTEMPTS and asked is not None and asked > MAX_WAIT_S:
        # It would have been tried again, but the API asked for a longer wait than tsops takes.
        message += (f"; the API asks to wait {asked:.0f} s, longer than tsops waits "
                    f"({MAX_WAIT_S:.0f} s): try again later")
    elif retried and tries < MAX_ATTEMPTS:
        message += (f"; gave up after {tries} tries: the next wait would pass the "
                    f"{MAX_TOTAL_WAIT_S:.0f} s tsops waits in all")
    elif tries > 1:
        message += f"; gave up after {tries} tries"
    elif status in RETRIED_STATUSES:
        message += "; not retried: the request may have been carried out"
    raise ApiError(what, status, message)


def _json_of(response: httpx.Response, what: str) -> dict[str, Any]:
    """The answer's JSON object ({} for an empty answer)."""
    if not response.content:
        return {}
    try:
        data: dict[str, Any] = response.json()
    except ValueError as error:
        raise ApiError(what, response.status_code, "the answer is not JSON") from error
    return data


def _reason(error: Exception) -> str:
    """The innermost cause of a transport error, in a few words (no third-party traceback)."""
    while error.__cause__ is not None and isinstance(error.__cause__, Exception):
        error = error.__cause__
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def _messages(details: Any) -> list[str]:
    """Every sentence in validate's `data`, whatever its nesting (lists, objects of lists)."""
    if isinstance(details, str):
        return [details] if details.strip() else []
    if isinstance(details, list):
        return [m for item in details for m in _messages(item)]
    if isinstance(details, dict):
        lists = [details[key] for key in ("warnings", "errors") if key in details]
        if not lists:
            return [m for value in details.values() for m in _messages(value)]
        about = f"{details['user']}: " if isinstance(details.get("user"), str) and (
            details["user"]) else ""
        return [about + m for found in lists for m in _messages(found)]
    return []


def _etag(response: httpx.Response, what: str) -> str:
    """The response's ETag without its quotes; an answer without one is an API error."""
    etag = response.headers.get("ETag", "").strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if len(etag) < 3 or etag[0] != '"' or etag[-1] != '"':
        raise ApiError(what, response.status_code, f"the answer has no usable ETag ({etag!r})")
    return str(etag[1:-1])


def _message(response: httpx.Response) -> str:
    """The API's own error sentence, with what the status means for the operator."""
    try:
        message = str(response.json().get("message", "")).strip()
    except ValueError:
        message = ""
    hint = {
        401: "authentication failed: check the API token or OAuth client",
        403: "permission denied: the credential lacks the scope for this call",
        404: "not found",
        412: "the resource changed meanwhile",
        429: "rate limited by the API",
    }.get(response.status_code, f"HTTP {response.status_code}")
    return f"{hint} ({message})" if message else hint


def _rfc3339(moment: datetime) -> str:
    """An aware time as the logging API's RFC 3339 UTC (`2026-12-02T07:00:00Z`)."""
    if moment.tzinfo is None:
        raise ValueError("a time without a time zone")
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")
