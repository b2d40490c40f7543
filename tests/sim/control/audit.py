"""The logging API of the simulated control plane: configuration audit events, network flow
logs and log streaming per log type (reference §6; README "Logging API").

Every mutating call the simulator carries out (a policy write, an auth key created or revoked,
a device's tags set, a device deleted, a node enrolled with an auth key, a log stream set or
deleted) is recorded as one audit event, shaped as Tailscale's configuration audit log returns
them, with its actor: the API token's user or the OAuth client. `handle` wraps a route's
handler to do that; the routes at the end serve the logs and the streams. A stream's secrets
(`token`, `s3SecretAccessKey`) are kept but never read back.
"""

from __future__ import annotations

import copy
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.sim.control.state import ControlError, ControlState, Credential

if TYPE_CHECKING:
    from tests.sim.control.server import ControlServer, Request, Response, Route

LOG_TYPES = ("configuration", "network")
DESTINATION_TYPES = frozenset({"splunk", "elastic", "panther", "cribl", "datadog", "axiom", "s3"})
COMPRESSION_FORMATS = frozenset({"none", "zstd", "gzip"})
S3_AUTHENTICATION_TYPES = frozenset({"accesskey", "rolearn"})
SECRET_FIELDS = frozenset({"token", "s3SecretAccessKey"})
STREAM_FIELDS = frozenset({
    "destinationType", "url", "user", "token", "uploadPeriodMinutes", "compressionFormat",
    "s3Bucket", "s3Region", "s3KeyPrefix", "s3AuthenticationType", "s3AccessKeyId",
    "s3SecretAccessKey", "s3RoleArn", "s3ExternalId",
})
MAX_BODY_SIZE = 1 << 20


def event_time(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, as the audit log spells `eventTime`."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: str | None, name: str) -> float:
    """A required RFC 3339 query parameter as unix seconds, or 400 naming it."""
    if not value:
        raise ControlError(400, f"{name} is required (RFC 3339)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ControlError(400, f"{name} is not an RFC 3339 time: {value!r}") from None
    if moment.tzinfo is None:
        raise ControlError(400, f"{name} has no time zone: {value!r}")
    return moment.timestamp()


@dataclass
class Stream:
    """One log type's stream: the configuration as written (secrets included), when."""

    config: dict[str, Any]
    configured: float
    last_error: str = ""


@dataclass
class _Logs:
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    streams: dict[str, Stream] = field(default_factory=dict)
    flows: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


class LoggingState:
    """The audit events, network flow logs and log streams of one simulated tailnet."""

    def __init__(self, state: ControlState) -> None:
        """Empty logs for `state`'s tailnet."""
        self.state = state
        self._lock = threading.Lock()
        self._logs = _Logs()

    # Reading (copies, for tests).

    def events(self) -> list[dict[str, Any]]:
        """Every audit event, oldest first."""
        with self._lock:
            return [copy.deepcopy(event) for _, event in self._logs.events]

    def stream(self, log_type: str) -> dict[str, Any] | None:
        """The stream configuration exactly as written, secrets included (None: none)."""
        with self._lock:
            found = self._logs.streams.get(log_type)
            return None if found is None else copy.deepcopy(found.config)

    # Test switches.

    def set_stream_error(self, log_type: str, message: str) -> None:
        """Make the stream's status report `message` as its last error ("" clears it)."""
        with self._lock:
            self._logs.streams[log_type].last_error = message

    def add_flow_log(self, entry: dict[str, Any]) -> None:
        """Add one network flow log entry (logged now)."""
        with self._lock:
            self._logs.flows.append((self.state.now(), copy.deepcopy(entry)))

    # Recording.

    def record(self, credential: Credential | None, action: str, target: dict[str, Any],
               old: Any = None, new: Any = None, actor: dict[str, Any] | None = None) -> None:
        """Keep one audit event made by `credential` (or by `actor` when given)."""
        now = self.state.now()
        event: dict[str, Any] = {
            "eventGroupID": secrets.token_hex(16),
            "origin": "API",
            "actor": actor if actor is not None else self.actor(credential),
            "target": target,
            "type": "CONFIG",
            "action": action,
            "eventTime": event_time(now),
        }
        if old is not None:
            event["old"] = old
        if new is not None:
            event["new"] = new
        with self._lock:
            self._logs.events.append((now, event))

    def actor(self, credential: Credential | None) -> dict[str, Any]:
        """The audit log's actor for a credential: its user, or the OAuth client."""
        if credential is None or (credential.user is None and credential.client_id is None):
            return self.user_actor(self.state.admin)
        if credential.user is None:
            return {"id": credential.client_id, "type": "OAUTH_CLIENT",
                    "loginName": credential.client_id, "displayName": "OAuth client"}
        return self.user_actor(credential.user)

    def user_actor(self, login: str) -> dict[str, Any]:
        """The actor of a user by login name."""
        display = login.split("@", 1)[0].replace(".", " ").title()
        return {"id": str(self.state.user_id(login)), "type": "USER", "loginName": login,
                "displayName": display}

    # The endpoints.

    def configuration_log(self, start: float, end: float) -> list[dict[str, Any]]:
        """Events with start <= eventTime <= end, newest first (callers must sort)."""
        with self._lock:
            found = [e for t, e in self._logs.events if start <= t <= end]
        return [copy.deepcopy(e) for e in reversed(found)]

    def network_log(self, start: float, end: float) -> list[dict[str, Any]]:
        """Flow log entries logged within the window."""
        with self._lock:
            return [copy.deepcopy(e) for t, e in self._logs.flows if start <= t <= end]

    def set_stream(self, log_type: str, body: dict[str, Any]) -> bool:
        """Check and store a stream configuration; True when one existed before."""
        config = check_stream(body)
        with self._lock:
            existed = log_type in self._logs.streams
            self._logs.streams[log_type] = Stream(config, self.state.now())
        return existed

    def stream_api(self, log_type: str) -> dict[str, Any]:
        """The configuration as GET shows it: every field but the secrets; 404 when none."""
        with self._lock:
            found = self._logs.streams.get(log_type)
            if found is None:
                raise ControlError(404, f"no log streaming configured for {log_type} logs")
            shown = {k: v for k, v in found.config.items() if k not in SECRET_FIELDS}
        return {"logType": log_type, **shown}

    def delete_stream(self, log_type: str) -> bool:
        """Remove a stream; True when there was one."""
        with self._lock:
            return self._logs.streams.pop(log_type, None) is not None

    def status_api(self, log_type: str) -> dict[str, Any]:
        """The stream's publishing status; 404 when none is configured."""
        with self._lock:
            found = self._logs.streams.get(log_type)
            if found is None:
                raise ControlError(404, f"no log streaming configured for {log_type} logs")
            source = self._logs.events if log_type == "configuration" else self._logs.flows
            sent = [t for t, _ in source if t >= found.configured]
            error = found.last_error
            configured = found.configured
        failed = len(sent) if error else 0
        return {
            "lastActivity": event_time(max(sent, default=configured)),
            "lastError": error,
            "maxBodySize": MAX_BODY_SIZE,
            "numBytesSent": 0 if error else 512 * len(sent),
            "numEntriesSent": 0 if error else len(sent),
            "numFailedRequests": failed,
            "numSpoofedEntries": 0,
            "numTotalRequests": len(sent),
            "rateBytesSent": 0.0,
            "rateEntriesSent": 0.0,
            "rateFailedRequests": 0.0,
            "rateTotalRequests": 0.0,
        }


def _string(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ControlError(400, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ControlError(400, f"{name} must be a string")
    return value


def check_stream(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a stream configuration as the API does; return it with defaults filled in."""
    unknown = sorted(set(body) - STREAM_FIELDS)
    if unknown:
        raise ControlError(400, f"unknown fields {unknown}")
    kind = _string(body, "destinationType", required=True)
    if kind not in DESTINATION_TYPES:
        raise ControlError(400, f"destinationType {kind!r} is not one of "
                                f"{sorted(DESTINATION_TYPES)}")
    config = {k: v for k, v in body.items() if v not in (None, "")}
    compression = _string(body, "compressionFormat") or "none"
    if compression not in COMPRESSION_FORMATS:
        raise ControlError(400, f"compressionFormat {compression!r} is not one of "
                                f"{sorted(COMPRESSION_FORMATS)}")
    config["compressionFormat"] = compression
    period = body.get("uploadPeriodMinutes", 0)
    if not isinstance(period, int) or isinstance(period, bool) or period < 0:
        raise ControlError(400, "uploadPeriodMinutes must be a non-negative integer")
    config["uploadPeriodMinutes"] = period
    if kind == "s3":
        _string(body, "s3Bucket", required=True)
        _string(body, "s3Region", required=True)
        _string(body, "s3KeyPrefix")
        auth = _string(body, "s3AuthenticationType", required=True)
        if auth not in S3_AUTHENTICATION_TYPES:
            raise ControlError(400, f"s3AuthenticationType {auth!r} is not one of "
                                    f"{sorted(S3_AUTHENTICATION_TYPES)}")
        if auth == "accesskey":
            _string(body, "s3AccessKeyId", required=True)
            _string(body, "s3SecretAccessKey", required=True)
        else:
            _string(body, "s3RoleArn", required=True)
            _string(body, "s3ExternalId", required=True)
        if any(name in config for name in ("url", "token", "user")):
            raise ControlError(400, "url, user and token are not used by s3 destinations")
        return config
    url = _string(body, "url", required=True)
    assert url is not None
    if not url.startswith(("https://", "http://")):
        raise ControlError(400, f"url {url!r} is not an http(s) URL")
    _string(body, "user")
    _string(body, "token", required=True)
    s3_fields = sorted(name for name in config if name.startswith("s3"))
    if s3_fields:
        raise ControlError(400, f"{s3_fields} are only for s3 destinations")
    return config


def _log_type(request: Request) -> str:
    log_type = request.params["log_type"]
    if log_type not in LOG_TYPES:
        raise ControlError(400, f"logType must be one of {list(LOG_TYPES)}, not {log_type!r}")
    return log_type


# Recording the mutating calls: what each route changed, before and after.


def handle(control: ControlServer, route: Route, request: Request) -> Response:
    """Run a route's handler and record the audit event of what it changed."""
    name = route.handler.__name__
    state, logs, credential = control.state, control.logging, request.credential
    if name == "set_policy":
        response = route.handler(control, request)
        target = {"id": state.tailnet, "name": state.tailnet, "type": "TAILNET",
                  "property": "ACL"}
        # The policy text is not in the event (decision: tsops must get both versions from
        # its own history, as the issue asks, not from the log).
        logs.record(credential, "UPDATE", target)
        return response
    if name == "create_key":
        response = route.handler(control, request)
        import json

        created = json.loads(response.body)
        logs.record(credential, "CREATE", {"id": created["id"], "name": created["id"],
                                           "type": "AUTH_KEY"},
                    new={"tags": created["capabilities"]["devices"]["create"]["tags"]})
        return response
    if name == "delete_key":
        response = route.handler(control, request)
        key_id = request.params["key_id"]
        logs.record(credential, "DELETE", {"id": key_id, "name": key_id, "type": "AUTH_KEY"})
        return response
    if name in ("set_device_tags", "delete_device"):
        before = state.device_api(request.params["device_id"])
        response = route.handler(control, request)
        target = {"id": before["nodeId"], "name": before["name"], "type": "NODE"}
        if name == "delete_device":
            logs.record(credential, "DELETE", target, old=before["hostname"])
        else:
            after = state.device_api(before["id"])
            logs.record(credential, "UPDATE", {**target, "property": "TAGS"},
                        old=before.get("tags", []), new=after.get("tags", []))
        return response
    if name == "register":
        known = {d.id for d in state.devices()}
        response = route.handler(control, request)
        secret = request.json().get("authKey")
        key = next((k for k in state.auth_keys() if k.secret == secret), None)
        creator = key.creator if key is not None else state.admin
        for device in state.devices():
            if device.id in known:
                continue
            actor = (logs.user_actor(creator) if creator != "oauth-client" else
                     {"id": "oauth-client", "type": "OAUTH_CLIENT", "loginName": "oauth-client",
                      "displayName": "OAuth client"})
            logs.record(None, "CREATE", {"id": device.node_id, "name": device.name,
                                         "type": "NODE"},
                        new={"hostname": device.hostname, "tags": list(device.tags)},
                        actor=actor)
        return response
    return route.handler(control, request)


# The endpoints (registered with the server's routes when the server module loads this one).


def register_routes() -> None:
    """Add the logging endpoints to the server's routes."""
    from tests.sim.control.server import Response, json_response, route

    @route("GET", "/api/v2/tailnet/{tailnet}/logging/configuration", "logs:configuration:read")
    def configuration_log(control: ControlServer, request: Request) -> Response:
        """The configuration audit log over a required start/end window; no pagination."""
        start = parse_time(request.query.get("start"), "start")
        end = parse_time(request.query.get("end"), "end")
        if end < start:
            raise ControlError(400, "end must not be before start")
        return json_response({"version": "1.1", "tailnetId": control.state.tailnet,
                              "logs": control.logging.configuration_log(start, end)})

    @route("GET", "/api/v2/tailnet/{tailnet}/logging/network", "logs:network:read")
    def network_log(control: ControlServer, request: Request) -> Response:
        """Network flow logs over a required window."""
        start = parse_time(request.query.get("start"), "start")
        end = parse_time(request.query.get("end"), "end")
        if end < start:
            raise ControlError(400, "end must not be before start")
        return json_response({"logs": control.logging.network_log(start, end)})

    @route("GET", "/api/v2/tailnet/{tailnet}/logging/{log_type}/stream", "log_streaming:read")
    def get_stream(control: ControlServer, request: Request) -> Response:
        """A log type's stream configuration, without its secrets."""
        return json_response(control.logging.stream_api(_log_type(request)))

    @route("PUT", "/api/v2/tailnet/{tailnet}/logging/{log_type}/stream", "log_streaming")
    def set_stream(control: ControlServer, request: Request) -> Response:
        """Set (create or replace) a log type's stream."""
        log_type = _log_type(request)
        existed = control.logging.set_stream(log_type, request.json())
        shown = control.logging.stream_api(log_type)
        control.logging.record(request.credential, "UPDATE" if existed else "CREATE",
                               {"id": control.state.tailnet, "name": log_type,
                                "type": "TAILNET", "property": "LOG_STREAMING"}, new=shown)
        return Response(200)

    @route("DELETE", "/api/v2/tailnet/{tailnet}/logging/{log_type}/stream", "log_streaming")
    def delete_stream(control: ControlServer, request: Request) -> Response:
        """Stop streaming a log type (none configured: 404)."""
        log_type = _log_type(request)
        if not control.logging.delete_stream(log_type):
            raise ControlError(404, f"no log streaming configured for {log_type} logs")
        control.logging.record(request.credential, "DELETE",
                               {"id": control.state.tailnet, "name": log_type,
                                "type": "TAILNET", "property": "LOG_STREAMING"})
        return Response(200)

    @route("GET", "/api/v2/tailnet/{tailnet}/logging/{log_type}/stream/status",
           "log_streaming:read")
    def stream_status(control: ControlServer, request: Request) -> Response:
        """A log type's stream publishing status."""
        return json_response(control.logging.status_api(_log_type(request)))
