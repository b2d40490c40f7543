"""The simulated control plane: API v2 subset and enrollment protocol over HTTP, in a thread."""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.sim.control import audit, hujson, policy
from tests.sim.control.slow import Delay, Delays
from tests.sim.control.state import (
    MAX_KEY_EXPIRY,
    AuthKey,
    ControlError,
    ControlState,
    Credential,
    Device,
    PolicyVersion,
    RegisterRequest,
    RequestRecord,
)

JSON = "application/json"
HUJSON = "application/hujson"


@dataclass(frozen=True)
class Request:
    """What a route handler gets: path parameters, headers, body and the caller's credential."""

    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    credential: Credential | None
    query: dict[str, str] = field(default_factory=dict)  # first value of each parameter

    def json(self) -> dict[str, Any]:
        """Return the body as a JSON object, or raise 400."""
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ControlError(400, "request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ControlError(400, "request body must be a JSON object")
        return value

    def text(self) -> str:
        """Return the body as UTF-8 text, or raise 400."""
        try:
            return self.body.decode()
        except UnicodeDecodeError:
            raise ControlError(400, "request body is not UTF-8") from None

    def wants_json(self) -> bool:
        """Return whether the Accept header asks for JSON rather than HuJSON."""
        accepted = [
            item.split(";")[0].strip() for item in self.headers.get("accept", "").split(",")
        ]
        return JSON in accepted and HUJSON not in accepted


@dataclass(frozen=True)
class Response:
    """A status, a body and its content type, plus extra headers."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_response(value: Any, status: int = 200) -> Response:
    """Return a JSON response."""
    return Response(status, json.dumps(value).encode())


Handler = Callable[["ControlServer", Request], Response]


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path pattern, the scope it needs (None: no API auth) and handler."""

    method: str
    pattern: re.Pattern[str]
    scope: str | None
    handler: Handler


ROUTES: list[Route] = []


def route(method: str, path: str, scope: str | None) -> Callable[[Handler], Handler]:
    """Register a handler for `method path`; `{name}` segments become parameters."""

    def register(handler: Handler) -> Handler:
        """Add the route and return the handler unchanged."""
        pattern = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
        ROUTES.append(Route(method, pattern, scope, handler))
        return handler

    return register


def _strings(value: Any, name: str) -> list[str]:
    """Return value as a list of strings, or raise 400 naming the field."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ControlError(400, f"{name} must be an array of strings")
    return value


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    """Return body[name] when present (checked like _field), else None."""
    return _field(body, name, kind) if name in body else None


def _field(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """Return body[name] when it has the given type (or the default when absent), else 400."""
    if name not in body and default is not None:
        return default
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ControlError(400, f"{name} must be a {kind.__name__}")
    return value


# The policy file.


def _policy_response(version: PolicyVersion, as_json: bool) -> Response:
    """Return a policy version as HuJSON (exactly as stored) or JSON, with its quoted ETag."""
    headers = (("ETag", f'"{version.etag}"'),)
    if as_json:
        parsed = hujson.loads(version.text)  # stored versions are always valid
        return Response(200, json.dumps(parsed, indent=2).encode(), JSON, headers)
    return Response(200, version.text.encode(), HUJSON, headers)


@route("GET", "/api/v2/tailnet/{tailnet}/acl", "policy_file:read")
def get_policy(control: ControlServer, request: Request) -> Response:
    """GET the policy file."""
    return _policy_response(control.state.policy(), request.wants_json())


@route("POST", "/api/v2/tailnet/{tailnet}/acl", "policy_file")
def set_policy(control: ControlServer, request: Request) -> Response:
    """Replace the policy file (without If-Match the write is unconditional, as the real API)."""
    version = control.state.write_policy(request.text(), request.headers.get("if-match"))
    return _policy_response(version, request.wants_json())


@route("POST", "/api/v2/tailnet/{tailnet}/acl/validate", "policy_file:read")
def validate_policy(control: ControlServer, request: Request) -> Response:
    """Validate a candidate policy; always 200, with `message` and `data` when invalid, or
    `message` "warning(s) found" and `data` when valid with warnings (set_policy_warnings)."""
    try:
        text = request.body.decode()
    except UnicodeDecodeError:
        return json_response({"message": "policy is not UTF-8", "data": []})
    _, invalid = policy.check(text)
    if invalid:
        return json_response(invalid.body())
    warnings = control.state.policy_warnings()
    if warnings:
        return json_response({"message": "warning(s) found", "data": [{"warnings": warnings}]})
    return json_response({})


# Auth keys.


@route("POST", "/api/v2/tailnet/{tailnet}/keys", "auth_keys")
def create_key(control: ControlServer, request: Request) -> Response:
    """Create an auth key; the answer is the only place its secret appears."""
    body = request.json()
    if body.get("keyType", "auth") != "auth":
        raise ControlError(400, "only keyType 'auth' is simulated")
    capabilities = _field(body, "capabilities", dict)
    devices = _field(capabilities, "devices", dict)
    create = _field(devices, "create", dict)
    key = control.state.create_auth_key(
        tags=_strings(create.get("tags", []), "tags"),
        reusable=_field(create, "reusable", bool, False),
        ephemeral=_field(create, "ephemeral", bool, False),
        preauthorized=_field(create, "preauthorized", bool, False),
        expiry_seconds=_field(body, "expirySeconds", int, MAX_KEY_EXPIRY),
        description=_field(body, "description", str, ""),
        credential=request.credential,
    )
    return json_response({**control.state.key_api(key.id), "key": key.secret})


@route("GET", "/api/v2/tailnet/{tailnet}/keys", "auth_keys:read")
def list_keys(control: ControlServer, request: Request) -> Response:
    """List auth keys, without secrets."""
    return json_response({"keys": control.state.keys_api()})


@route("GET", "/api/v2/tailnet/{tailnet}/keys/{key_id}", "auth_keys:read")
def get_key(control: ControlServer, request: Request) -> Response:
    """Show one auth key, without its secret."""
    return json_response(control.state.key_api(request.params["key_id"]))


@route("DELETE", "/api/v2/tailnet/{tailnet}/keys/{key_id}", "auth_keys")
def delete_key(control: ControlServer, request: Request) -> Response:
    """Revoke an auth key."""
    control.state.revoke_key(request.params["key_id"])
    return Response(200)


# Devices.


@route("GET", "/api/v2/tailnet/{tailnet}/devices", "devices:core:read")
def list_devices(control: ControlServer, request: Request) -> Response:
    """List the tailnet's devices."""
    return json_response({"devices": control.state.devices_api()})


@route("GET", "/api/v2/device/{device_id}", "devices:core:read")
def get_device(control: ControlServer, request: Request) -> Response:
    """Show one device by numeric ID or stable node ID."""
    return json_response(control.state.device_api(request.params["device_id"]))


@route("DELETE", "/api/v2/device/{device_id}", "devices:core")
def delete_device(control: ControlServer, request: Request) -> Response:
    """Remove a device from the tailnet."""
    control.state.delete_device(request.params["device_id"])
    return Response(200)


@route("POST", "/api/v2/device/{device_id}/tags", "devices:core")
def set_device_tags(control: ControlServer, request: Request) -> Response:
    """Replace a device's tags."""
    tags = _strings(request.json().get("tags"), "tags")
    assert request.credential is not None  # every /api/v2 route but oauth/token is authenticated
    control.state.set_device_tags(request.params["device_id"], tags, request.credential)
    return Response(200)


# OAuth.


@route("POST", "/api/v2/oauth/token", None)
def oauth_token(control: ControlServer, request: Request) -> Response:
    """Exchange client credentials (form fields or Basic auth) for an access token."""
    form = {name: values[0] for name, values in parse_qs(request.body.decode("latin-1")).items()}
    if form.get("grant_type") != "client_credentials":
        raise ControlError(400, "grant_type must be client_credentials")
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    basic = _basic_credentials(request.headers.get("authorization", ""))
    if basic and not client_id:
        client_id, client_secret = basic
    scope = form.get("scope")
    return json_response(
        control.state.issue_access_token(client_id, client_secret, scope.split() if scope else None)
    )


# The enrollment protocol (tests/sim/README.md).


@route("POST", "/sim/v1/register", None)
def register(control: ControlServer, request: Request) -> Response:
    """Register or re-authenticate a node with an auth key."""
    body = request.json()
    machine_key = _field(body, "machineKey", str)
    if not machine_key:
        raise ControlError(400, "machineKey must not be empty")
    node = control.state.register(
        RegisterRequest(
            auth_key=_field(body, "authKey", str),
            machine_key=machine_key,
            hostname=_field(body, "hostname", str),
            advertise_tags=_strings(body.get("advertiseTags", []), "advertiseTags"),
            os=_field(body, "os", str, "linux"),
            client_version=_field(body, "clientVersion", str, ""),
            endpoint=_field(body, "endpoint", str, ""),
            ssh=_field(body, "ssh", bool, False),
        )
    )
    return json_response({"node": node})


@route("POST", "/sim/v1/poll", None)
def poll(control: ControlServer, request: Request) -> Response:
    """Heartbeat: mark the node online, note the fields it sent, and return it."""
    body = request.json()
    node = control.state.poll(
        _field(body, "machineKey", str),
        ssh=_optional(body, "ssh", bool),
        client_version=_optional(body, "clientVersion", str),
        endpoint=_optional(body, "endpoint", str),
    )
    return json_response({"node": node})


@route("POST", "/sim/v1/logout", None)
def logout(control: ControlServer, request: Request) -> Response:
    """Log the node out (its key expires; an ephemeral node is removed)."""
    control.state.logout(_field(request.json(), "machineKey", str))
    return json_response({})


@route("POST", "/sim/v1/whois", None)
def whois(control: ControlServer, request: Request) -> Response:
    """A node asks who owns a peer's tailnet address (its SSH server's WhoIs)."""
    body = request.json()
    return json_response(
        control.state.whois(_field(body, "machineKey", str), _field(body, "address", str))
    )


@route("POST", "/sim/v1/netmap", None)
def netmap(control: ControlServer, request: Request) -> Response:
    """A node fetches its current netmap: itself, its peers, the SSH policy."""
    return json_response(control.state.netmap(_field(request.json(), "machineKey", str)))


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """Return (user, password) from a Basic Authorization header, or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _bearer(header: str) -> str | None:
    """Return the API token in an Authorization header (Bearer, or Basic with empty password)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    basic = _basic_credentials(header)
    if basic and basic[0] and not basic[1]:
        return basic[0]
    return None


def _has_scope(credential: Credential, needed: str) -> bool:
    """Return whether the credential's scopes include needed (a write scope implies its read)."""
    if credential.scopes is None:
        return True
    base = needed.removesuffix(":read")
    granted = {base, "all"}
    if needed.endswith(":read"):
        granted |= {needed, "all:read"}
    return bool(granted & credential.scopes)


class _HTTPServer(ThreadingHTTPServer):
    """The listening socket, on exactly the address asked for, pointing back at its control."""

    daemon_threads = True

    def __init__(self, host: str, port: int, control: ControlServer) -> None:
        """Bind host:port (IPv4 or IPv6) and remember the control server."""
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.control = control
        super().__init__((host, port), _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes each request, turning ControlError into the API's JSON error."""

    protocol_version = "HTTP/1.1"
    timeout = 10
    disable_nagle_algorithm = True  # headers and body go out separately; no 40 ms ACK stalls
    server: _HTTPServer
    credential_token: str | None = None  # the API credential of the request being answered

    def do_GET(self) -> None:
        """Answer a GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Answer a POST."""
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        """Answer a DELETE."""
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        """Answer a PUT (no route takes one)."""
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; the state's request log records every answer instead."""

    def _dispatch(self, method: str) -> None:
        """Read the body, find the route, check auth, tailnet and scope, and answer."""
        length = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        path = urlsplit(self.path).path
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        control = self.server.control
        self.credential_token = None
        try:
            response = self._answer(control, method, path, body, query)
        except ControlError as error:
            response = json_response(error.body(), error.status)
        except Exception as error:  # a simulator bug: answer it plainly rather than drop the line
            response = json_response({"message": f"simulator error: {error!r}"}, 500)
        # Recorded before the answer goes out: a client that has its answer always finds its
        # request in the record, without waiting for it.
        control.state.record(method, path, response.status, self.credential_token)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _answer(self, control: ControlServer, method: str, path: str, body: bytes,
                query: dict[str, str] | None = None) -> Response:
        """Return the response of the matching route, or raise ControlError."""
        matches = [(r, m) for r in ROUTES if (m := r.pattern.match(path))]
        if not matches:
            raise ControlError(404, "not found")
        chosen = next(((r, m) for r, m in matches if r.method == method), None)
        if chosen is None:
            raise ControlError(405, "method not allowed")
        found, match = chosen
        headers = {name.lower(): value for name, value in self.headers.items()}
        credential = None
        if found.scope is not None:
            token = _bearer(headers.get("authorization", ""))
            if token is None:
                raise ControlError(401, "API token invalid")
            credential = control.state.authenticate(token)
            self.credential_token = credential.token
            if match.groupdict().get("tailnet", "-") not in ("-", control.state.tailnet):
                raise ControlError(404, "tailnet not found")
            if not _has_scope(credential, found.scope):
                raise ControlError(
                    403, "calling actor does not have enough permissions to perform this function"
                )
        request = Request(match.groupdict(), headers, body, credential, query or {})
        delay = control.delays.take(method, path)
        if delay is not None and not delay.after_handling:
            control.delays.wait(delay)
        elif delay is not None:
            answer = self._handled(control, found, request)
            control.delays.wait(delay)
            return answer
        failure = control.state.take_failure(method, path)
        if failure is None:
            return audit.handle(control, found, request)  # audited when it changes something
        if failure.after_handling:
            audit.handle(control, found, request)
        extra = (("Retry-After", failure.retry_after),) if failure.retry_after is not None else ()
        return Response(failure.status, json.dumps(failure.body()).encode(), JSON, extra)


    def _handled(self, control: ControlServer, found: Route, request: Request) -> Response:
        """The route's answer (audited when it changes something), with an error it raises as
        its answer (a delayed answer)."""
        try:
            return audit.handle(control, found, request)
        except ControlError as error:
            return json_response(error.body(), error.status)


class ControlServer:
    """The simulated control plane on host:port; a context manager that starts and stops it."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tailnet: str = "example.com",
        ipv4_prefix: str | None = None,
    ) -> None:
        """Prepare a server for tailnet on host:port (port 0: any free port); start() binds it.

        `ipv4_prefix`: the lab's tailnet prefix (see ControlState); None keeps 100.64.0.1...
        """
        self.host = host
        self.requested_port = port
        self.state = ControlState(tailnet, ipv4_prefix)
        self.delays = Delays()
        self.logging = audit.LoggingState(self.state)  # audit events, flow logs, log streams
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind the address and serve in a background thread."""
        if self._http is not None:
            raise RuntimeError("the control server is already running")
        self._http = _HTTPServer(self.host, self.requested_port, self)
        # A short poll interval lets stop() return at once instead of after up to 0.5 s.
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sim-control",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        if self._http is None:
            return
        self.delays.stop()
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join()
        self._http = None
        self._thread = None

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """Return the (host, port) the socket is bound to."""
        if self._http is None:
            raise RuntimeError("the control server is not running")
        bound = self._http.server_address
        return str(bound[0]), int(bound[1])

    @property
    def port(self) -> int:
        """Return the bound port."""
        return self.address[1]

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:8080 (the login server for clients)."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """Return the API v2 base URL."""
        return f"{self.url}/api/v2"

    @property
    def tailnet(self) -> str:
        """Return the tailnet's name."""
        return self.state.tailnet

    @property
    def magic_dns_suffix(self) -> str:
        """Return the tailnet's MagicDNS suffix (no leading or trailing dot)."""
        return self.state.magic_dns_suffix

    def create_api_token(self, scopes: list[str] | None = None, user: str | None = None) -> str:
        """Return a new `tskey-api-...` token of the admin (or of `user`); None: every scope."""
        return self.state.create_api_token(scopes, user)

    def create_oauth_client(self, scopes: list[str], tags: list[str]) -> tuple[str, str]:
        """Return (client_id, client_secret) of a new OAuth client."""
        return self.state.create_oauth_client(scopes, tags)

    def create_auth_key(
        self,
        tags: list[str] | None = None,
        *,
        reusable: bool = False,
        ephemeral: bool = False,
        preauthorized: bool = True,
        expiry_seconds: int = MAX_KEY_EXPIRY,
        description: str = "",
    ) -> AuthKey:
        """Create an auth key as the admin (tags must be declared); `.secret` is the key."""
        return self.state.create_auth_key(
            tags=tags,
            reusable=reusable,
            ephemeral=ephemeral,
            preauthorized=preauthorized,
            expiry_seconds=expiry_seconds,
            description=description,
        )

    def seed_policy(self, text: str) -> PolicyVersion:
        """Store a valid policy as an admin edit would (ending the untouched default)."""
        return self.state.seed_policy(text)

    def policy(self) -> PolicyVersion:
        """Return the current policy version."""
        return self.state.policy()

    def policy_versions(self) -> list[PolicyVersion]:
        """Return every policy version, the default first."""
        return self.state.policy_versions()

    def auth_keys(self) -> list[AuthKey]:
        """Return every auth key created (with uses and revocation)."""
        return self.state.auth_keys()

    def devices(self) -> list[Device]:
        """Return the devices in the tailnet."""
        return self.state.devices()

    def requests(self) -> list[RequestRecord]:
        """Return every request answered, in order."""
        return self.state.requests()

    def inject_failure(
        self, method: str, path: str, status: int, *, retry_after: str | None = None,
        times: int = 1, after_handling: bool = False,
    ) -> None:
        """Answer matching API requests with 429 or a 5xx (ControlState.inject_failure)."""
        self.state.inject_failure(method, path, status, retry_after=retry_after, times=times,
                                  after_handling=after_handling)

    def inject_delay(self, method: str, path: str, seconds: float, *, times: int | None = 1,
                     after_handling: bool = False) -> Delay:
        """Answer matching API requests `seconds` late (slow.Delays.add); the returned switch
        counts the requests it held (`served`)."""
        return self.delays.add(method, path, seconds, times=times, after_handling=after_handling)

    def set_policy_warnings(self, warnings: list[str]) -> None:
        """Make validate answer with warnings (ControlState.set_policy_warnings)."""
        self.state.set_policy_warnings(warnings)

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward."""
        self.state.advance_clock(seconds)


audit.register_routes()  # the logging API's endpoints (tests/sim/control/audit.py)
