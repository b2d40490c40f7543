"""The one seam between tsops and the Tailscale API (v2): an httpx client behind a small class.

Facts relied on are in ../shared/reference/tailscale.md section 5: bearer API tokens or OAuth
client credentials, `{"message"}` errors, quoted ETags, tailnet `-` for the credential's own.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tsops.errors import TsopsError

if TYPE_CHECKING:
    import httpx


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
    ) -> None:
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

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def list_devices(self) -> list[Device]:
        """Return every device of the tailnet."""
        data = self._json("GET", f"/tailnet/{self.tailnet}/devices", "list devices")
        return [Device.from_api(d) for d in data.get("devices", [])]

    def set_device_tags(self, device_id: str, tags: tuple[str, ...]) -> None:
        """Replace a device's tags."""
        self._json("POST", f"/device/{device_id}/tags", f"set tags of device {device_id}",
                   json={"tags": list(tags)})

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

    def validate_policy(self, text: str) -> str | None:
        """The API's objection to a candidate policy (message and details), or None if valid."""
        data = self._json("POST", f"/tailnet/{self.tailnet}/acl/validate",
                          "validate the policy file", content=text.encode(),
                          headers={"Content-Type": "application/hujson"})
        message = str(data.get("message") or "").strip()
        if not message:
            return None
        details = data.get("data")
        return f"{message}: {json.dumps(details)}" if details else message

    def set_policy(self, text: str, etag: str) -> PolicyFile:
        """Replace the policy file if it is still version `etag`; raise PolicyChanged if not."""
        what = "write the policy file"
        try:
            response = self._request("POST", f"/tailnet/{self.tailnet}/acl", what,
                                     content=text.encode(), headers={
                                         "Content-Type": "application/hujson",
                                         "Accept": "application/hujson",
                                         "If-Match": f'"{etag}"'})
        except ApiError as error:
            if error.status == 412:
                raise PolicyChanged(what, 412, "the policy file changed since it was read "
                                    "(412 Precondition Failed)") from error
            raise
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
        self, method: str, path: str, what: str, *, allow: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        import httpx

        headers = dict(kwargs.pop("headers", {}))
        headers["Authorization"] = f"Bearer {self._bearer()}"
        self.requests += 1
        try:
            response = self.http.request(method, self.base + path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(what, 0, f"no answer from {self.base} ({error})") from error
        if response.status_code >= 400 and response.status_code not in allow:
            raise ApiError(what, response.status_code, _message(response))
        return response

    def _bearer(self) -> str:
        if self._token is not None:
            return self._token
        assert self._oauth is not None
        if time.monotonic() >= self._expires - 60:
            self._fetch_oauth_token(self._oauth)
        assert self._oauth_token is not None
        return self._oauth_token

    def _fetch_oauth_token(self, oauth: OAuthClientCredentials) -> None:
        import httpx

        self.requests += 1
        try:
            response = self.http.post(self.base + "/oauth/token", data={
                "grant_type": "client_credentials",
                "client_id": oauth.client_id,
                "client_secret": oauth.client_secret,
            })
        except httpx.HTTPError as error:
            raise ApiError("OAuth token", 0, f"no answer from {self.base} ({error})") from error
        if response.status_code != 200:
            raise ApiError("OAuth token", response.status_code, _message(response))
        data = response.json()
        self._oauth_token = str(data["access_token"])
        self._expires = time.monotonic() + float(data.get("expires_in", 3600))


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
    }.get(response.status_code, f"HTTP {response.status_code}")
    return f"{hint} ({message})" if message else hint
