"""The one seam between tsops and the Tailscale API (v2): an httpx client behind a small class.

Facts relied on are in ../shared/reference/tailscale.md sections 5 and 6: bearer API tokens or
OAuth client credentials, `{"message"}` errors, quoted ETags, tailnet `-` for the credential's
own, validate answering "warning(s) found" for warnings that are not a rejection.

Rate limits (429) and server errors (5xx) are retried a bounded number of times, waiting as
`Retry-After` asks up to MAX_WAIT_S (a longer wait is not attempted: the call fails at once).
A 429 is retried for every request, since nothing happened. A 5xx may come after the server
carried the request out, so it is retried only for requests that are safe to repeat: GET and
DELETE, validation, setting a device's tags, minting an OAuth token, and the policy write
(its If-Match makes a repeat fail with 412 instead of writing twice). Creating an auth key is
never repeated after a 5xx.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from tsops.errors import TsopsError

if TYPE_CHECKING:
    import httpx

MAX_ATTEMPTS = 4  # tries of one request, the first included
MAX_WAIT_S = 30.0  # the longest wait between tries tsops accepts from Retry-After
BACKOFF_S = (1.0, 2.0, 4.0)  # waits before the 2nd, 3rd and 4th try when no Retry-After is given
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE", "PUT"})
# How validate says that a valid policy drew warnings (reference §6): not a rejection.
WARNINGS_MESSAGE = re.compile(r"warnings?(\(s\))? found", re.IGNORECASE)


class ApiError(TsopsError):
    """The API refused or failed a request; `status` is the HTTP status (0: no answer)."""

    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"Tailscale API: {what}: {message}")
        self.status = status


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
    ) -> None:
        """`sleep` waits between tries of a rate-limited or failed request (tests pass a fake)."""
        import httpx

        if (token is None) == (oauth is None):
            raise ValueError("give exactly one of token or oauth")
        self.base = base_url.rstrip("/") + "/api/v2"
        self.tailnet = tailnet
        self._token = token
        self._oauth = oauth
        self._oauth_token: str | None = None
        self._expires = 0.0
        self.http = http or httpx.Client(timeout=30)
        self.requests = 0
        self._sleep = sleep

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
        """Mint a single-use, preauthorized, non-ephemeral key carrying exactly `tags`."""
        body = {
            "capabilities": {"devices": {"create": {
                "reusable": False, "ephemeral": False, "preauthorized": True, "tags": list(tags),
            }}},
            "expirySeconds": expiry_seconds,
            "description": description[:50],
        }
        data = self._json("POST", f"/tailnet/{self.tailnet}/keys", "create an auth key",
                          json=body)
        return AuthKey(id=str(data["id"]), key=str(data["key"]))

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
        response = self._request(method, path, what, **kwargs)
        if not response.content:
            return {}
        try:
            data: dict[str, Any] = response.json()
        except ValueError as error:
            raise ApiError(what, response.status_code, "the answer is not JSON") from error
        return data

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

        return self._with_retries(send, what, safe)

    def _with_retries(
        self, send: Callable[[], httpx.Response], what: str, safe: bool
    ) -> tuple[httpx.Response, int]:
        import httpx

        tries = 0
        while True:
            tries += 1
            self.requests += 1
            try:
                response = send()
            except httpx.HTTPError as error:
                raise ApiError(what, 0, f"no answer from {self.base} ({error})") from error
            wait = _retry_wait(response, safe, tries)
            if wait is None:
                return response, tries
            self._sleep(wait)

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
        response, tries = self._with_retries(send, "OAuth token", safe=True)
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


def _retry_wait(response: httpx.Response, safe: bool, tries: int) -> float | None:
    """How long to wait before trying again, or None: do not try again."""
    status = response.status_code
    if status not in RETRIED_STATUSES or (status != 429 and not safe) or tries >= MAX_ATTEMPTS:
        return None
    asked = retry_after_seconds(response.headers.get("Retry-After"))
    if asked is None:
        return BACKOFF_S[min(tries, len(BACKOFF_S)) - 1]
    return asked if asked <= MAX_WAIT_S else None


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
    if retried and tries < MAX_ATTEMPTS:
        # It would have been tried again, but the API asked for a longer wait than tsops takes.
        asked = retry_after_seconds(response.headers.get("Retry-After")) or 0.0
        message += (f"; the API asks to wait {asked:.0f} s, longer than tsops waits "
                    f"({MAX_WAIT_S:.0f} s): try again later")
    elif tries > 1:
        message += f"; gave up after {tries} tries"
    elif status in RETRIED_STATUSES:
        message += "; not retried: the request may have been carried out"
    raise ApiError(what, status, message)


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
