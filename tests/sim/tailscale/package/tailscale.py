#!/usr/bin/python3
"""Simulated `tailscale` CLI for lab hosts: parses flags like the real one and asks tailscaled.

Installed as /usr/bin/tailscale. Python 3 standard library only, because lab hosts have nothing
else. It speaks HTTP to tailscaled's local API over the Unix socket, as the real CLI does; all
network traffic to the control server is tailscaled's. See ../README.md for what is simulated.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Replaced by the package builder with the version being packaged.
VERSION = "0.0.0"

DEFAULT_SOCKET = "/run/tailscale/tailscaled.sock"
# The real default login server. Prefs hold "" until a login server is chosen, as the real
# client's do (Prefs.ControlURLOrDefault).
DEFAULT_CONTROL_URL = "https://controlplane.tailscale.com"
# The spellings of the default login server the real CLI treats as one (ipn.IsLoginServerSynonym),
# plus "" (prefs before any login server was chosen).
LOGIN_SERVER_SYNONYMS = ("", DEFAULT_CONTROL_URL, "https://login.tailscale.com")
RISK_LOSE_SSH = "lose-ssh"
# The real CLI counts down this long before a risky change, unless the risk was accepted.
RISK_COUNTDOWN_S = 5
TAILSCALE_RANGES = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fd7a:115c:a1e0::/48"),
)
NOT_RUNNING = (
    "failed to connect to local tailscaled; it doesn't appear to be running "
    "(sudo systemctl start tailscaled ?)"
)

FlagKind = Literal["bool", "string", "duration"]
FlagValue = bool | str | float

UP_FLAGS: dict[str, FlagKind] = {
    "accept-risk": "string",
    "advertise-tags": "string",
    "auth-key": "string",
    "authkey": "string",  # the older spelling, still accepted by the real CLI
    "force-reauth": "bool",
    "hostname": "string",
    "login-server": "string",
    "reset": "bool",
    "ssh": "bool",
    "timeout": "duration",
}
SET_FLAGS: dict[str, FlagKind] = {"accept-risk": "string", "hostname": "string", "ssh": "bool"}
STATUS_FLAGS: dict[str, FlagKind] = {"json": "bool"}
VERSION_FLAGS: dict[str, FlagKind] = {"json": "bool"}
GLOBAL_FLAGS: dict[str, FlagKind] = {"socket": "string"}

# `up` flags that set a pref: flag name -> (pref name, default value).
PREF_FLAGS: dict[str, tuple[str, object]] = {
    "advertise-tags": ("AdvertiseTags", []),
    "hostname": ("Hostname", ""),
    "login-server": ("ControlURL", DEFAULT_CONTROL_URL),
    "ssh": ("RunSSH", False),
}
TRUE_WORDS = {"1", "t", "T", "TRUE", "true", "True"}
FALSE_WORDS = {"0", "f", "F", "FALSE", "false", "False"}
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class CLIError(Exception):
    """An error the CLI prints to stderr before exiting with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ParsedFlags:
    """Flags as given on the command line, and the arguments after them."""

    values: dict[str, FlagValue]
    rest: list[str]

    def string(self, name: str, default: str = "") -> str:
        """Return a string flag's value."""
        value = self.values.get(name, default)
        assert isinstance(value, str)
        return value

    def boolean(self, name: str) -> bool:
        """Return a bool flag's value (false when absent)."""
        return bool(self.values.get(name, False))


def parse_duration(text: str) -> float:
    """Parse a Go duration ("30s", "1m30s", "500ms", "0") into seconds."""
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"time: invalid duration {json.dumps(text)}")
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def parse_flags(args: Sequence[str], specs: Mapping[str, FlagKind]) -> ParsedFlags:
    """Parse flags the way Go's flag package does: -x or --x, =value or a separate value."""
    values: dict[str, FlagValue] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("---") or not name:
            raise CLIError(f"bad flag syntax: {arg}")
        kind = specs.get(name)
        if kind is None:
            raise CLIError(f"flag provided but not defined: -{name}")
        index += 1
        if kind == "bool":
            if not has_value or value in TRUE_WORDS:
                values[name] = True
            elif value in FALSE_WORDS:
                values[name] = False
            else:
                raise CLIError(
                    f"invalid boolean value {json.dumps(value)} for -{name}: parse error"
                )
            continue
        if not has_value:
            if index >= len(args):
                raise CLIError(f"flag needs an argument: -{name}")
            value = args[index]
            index += 1
        if kind == "duration":
            try:
                values[name] = parse_duration(value)
            except ValueError as error:
                raise CLIError(
                    f"invalid value {json.dumps(value)} for flag -{name}: {error}"
                ) from None
        else:
            values[name] = value
    return ParsedFlags(values=values, rest=list(args[index:]))


def check_tag(tag: str) -> None:
    """Reject a malformed tag as the real CLI does before asking the control server."""
    if not tag.startswith("tag:"):
        raise CLIError(f"tag: {json.dumps(tag)}: tags must start with 'tag:'")
    name = tag.removeprefix("tag:")
    if not name:
        raise CLIError(f"tag: {json.dumps(tag)}: tag names must not be empty")
    if not name[0].isascii() or not name[0].isalpha():
        raise CLIError(f"tag: {json.dumps(tag)}: tag names must start with a letter, after 'tag:'")
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise CLIError(
            f"tag: {json.dumps(tag)}: tag names can only contain numbers, letters, or dashes"
        )


def parse_tags(text: str) -> list[str]:
    """Split and validate --advertise-tags."""
    tags = [tag.strip() for tag in text.split(",") if tag.strip()]
    for tag in tags:
        check_tag(tag)
    return tags


def read_auth_key(value: str) -> str:
    """Return the auth key, reading it from a file for the `file:PATH` form."""
    if not value.startswith("file:"):
        return value
    path = value.removeprefix("file:")
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise CLIError(f"reading auth key file {path}: {error.strerror}") from None


def up_prefs(flags: ParsedFlags) -> dict[str, Any]:
    """Return the prefs an `up` with these flags asks for (unmentioned flags at defaults)."""
    return {
        "AdvertiseTags": parse_tags(flags.string("advertise-tags")),
        "ControlURL": flags.string("login-server", DEFAULT_CONTROL_URL),
        "Hostname": flags.string("hostname"),
        "RunSSH": flags.boolean("ssh"),
    }


def format_flag(flag: str, value: object) -> str:
    """Render a flag with its value the way the real CLI suggests it."""
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--{flag}=false"
    if isinstance(value, list):
        return f"--{flag}={','.join(value)}"
    return f"--{flag}={value}"


def is_default(pref: str, value: object) -> bool:
    """Return whether a pref holds its default value ("" ControlURL means the default)."""
    for name, default in PREF_FLAGS.values():
        if name == pref:
            return value == default or (pref == "ControlURL" and value == "")
    raise KeyError(pref)


def accidental_revert_error(
    mentioned: set[str], wanted: Mapping[str, Any], current: Mapping[str, Any]
) -> str | None:
    """Return the real CLI's refusal when `up` would silently reset a non-default setting.

    Like the real check, it applies only once a login server has been chosen, and only to
    settings whose flag was not given: restating every non-default flag, or --reset, passes.
    """
    if not current.get("ControlURL"):
        return None
    reverted = [
        flag
        for flag, (pref, _default) in PREF_FLAGS.items()
        if flag not in mentioned
        and not is_default(pref, current.get(pref))
        and wanted[pref] != current.get(pref)
    ]
    if not reverted:
        return None
    args = []
    for flag, (pref, _default) in sorted(PREF_FLAGS.items()):
        if flag in mentioned:
            args.append(format_flag(flag, wanted[pref]))
        elif flag in reverted:
            args.append(format_flag(flag, current[pref]))
    return (
        "Error: changing settings via 'tailscale up' requires mentioning all\n"
        "non-default flags. To proceed, either re-run your command with --reset or\n"
        "use the command below to explicitly mention the current value of\n"
        "all non-default settings:\n\n"
        f"\ttailscale up {' '.join(args)}"
    )


def same_login_server(current: str, wanted: str) -> bool:
    """Whether two ControlURL prefs name the same login server, as the real CLI compares them:
    the exact string, except that every spelling of Tailscale's default counts as one."""
    synonyms = current in LOGIN_SERVER_SYNONYMS and wanted in LOGIN_SERVER_SYNONYMS
    return current == wanted or synonyms


def login_server_change_error(
    wanted: Mapping[str, Any], current: Mapping[str, Any], status: Mapping[str, Any],
    force_reauth: bool,
) -> str | None:
    """Return the real CLI's refusal to move a running node to another login server.

    The real `up` refuses it unless --force-reauth is given (--reset is not enough): the node
    would otherwise keep its node key, and an auth key is used only by a node that has none.
    """
    if force_reauth or status.get("BackendState") != "Running":
        return None
    if same_login_server(str(current.get("ControlURL") or ""), str(wanted["ControlURL"])):
        return None
    return "can't change --login-server without --force-reauth"


def risk_accepted(accepted: str, risk: str) -> bool:
    """Return whether --accept-risk names `risk` (or "all")."""
    names = {name.strip() for name in accepted.split(",")}
    return risk in names or "all" in names


def ssh_over_tailscale(environ: Mapping[str, str], status: Mapping[str, Any]) -> bool:
    """Return whether this command runs in an SSH session that reaches the node over Tailscale.

    The real CLI checks whether SSH_CLIENT's source address is a Tailscale address. The lab has
    no tailnet data plane: a node's tailnet traffic arrives at its endpoint (its lab address,
    shown in Self.Addrs), so a session whose SSH_CONNECTION server address is that endpoint
    counts as over Tailscale too.
    """
    client = environ.get("SSH_CLIENT", "").split()
    if client:
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            address = None
        if address is not None and any(address in net for net in TAILSCALE_RANGES):
            return True
    connection = environ.get("SSH_CONNECTION", "").split()
    if len(connection) != 4 or status.get("BackendState") != "Running":
        return False
    endpoints = status.get("Self", {}).get("Addrs") or []
    return any(endpoint.rsplit(":", 1)[0] == connection[2] for endpoint in endpoints)


def confirm_ssh_toggle(want_ssh: bool, accepted: str, status: Mapping[str, Any]) -> None:
    """Warn before turning Tailscale SSH on or off from a session that goes over Tailscale."""
    action = "reroute SSH traffic to Tailscale SSH and " if want_ssh else ""
    confirm_risk(
        f"You are connected over Tailscale; this action will {action}result in your "
        "session disconnecting.",
        accepted, status,
    )


def confirm_risk(warning: str, accepted: str, status: Mapping[str, Any]) -> None:
    """Present the lose-ssh risk to a session that goes over Tailscale.

    The real CLI prints the warning and continues after a countdown unless interrupted. Without
    a terminal nobody can interrupt, so this simulator refuses instead: automation must pass
    --accept-risk=lose-ssh, and forgetting it fails a test instead of passing after 5 s.
    """
    if risk_accepted(accepted, RISK_LOSE_SSH) or not ssh_over_tailscale(os.environ, status):
        return
    message = f"{warning}\nTo skip this warning, use --accept-risk={RISK_LOSE_SSH}"
    if not sys.stdin.isatty():
        raise CLIError(f"{message}\naborted: no terminal to confirm the risk on")
    print(message, flush=True)
    interrupted = False

    def on_interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        for left in range(RISK_COUNTDOWN_S, 0, -1):
            print(f"\rContinuing in {left} seconds...", end="", flush=True)
            time.sleep(1)
            if interrupted:
                raise CLIError("\naborted")
        print()
    finally:
        signal.signal(signal.SIGINT, previous)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to tailscaled's local API socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("local-tailscaled.sock", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        """Connect to the Unix socket instead of a TCP address."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class LocalClient:
    """The CLI's one way to reach tailscaled."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def call(
        self, method: str, path: str, body: object = None, timeout: float | None = 30.0
    ) -> Any:
        """Send one local API request and return its JSON answer, raising CLIError on errors."""
        connection = UnixHTTPConnection(self.socket_path, timeout)
        try:
            try:
                connection.connect()
            except OSError:
                raise CLIError(NOT_RUNNING) from None
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, f"/localapi/v0/{path}", body=payload, headers=headers)
            response = connection.getresponse()
            answer = json.loads(response.read() or b"null")
        except TimeoutError:
            raise CLIError(
                "timeout waiting for Tailscale service to enter a Running state"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise CLIError(f"tailscaled dropped the request: {error}") from None
        finally:
            connection.close()
        if response.status >= 400:
            raise CLIError(str(answer.get("error", f"local API error {response.status}")))
        return answer


def cmd_up(client: LocalClient, args: list[str]) -> int:
    """`tailscale up`: log in if needed, apply prefs, and wait until Running."""
    flags = parse_flags(args, UP_FLAGS)
    if flags.rest:
        raise CLIError(f"too many non-flag arguments: {json.dumps(flags.rest)}")
    wanted = up_prefs(flags)
    mentioned = {"auth-key" if flag == "authkey" else flag for flag in flags.values}
    current = client.call("GET", "prefs")
    status = client.call("GET", "status")
    if not flags.boolean("reset"):
        refusal = accidental_revert_error(mentioned, wanted, current)
        if refusal:
            raise CLIError(refusal)
    refusal = login_server_change_error(wanted, current, status, flags.boolean("force-reauth"))
    if refusal:
        raise CLIError(refusal)
    if wanted["RunSSH"] != bool(current.get("RunSSH")):
        confirm_ssh_toggle(wanted["RunSSH"], flags.string("accept-risk"), status)
    if flags.boolean("force-reauth"):
        confirm_risk(
            "You are connected over Tailscale; this action will result in your SSH session "
            "disconnecting.",
            flags.string("accept-risk"), status,
        )
    key_flag = "auth-key" if "auth-key" in flags.values else "authkey"
    auth_key = read_auth_key(flags.string(key_flag)) or None
    timeout = float(flags.values.get("timeout", 0.0))
    body = {
        "prefs": wanted,
        "authKey": auth_key,
        "forceReauth": flags.boolean("force-reauth"),
        "timeoutSeconds": timeout,
    }
    # The daemon gives up at the deadline; leave it a moment to say so before hanging up.
    client.call("POST", "up", body, timeout=timeout + 5 if timeout else None)
    return 0


def cmd_set(client: LocalClient, args: list[str]) -> int:
    """`tailscale set`: change only the settings named."""
    flags = parse_flags(args, SET_FLAGS)
    if flags.rest:
        raise CLIError(f"too many non-flag arguments: {json.dumps(flags.rest)}")
    patch: dict[str, Any] = {}
    if "ssh" in flags.values:
        patch["RunSSH"] = flags.boolean("ssh")
    if "hostname" in flags.values:
        patch["Hostname"] = flags.string("hostname")
    if not patch:
        return 0
    current = client.call("GET", "prefs")
    if "RunSSH" in patch and patch["RunSSH"] != bool(current.get("RunSSH")):
        status = client.call("GET", "status")
        confirm_ssh_toggle(patch["RunSSH"], flags.string("accept-risk"), status)
    client.call("PATCH", "prefs", patch)
    return 0


def cmd_down(client: LocalClient, args: list[str]) -> int:
    """`tailscale down`: disconnect but stay logged in."""
    if parse_flags(args, {}).rest:
        raise CLIError("too many non-flag arguments")
    client.call("PATCH", "prefs", {"WantRunning": False})
    return 0


def cmd_logout(client: LocalClient, args: list[str]) -> int:
    """`tailscale logout`: expire this node's key and forget the login."""
    if parse_flags(args, {}).rest:
        raise CLIError("too many non-flag arguments")
    client.call("POST", "logout")
    return 0


def cmd_status(client: LocalClient, args: list[str]) -> int:
    """`tailscale status [--json]`."""
    flags = parse_flags(args, STATUS_FLAGS)
    status = client.call("GET", "status")
    if flags.boolean("json"):
        print(json.dumps(status, indent=2))
        return 0
    state = status["BackendState"]
    if state == "Stopped":
        print("Tailscale is stopped.")
        return 1
    if state == "NeedsLogin":
        print("Logged out.")
        return 1
    if state not in ("Running", "Starting"):
        print(f"unexpected state: {state}", file=sys.stderr)
        return 1
    me = status["Self"]
    ips = me.get("TailscaleIPs") or ["-"]
    owner = status["User"][str(me["UserID"])]["LoginName"]
    print(f"{ips[0]:<16} {me['HostName']:<20} {owner:<20} {me['OS']:<8} -")
    return 0


def cmd_version(client: LocalClient, args: list[str]) -> int:
    """`tailscale version [--json]`: the CLI's own version (no daemon needed)."""
    flags = parse_flags(args, VERSION_FLAGS)
    if flags.boolean("json"):
        print(json.dumps({"majorMinorPatch": VERSION, "short": VERSION, "long": long_version()}))
    else:
        print(f"{VERSION}\n  tailscale commit: {commit_hash()}\n  go version: none (lab simulator)")
    return 0


def cmd_debug(client: LocalClient, args: list[str]) -> int:
    """`tailscale debug prefs`: the daemon's current prefs as JSON."""
    if args != ["prefs"]:
        raise CLIError("this simulator implements only `tailscale debug prefs`")
    print(json.dumps(client.call("GET", "prefs"), indent=2))
    return 0


def commit_hash() -> str:
    """A stable stand-in for the commit a version was built from."""
    return "".join(f"{ord(char):02x}" for char in VERSION)[:9].ljust(9, "0")


def long_version() -> str:
    """The long version string, shaped like the real one (`1.78.3-t<commit>-g<commit>`)."""
    return f"{VERSION}-t{commit_hash()}-g{commit_hash()}"


COMMANDS = {
    "debug": cmd_debug,
    "down": cmd_down,
    "logout": cmd_logout,
    "set": cmd_set,
    "status": cmd_status,
    "up": cmd_up,
    "version": cmd_version,
}


def main(argv: Sequence[str]) -> int:
    """Run one CLI command and return its exit code."""
    try:
        flags = parse_flags(argv, GLOBAL_FLAGS)
        if not flags.rest:
            raise CLIError(f"tailscale: no subcommand; one of: {', '.join(sorted(COMMANDS))}")
        name, *args = flags.rest
        command = COMMANDS.get(name)
        if command is None:
            raise CLIError(f"tailscale: unknown subcommand: {name}")
        return command(LocalClient(flags.string("socket", DEFAULT_SOCKET)), args)
    except CLIError as error:
        print(error, file=sys.stderr)
        return error.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
