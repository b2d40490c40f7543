"""The one seam between tsops and its hosts: run a command, with Fabric behind it.

Nothing else in tsops imports fabric or paramiko. Every command is one SSH exec channel (one
round trip), counted, so that tests and benchmarks can prove how many a flow needed.

Two paths, chosen per server by `connection.via` (tsops/context.py decides): `Remote`, OpenSSH
with keys and known_hosts through Fabric; and `TailnetRemote`, Tailscale SSH to the server's
tailnet address (tsops/tailnet_ssh.py opens it), where each command is a session the tailnet
policy can record. Both run the same scripts the same way (`sh -c`, `sudo -n` for a non-root
user). Files and secrets for a privileged step go through a `Stage`: a private directory the SSH
user owns, filled without sudo, consumed and removed by the privileged script.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tsops.errors import TsopsError
from tsops.hostkeys import HostKeyRefused, KnownHosts

if TYPE_CHECKING:
    from fabric import Connection
    from paramiko import Channel, SSHConfig, Transport

    from tsops.inventory.load import Target


# What a network or SSH failure raises: OSError covers DNS, refused, reset and timeouts;
# paramiko's SSHException covers keys, authentication and protocol errors; invoke's
# CommandTimedOut is a command that outlived COMMAND_TIMEOUT. Anything else is a bug.
COMMAND_TIMEOUT = 600
# Seconds each SSH wait may last (TCP connect, banner, key exchange, authentication, opening a
# channel), per hop: the inventory's `connection.ssh_timeout`, or `tsops --ssh-timeout`, which
# sets the override for the whole run.
DEFAULT_SSH_TIMEOUT = 10.0
ssh_timeout_override: float | None = None


_IMPORTING = threading.Lock()


def _import_ssh_libraries() -> None:
    """Import fabric (and with it paramiko and invoke) once, under a lock.

    Hosts are connected from several threads at once; two threads importing paramiko for the
    first time can see its modules half-initialised (its modules import each other), which
    fails with ImportError. One lock around the first import avoids that.
    """
    with _IMPORTING:
        import fabric  # noqa: F401
        import paramiko  # noqa: F401

        _quiet_paramiko()


def _quiet_paramiko() -> None:
    """Keep paramiko's log (tracebacks of its transport thread on a failed handshake) off the
    terminal: tsops reports each failure in one line. `tsops --debug` leaves it on."""
    import logging
    import os

    if os.environ.get("TSOPS_DEBUG", "") not in ("", "0"):
        return
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _connection_errors() -> tuple[type[BaseException], ...]:
    from invoke.exceptions import CommandTimedOut
    from paramiko.ssh_exception import SSHException

    return (OSError, EOFError, SSHException, CommandTimedOut)


class HostUnreachable(TsopsError):
    """A host could not be reached or refused us; `reason` is a short phrase for summaries."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class CommandFailed(TsopsError):
    """A remote command exited non-zero."""

    def __init__(self, host: str, what: str, result: RunResult) -> None:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        tail = detail[-1] if detail else "no output"
        super().__init__(f"{host}: {what} failed (exit {result.exited}): {tail}")
        self.host = host
        self.result = result


@dataclass(frozen=True)
class RunResult:
    """What one remote command gave back."""

    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.exited == 0


class RemoteLike(Protocol):
    """What tsops needs from a host connection: `Remote`, or a test's fake."""

    round_trips: int

    @property
    def name(self) -> str:
        """The inventory name of the host."""

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def close(self) -> None: ...


class Remote:
    """An SSH connection to one inventory host, opened on first use."""

    def __init__(self, target: Target, ssh_config: str | None = None,
                 timeout: float = DEFAULT_SSH_TIMEOUT) -> None:
        self.target = target
        self.ssh_config = ssh_config
        self.timeout = timeout
        self.round_trips = 0
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The inventory name of the host."""
        return self.target.name

    def run(self, script: str, *, stdin: str | None = None, privileged: bool = True) -> RunResult:
        """Run a shell script on the host in one round trip; `stdin` keeps secrets out of argv."""
        command = shell_command(self.target, script, privileged)
        connection = self._connect()
        self.round_trips += 1
        try:
            result = connection.run(
                command, hide=True, warn=True, in_stream=_stream(stdin), timeout=COMMAND_TIMEOUT
            )
        except _connection_errors() as error:
            raise HostUnreachable(self.name, describe_ssh_error(error)) from error
        return check_sudo(self.target, command, RunResult(result.exited, result.stdout,
                                                          result.stderr))

    def stream(self, script: str, *, privileged: bool = True,
               what: str = "a command") -> Iterator[bytes]:
        """Run a shell script in one round trip and yield its standard output as raw bytes
        while it runs (constant memory); CommandFailed when it exits non-zero.

        The connection opens now; the command starts when the first chunk is asked for, and a
        consumer that stops early closes the channel (the remote command then ends).
        """
        command = shell_command(self.target, script, privileged)
        connection = self._connect()
        transport = connection.client.get_transport()
        if transport is None:
            raise HostUnreachable(self.name, "the SSH connection is closed")
        self.round_trips += 1
        return stream_channel(self.name, transport, command, what, self.timeout)

    def put(self, local: Path, remote: str) -> None:
        """Copy a local file to the host as the SSH user (mode 0600), in one round trip.

        `remote` is a path the SSH user can write: a file in a `Stage`."""
        connection = self._connect()
        self.round_trips += 1
        try:
            connection.put(str(local), remote)
            connection.sftp().chmod(remote, 0o600)
        except _connection_errors() as error:
            raise HostUnreachable(self.name, describe_ssh_error(error)) from error

    def close(self) -> None:
        """Close the connection if one is open, and the jump hosts' behind it."""
        if self._connection is not None:
            hops = _hops(self._connection)
            self._connection.close()
            for hop, _ in hops[1:]:  # fabric closes only the last hop's
                hop.close()
            self._connection = None

    def _connect(self) -> Connection:
        _import_ssh_libraries()
        with self._lock:
            if self._connection is None:
                self._connection = self._open()
            return self._connection

    def _open(self) -> Connection:
        from fabric import Config, Connection

        target, timeout = self.target, self.timeout
        # Every hop (a ProxyJump chain from ssh_config, or `jump_host`) gets the same bounded
        # waits: fabric copies the config into the hops it makes for ProxyJump.
        waits = {"banner_timeout": timeout, "auth_timeout": timeout, "channel_timeout": timeout}
        overrides: dict[str, Any] = {"timeouts": {"connect": max(1, round(timeout))},
                                     "connect_kwargs": dict(waits)}
        config = (Config(ssh_config=parsed_ssh_config(self.ssh_config),
                         runtime_ssh_path=self.ssh_config, overrides=overrides)
                  if self.ssh_config else Config(overrides=overrides))
        connect_kwargs: dict[str, Any] = dict(waits)
        if target.identity_file:
            connect_kwargs["key_filename"] = str(Path(target.identity_file).expanduser())
        gateway = None
        if target.jump_host:
            gateway = Connection(target.jump_host, config=config)
        connection = Connection(
            target.address, user=target.user, port=target.port, config=config,
            connect_kwargs=connect_kwargs, connect_timeout=max(1, round(timeout)),
            gateway=gateway,
        )
        hops = _hops(connection)
        known = {id(hop): _check_host_keys(hop, label) for hop, label in hops}
        try:
            connection.open()
        except _connection_errors() as error:
            reason = self._failure(error, hops, known)
            _close_hops(hops)
            raise HostUnreachable(self.name, reason) from error
        except HostKeyRefused as refused:
            reason = self._not_contacted(str(refused), hops)
            _close_hops(hops)
            raise HostUnreachable(self.name, reason) from None
        return connection

    def _failure(self, error: BaseException, hops: list[tuple[Connection, str]],
                 known: dict[int, KnownHosts]) -> str:
        """The reason for a failed open, naming the hop that failed and what it waited for."""
        from paramiko.ssh_exception import BadHostKeyException

        failed = _failed_hop(hops)
        label = failed[1] if failed is not None else ""
        if isinstance(error, BadHostKeyException):
            hop_known = known.get(id(failed[0])) if failed is not None else None
            return self._not_contacted(_changed_key(error, failed, hop_known), hops)
        reason = describe_ssh_error(error, self.timeout, _waited_for(failed))
        if failed is not None and reason.startswith(("timed out", "no ")):
            reason += f" (at {failed[0].host}:{failed[0].port})"
        if failed is not None and failed[0] is not hops[0][0]:
            return self._not_contacted(f"{label}: {reason}", hops)
        return reason

    def _not_contacted(self, reason: str, hops: list[tuple[Connection, str]]) -> str:
        """`reason`, and that the target was not contacted when a jump host failed first."""
        if len(hops) > 1 and hops[0][0].client.get_transport() is None:
            return f"{reason}; {self.name} was not contacted"
        return reason


def _hops(connection: Connection) -> list[tuple[Connection, str]]:
    """The connection and each Connection gateway behind it, with their labels for messages."""
    from fabric import Connection

    hops: list[tuple[Connection, str]] = [(connection, "")]
    hop = connection.gateway
    while isinstance(hop, Connection):
        hops.append((hop, f"jump host {hop.host}"))
        hop = hop.gateway
    return hops


def _check_host_keys(hop: Connection, label: str) -> KnownHosts:
    """Set up `hop` to check its server's key against the known_hosts its ssh_config names:
    the hop's plain keys in paramiko's memory (never saved: paramiko would rewrite the file),
    and tsops.hostkeys's policy for the rest (unknown, revoked, CA-only, accept-new)."""
    import base64

    from paramiko import MissingHostKeyPolicy, PKey

    from tsops import hostkeys

    user_files, global_files = hostkeys.files_from_config(hop.ssh_config)
    known = hostkeys.KnownHosts.read(user_files, global_files)
    name = hostkeys.lookup_name(hop.host, hop.port)
    keys = hop.client.get_host_keys()
    for entry in known.keys_for(name):
        try:
            key = PKey.from_type_string(entry.keytype, base64.b64decode(entry.key))
        except Exception:  # noqa: S112 (a key type paramiko cannot read: ssh skips it too)
            continue
        keys.add(name, entry.keytype, key)
    config = hop.ssh_config
    strict = str(config.get("stricthostkeychecking", "yes")).lower()
    hashed = str(config.get("hashknownhosts", "no")).lower() == "yes"
    decider = hostkeys.HostKeyPolicy(known, label or hop.host, strict in hostkeys.ACCEPT_NEW,
                                     hashed)

    class Policy(MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            decider.missing_host_key(client, hostname, key)

    hop.client.set_missing_host_key_policy(Policy())
    return known


def _close_hops(hops: list[tuple[Connection, str]]) -> None:
    for hop, _ in hops:
        with contextlib.suppress(Exception):  # closing after a failure: nothing to report
            hop.client.close()


def _failed_hop(hops: list[tuple[Connection, str]]) -> tuple[Connection, str] | None:
    """The innermost hop not connected: the first one tsops was waiting for."""
    for hop, label in reversed(hops):
        if not hop.is_connected:
            return hop, label
    return None


def _waited_for(failed: tuple[Connection, str] | None) -> str:
    """What the failed hop's transport was waiting for: connect, banner, key exchange or
    authentication."""
    if failed is None:
        return ""
    transport = failed[0].client.get_transport()
    if transport is None:
        return "the TCP connection"
    if not getattr(transport, "remote_version", ""):
        return "the SSH banner"
    if not transport.is_authenticated() and transport.host_key is not None:
        return "authentication"
    return "the key exchange"


def _changed_key(error: Any, failed: tuple[Connection, str] | None,
                 known: KnownHosts | None) -> str:
    """The one line for a key that differs from the known one (or is revoked)."""
    import base64

    from tsops import hostkeys

    offered = error.key
    blob = offered.asbytes()
    who = failed[1] if failed is not None and failed[1] else error.hostname

    revoked = known.revoked(base64.b64encode(blob).decode()) if known is not None else None
    if revoked is not None:
        return (f"{who}: its {offered.get_name()} key {hostkeys.fingerprint(blob)} is revoked "
                f"({revoked.where}): refusing to connect")
    expected = error.expected_key
    return (f"{who}: host key changed: it offered {offered.get_name()} key "
            f"{hostkeys.fingerprint(blob)}, known_hosts has {expected.get_name()} key "
            f"{hostkeys.fingerprint(expected.asbytes())}: refusing to connect (if the change "
            "is expected, replace the old key in known_hosts)")


STREAM_STDERR_KEPT = 64 * 1024


def stream_channel(host: str, transport: Transport, command: str, what: str,
                   timeout: float) -> Iterator[bytes]:
    """One exec channel whose standard output is yielded as it arrives (see Remote.stream).

    A silence of COMMAND_TIMEOUT seconds ends it; standard error is kept (its first 64 KiB)
    for the message of a non-zero exit.
    """
    import paramiko

    errors = (paramiko.SSHException, OSError, EOFError)
    try:
        channel = transport.open_session(timeout=timeout)
    except errors as error:
        raise HostUnreachable(host, f"cannot open an SSH channel: "
                              f"{error or type(error).__name__}") from error
    err = bytearray()

    def keep_stderr() -> None:
        while channel.recv_stderr_ready():
            data = channel.recv_stderr(UPLOAD_CHUNK)
            if len(err) < STREAM_STDERR_KEPT:
                err.extend(data)

    try:
        channel.settimeout(COMMAND_TIMEOUT)
        channel.exec_command(command)
        channel.shutdown_write()
        while data := channel.recv(UPLOAD_CHUNK):
            keep_stderr()
            yield data
        while data := channel.recv_stderr(UPLOAD_CHUNK):
            if len(err) < STREAM_STDERR_KEPT:
                err.extend(data)
        status = channel.recv_exit_status()
    except TimeoutError:  # socket.timeout: no output for COMMAND_TIMEOUT seconds
        raise HostUnreachable(host, f"{what} sent nothing for {COMMAND_TIMEOUT} s") from None
    except errors as error:
        raise HostUnreachable(host, f"the SSH channel was cut: "
                              f"{error or type(error).__name__}") from error
    finally:
        channel.close()
    if status != 0:
        raise CommandFailed(host, what, RunResult(status, "", err.decode(errors="replace")))


_SSH_CONFIGS: dict[tuple[str, int, int], SSHConfig] = {}
_SSH_CONFIGS_LOCK = threading.Lock()


def parsed_ssh_config(path: str) -> SSHConfig:
    """The inventory's ssh_config file, parsed once and shared by every connection of the run.

    Fabric parses the file again for each Connection given only its path: with one Host block
    per server, every host paid for the whole fleet's file (8 ms a host at 200 hosts, quadratic
    in all). paramiko only reads a parsed SSHConfig (`lookup`), so threads can share one. A
    file changed since it was parsed (its size or mtime) is parsed again.
    """
    from paramiko import SSHConfig

    expanded = Path(path).expanduser()
    stat = expanded.stat()  # missing: FileNotFoundError, as Fabric raises
    key = (str(expanded), stat.st_mtime_ns, stat.st_size)
    with _SSH_CONFIGS_LOCK:
        parsed = _SSH_CONFIGS.get(key)
        if parsed is None:
            parsed = _SSH_CONFIGS[key] = SSHConfig.from_path(str(expanded))
        return parsed


def shell_command(target: Target, script: str, privileged: bool) -> str:
    """The exec command for `script`: `sh -c`, under `sudo -n` for a privileged step of a
    non-root user with `sudo: true`."""
    command = f"sh -c {shlex.quote(script)}"
    if privileged and target.sudo and target.user != "root":
        command = f"sudo -n {command}"
    return command


def upload_script(remote: str) -> str:
    """Write standard input to `remote`, owner-only (0600) from its first byte."""
    path = shlex.quote(remote)
    return f"set -e\numask 077\ncat > {path}\nchmod 600 {path}\n"


class SudoNeedsPassword(HostUnreachable):
    """sudo asked for a password: tsops never types one (it runs `sudo -n`)."""


SUDO_ASKS = ("a password is required", "a terminal is required")


def check_sudo(target: Target, command: str, result: RunResult) -> RunResult:
    """`result`, unless `command` went through `sudo -n` and sudo refused for want of a
    password: then SudoNeedsPassword, one line saying what to do (nothing ran)."""
    if (command.startswith("sudo -n ") and result.exited == 1
            and any(ask in result.stderr for ask in SUDO_ASKS)
            and result.stderr.lstrip().startswith("sudo:")):
        raise SudoNeedsPassword(target.name, (
            f"sudo asks {target.user} for a password; tsops runs privileged steps with "
            f"`sudo -n` and never types one: give {target.user} passwordless sudo (NOPASSWD) "
            "or connect as root (see docs/servers.md, \"SSH users and sudo\")"))
    return result


# On the host, made by `mktemp -d` (a fresh name, 0700, never an existing path).
STAGE_PREFIX = "/tmp/tsops-stage."  # noqa: S108
STAGE_VARIABLE = "stage"  # the privileged script finds its staged files in "$stage"


def stage_script(names: Iterable[str]) -> str:
    """Run as the SSH user (no sudo): make a private directory (0700), write each line of
    standard input (base64) as the 0600 file of the same position in `names`, print its path.

    A secret arrives on this script's own standard input: never on argv, never on sudo's (which
    sudo's I/O logging records). `printf` is a shell builtin: the value reaches no argv.
    """
    lines = ["set -eu", "umask 077", f"d=$(mktemp -d {STAGE_PREFIX}XXXXXXXXXX)",
             "chmod 700 \"$d\""]
    for name in names:
        lines.append(f"IFS= read -r v; printf %s \"$v\" | base64 -d > \"$d\"/{shlex.quote(name)}")
    lines.append("printf '%s\\n' \"$d\"")
    return "\n".join(lines) + "\n"


def staged_script(stage: str, script: str) -> str:
    """`script` run privileged with `$stage` naming the staging directory, which is removed
    when it ends, whether it succeeded or failed (in the same round trip)."""
    return (f"{STAGE_VARIABLE}={shlex.quote(stage)}\nexport {STAGE_VARIABLE}\n"
            f"trap 'rm -rf -- \"${STAGE_VARIABLE}\"' EXIT\n"
            "trap 'exit 129' HUP\ntrap 'exit 130' INT\ntrap 'exit 143' TERM\n"
            f"sh -c {shlex.quote(script)}\n")


def discard_script(stage: str) -> str:
    """Remove a staging directory as its owner (after a step that could not remove it)."""
    return f"rm -rf -- {shlex.quote(stage)}\n"


class Stage:
    """A private directory the SSH user owns on one host, for one privileged step's files.

    On entering: one round trip (no sudo) makes it 0700 and writes `texts` (secrets too: they
    arrive on that unprivileged command's standard input) as 0600 files, then each of `files`
    is uploaded into it as the SSH user (one round trip each). `run` runs the privileged
    script that consumes them; the directory is gone when it ends, succeeded or failed. Left
    any other way (an upload failed, sudo refused, the connection dropped), the directory is
    removed as its owner on leaving, if the host still answers.
    """

    def __init__(self, remote: RemoteLike, texts: Mapping[str, str] | None = None,
                 files: Mapping[str, Path] | None = None) -> None:
        self.remote = remote
        self.texts = dict(texts or {})
        self.files = dict(files or {})
        self.path: str | None = None
        self.removed = False

    def __enter__(self) -> Stage:
        names = list(self.texts)
        feed = "".join(base64.b64encode(self.texts[name].encode()).decode() + "\n"
                       for name in names)
        made = self.remote.run(stage_script(names), stdin=feed, privileged=False)
        path = made.stdout.strip()
        if not made.ok or not path.startswith(STAGE_PREFIX) or "\n" in path:
            raise CommandFailed(self.remote.name, "making a private staging directory", made)
        self.path = path
        try:
            for name, local in self.files.items():
                self.remote.put(local, f"{path}/{name}")
        except BaseException:
            self._discard()
            raise
        return self

    def run(self, script: str, *, surviving_restart: bool = False) -> RunResult:
        """Run `script` privileged (one round trip); it finds its files in `$stage`, and the
        directory is removed when it ends. `surviving_restart`: see run_surviving_restart."""
        assert self.path is not None, "Stage.run outside its with block"
        wrapped = staged_script(self.path, script)
        result = (run_surviving_restart(self.remote, wrapped) if surviving_restart
                  else self.remote.run(wrapped))
        self.removed = result.ok
        return result

    def __exit__(self, *exc: object) -> None:
        if not self.removed:
            self._discard()

    def _discard(self) -> None:
        if self.path is None or self.removed:
            return
        with contextlib.suppress(TsopsError):  # a host that no longer answers: left as is
            self.remote.run(discard_script(self.path), privileged=False)
        self.removed = True


UPLOAD_CHUNK = 64 * 1024
IDLE_WAIT_S = 0.01
# A step that restarts tailscaled (a Tailscale upgrade) runs in a transient unit of its own;
# tsops waits for it in sessions of at most DETACHED_WAIT_S seconds each, reconnecting after
# the restart cut one (RECONNECT_WAIT_S between tries), for at most COMMAND_TIMEOUT in all.
DETACHED_WAIT_S = 20
WAIT_MARGIN_S = 40  # beyond DETACHED_WAIT_S, before a silent wait session counts as cut
RECONNECT_WAIT_S = 1.0
STILL_RUNNING = "tsops-detached: still running"
KILLED_STATUS = 4294967295  # Tailscale SSH's exit status for a session it killed (Go's -1)


def detach_script(unit: str, script: str, delay_s: int = 0) -> str:
    """Start `script` as the transient unit `unit` (`delay_s` seconds from now), its output and
    exit status into /run/tsops/UNIT."""
    folder = f"/run/tsops/{unit}"
    end = f"TSOPS_END_{unit.rsplit('-', 1)[-1]}"
    later = f" --on-active={delay_s}s" if delay_s else ""
    return (f"set -eu\numask 077\nmkdir -p /run/tsops\nmkdir {folder}\n"
            f"cat > {folder}/script <<'{end}'\n{script}\n{end}\n"
            f"systemd-run --quiet --collect --unit={unit}{later} sh -c "
            "'sh \"$0/script\" > \"$0/log\" 2>&1; echo $? > \"$0/rc.part\"; "
            f"mv \"$0/rc.part\" \"$0/rc\"' {folder}\n")


def wait_script(unit: str) -> str:
    """Wait a while for the unit of `detach_script`: its output and exit status, or
    STILL_RUNNING."""
    folder = f"/run/tsops/{unit}"
    return (f"d={folder}\ni=0\n"
            f"while [ ! -e \"$d/rc\" ] && [ $i -lt {DETACHED_WAIT_S} ]; do sleep 1; "
            "i=$((i+1)); done\n"
            f"if [ ! -e \"$d/rc\" ]; then echo '{STILL_RUNNING}'; exit 0; fi\n"
            "cat \"$d/log\"\nrc=$(cat \"$d/rc\")\nrm -rf \"$d\"\nexit \"$rc\"\n")


LEAVE_DELAY_S = 5  # the session that starts a logout ends well before the logout runs


def run_leaving_tailnet(remote: RemoteLike, script: str) -> tuple[RunResult, str | None]:
    """Run a script that takes the host off the tailnet (logout, uninstall), and a note on how
    its end was seen (None: as any command's).

    Over Tailscale SSH the logout stops the very server the session runs on, half-way through
    the script: there it runs in a transient unit started a few seconds after this session,
    and tsops watches it until either the unit's result comes back or Tailscale SSH stops
    answering, which is the node leaving the tailnet. Over OpenSSH it simply runs.
    """
    if isinstance(remote, TailnetRemote):
        return remote.run_leaving(script)
    return remote.run(script), None


def run_surviving_restart(remote: RemoteLike, script: str) -> RunResult:
    """Run a script that may restart tailscaled (a package upgrade) so that it finishes.

    Over Tailscale SSH the session's processes belong to tailscaled: its restart would kill
    the upgrade half-way. There the script runs in a transient systemd unit, outside
    tailscaled, and tsops waits for it, reconnecting when the restart cuts the session. Over
    OpenSSH it simply runs.
    """
    if isinstance(remote, TailnetRemote):
        return remote.run_detached(script)
    return remote.run(script)


class TailnetRemote:
    """A Tailscale SSH connection to one server's tailnet address, opened on first use.

    Tailscale SSH lets tsops in by the control machine's tailnet identity (an ssh rule must
    admit it as the connection user); each command is a session of its own, recorded when the
    rule says so. Uploads go over an exec channel's stdin, never SFTP: Tailscale SSH does not
    record SFTP (and the lab's server has none).
    """

    def __init__(self, target: Target, address: str, timeout: float = DEFAULT_SSH_TIMEOUT,
                 port: int = 22) -> None:
        self.target = target
        self.address = address
        self.timeout = timeout
        self.port = port
        self.round_trips = 0
        self._transport: Transport | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The inventory name of the host."""
        return self.target.name

    def run(self, script: str, *, stdin: str | None = None, privileged: bool = True) -> RunResult:
        """Run a shell script on the host in one session; `stdin` keeps secrets out of argv."""
        data = [stdin.encode()] if stdin is not None else []
        command = shell_command(self.target, script, privileged)
        return check_sudo(self.target, command, self._exec(command, data))

    def _wait_for(self, unit: str) -> RunResult:
        """One session of waiting for a detached unit (bounded: its peer may vanish)."""
        return self._exec(shell_command(self.target, wait_script(unit), True), [],
                          timeout=DETACHED_WAIT_S + WAIT_MARGIN_S)

    def run_detached(self, script: str) -> RunResult:
        """Run `script` as root in a transient unit and wait for it across reconnections."""
        import secrets

        unit = f"tsops-step-{secrets.token_hex(6)}"
        started = self.run(detach_script(unit, script))
        if not started.ok:
            return started
        deadline = time.monotonic() + COMMAND_TIMEOUT
        cut = ""
        while time.monotonic() < deadline:
            try:
                result = self._wait_for(unit)
            except HostUnreachable as error:
                cut = error.reason  # tailscaled restarting: its address and SSH come back
                time.sleep(RECONNECT_WAIT_S)
                continue
            if result.exited == KILLED_STATUS:
                cut = "the session was ended"
                time.sleep(RECONNECT_WAIT_S)
                continue
            if result.ok and result.stdout.strip() == STILL_RUNNING:
                continue
            return result
        raise HostUnreachable(self.name, (
            f"the step running as {unit} did not finish within {COMMAND_TIMEOUT} s"
            + (f" (last: {cut})" if cut else "") + "; see /run/tsops/ on the host"))

    def run_leaving(self, script: str) -> tuple[RunResult, str | None]:
        """Run a script that logs the node out, in a delayed transient unit; see
        run_leaving_tailnet."""
        import secrets

        unit = f"tsops-step-{secrets.token_hex(6)}"
        try:
            started = self.run(detach_script(unit, script, LEAVE_DELAY_S))
        except HostUnreachable:
            started = None  # cut at the very end: the unit may well be started; look below
        if started is not None and not started.ok:
            return started, None
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            try:
                result = self._wait_for(unit)
            except HostUnreachable as error:
                cut = error.reason
            else:
                if result.ok and result.stdout.strip() == STILL_RUNNING:
                    continue
                if result.exited != KILLED_STATUS:
                    return result, None
                cut = "the session was ended"
            self.close()
            try:  # gone for good, or only the session was cut?
                time.sleep(RECONNECT_WAIT_S)
                self._connect()
            except HostUnreachable as error:
                return RunResult(0, "", ""), (
                    f"started as {unit}; then Tailscale SSH ended ({cut}) and stopped answering "
                    f"({error.reason}): the node left the tailnet; its output is in "
                    f"/run/tsops/{unit}/ on the host")
        raise HostUnreachable(self.name, f"the step running as {unit} did not end within "
                              f"{COMMAND_TIMEOUT} s; see /run/tsops/ on the host")

    def put(self, local: Path, remote: str) -> None:
        """Copy a local file to the host as the SSH user (mode 0600) through one session's
        stdin, never through sudo: `remote` is a file in a `Stage`."""
        try:
            stream = local.open("rb")
        except OSError as error:
            raise TsopsError(f"cannot read {local}: {error.strerror}") from error
        with stream:
            chunks = iter(lambda: stream.read(UPLOAD_CHUNK), b"")
            result = self._exec(shell_command(self.target, upload_script(remote), False), chunks)
        if not result.ok:
            raise CommandFailed(self.name, f"copying {local.name} to {remote}", result)

    def close(self) -> None:
        """Close the connection if one is open."""
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _connect(self) -> Transport:
        _import_ssh_libraries()
        from tsops.tailnet_ssh import Refused, open_transport

        with self._lock:
            if self._transport is None or not self._transport.is_active():
                try:
                    self._transport = open_transport(self.address, self.target.user,
                                                     self.timeout, self.port)
                except Refused as refused:
                    raise HostUnreachable(self.name, self._refusal(refused)) from None
            return self._transport

    def _refusal(self, refused: Any) -> str:
        """The one line an operator reads when Tailscale SSH would not let tsops in."""
        user, identity = self.target.user, self.target.tailnet_identity or "this machine"
        if refused.banner:
            return (f"Tailscale SSH at {self.address} refused {user}: {refused.banner} (no ssh "
                    f"rule admits tsops's identity {identity} as {user} with action accept? "
                    "see docs/tailnet-management.md)")
        return f"Tailscale SSH as {user}: {refused.reason}"

    def _exec(self, command: str, stdin: Iterable[bytes],
              timeout: float = COMMAND_TIMEOUT) -> RunResult:
        """One exec channel: send stdin (from a thread), read both outputs, the exit status.

        `timeout` bounds the whole command: a connection whose peer vanished without a word
        (its tailnet address removed) would otherwise hang until TCP gives up."""
        transport = self._connect()
        import paramiko

        self.round_trips += 1
        problems: list[BaseException] = []
        try:
            channel = transport.open_session(timeout=self.timeout)
            channel.exec_command(command)

            def feed() -> None:
                try:
                    for chunk in stdin:
                        channel.sendall(chunk)
                    channel.shutdown_write()
                except (paramiko.SSHException, OSError, EOFError) as error:
                    problems.append(error)

            writer = threading.Thread(target=feed, name=f"stdin-{self.name}", daemon=True)
            writer.start()
            out, err = _drain(channel, timeout)
            writer.join(self.timeout)
            status = channel.recv_exit_status() if channel.exit_status_ready() else -1
            channel.close()
        except TimeoutError:  # before OSError, its base class
            self.close()
            raise HostUnreachable(self.name, f"a command ran longer than {timeout:.0f} s "
                                  "and was stopped") from None
        except (paramiko.SSHException, OSError, EOFError) as error:
            self.close()  # the next command connects again
            raise HostUnreachable(self.name, f"the Tailscale SSH session was cut: "
                                  f"{error or type(error).__name__}") from error
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if status == -1:  # paramiko: the channel closed without an exit status
            self.close()
            tail = (stderr.strip() or stdout.strip()).splitlines()
            raise HostUnreachable(self.name, (
                "the Tailscale SSH session ended without an exit status (tailscaled restarted "
                "or the recording failed)" + (f": {tail[-1]}" if tail else "")))
        if problems and status != 0:
            raise HostUnreachable(self.name, f"sending input over Tailscale SSH failed: "
                                  f"{problems[0] or type(problems[0]).__name__}")
        return RunResult(status, stdout, stderr)


def _drain(channel: Channel, timeout: float) -> tuple[bytearray, bytearray]:
    """Read stdout and stderr until the command exits; TimeoutError after `timeout` seconds."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        if channel.recv_ready():
            out += channel.recv(UPLOAD_CHUNK)
            busy = True
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(UPLOAD_CHUNK)
            busy = True
        if busy:
            continue
        # EOF comes after the last byte of both streams; a closed channel has nothing more.
        if channel.closed or (channel.eof_received and channel.exit_status_ready()):
            return out, err
        if time.monotonic() > deadline:
            channel.close()
            raise TimeoutError
        time.sleep(IDLE_WAIT_S)


def _stream(stdin: str | None) -> Any:
    """An input stream for invoke: the given text, or none (never our own terminal)."""
    if stdin is None:
        return False
    import io

    return io.StringIO(stdin)


def describe_ssh_error(error: BaseException, timeout: float | None = None,
                       waited_for: str = "") -> str:
    """Turn a connection failure into the short reason an operator reads in a summary.

    `timeout` is the bounded wait that applied and `waited_for` what was awaited (the TCP
    connection, the SSH banner, the key exchange, authentication), when known."""
    from invoke.exceptions import CommandTimedOut
    from paramiko.ssh_exception import (
        AuthenticationException,
        BadHostKeyException,
        NoValidConnectionsError,
        SSHException,
    )

    within = f" within {timeout:g} s" if timeout is not None else ""
    text = str(error).lower()
    if isinstance(error, CommandTimedOut):
        return f"a command ran longer than {COMMAND_TIMEOUT} s and was stopped"
    if isinstance(error, BadHostKeyException):
        return (f"host key changed for {error.hostname}: refusing to connect (if the change "
                "is expected, remove the old key from known_hosts)")
    if isinstance(error, AuthenticationException) and "timeout" in text:
        return f"no answer to authentication{within}"
    if isinstance(error, AuthenticationException):
        return "authentication failed"
    if isinstance(error, socket.gaierror):
        return f"DNS: cannot resolve the address ({error.strerror})"
    if isinstance(error, NoValidConnectionsError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, SSHException) and "protocol banner" in text:
        return f"timed out{within} waiting for the SSH banner"
    # paramiko's handshake wait ends quietly at its timeout; the next call then finds "no
    # existing session".
    if isinstance(error, TimeoutError | socket.timeout) or (isinstance(error, SSHException) and (
            "timed out" in text or "no existing session" in text)):
        return f"timed out{within} waiting for {waited_for or 'an answer'}"
    if isinstance(error, SSHException) and "not found in known_hosts" in text:
        return "unknown host key: not in known_hosts (connect once with ssh to verify it)"
    if isinstance(error, EOFError) or (isinstance(error, SSHException) and "eof" in text):
        return f"the connection was closed while waiting for {waited_for or 'an answer'}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return f"{type(error).__name__}: {error}"
