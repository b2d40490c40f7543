"""OpenSSH exposure: what sshd listens on, what the inventory wants, and the guarded change.

Facts come from the servers' single fact probe (its `sshd_*` sections); everything here except
the scripts' execution is pure. A change is one sshd_config drop-in (`DROPIN`) plus, for `off`,
ssh.service and ssh.socket stopped and disabled. Every change is armed with a dead-man revert on
the host (a transient systemd timer) before it is made and disarmed only over a new connection;
docs/openssh.md tells the story.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field
from shlex import quote
from typing import Any

from tsops.inventory.model import OpenSSH, split_listen_address

DROPIN = "/etc/ssh/sshd_config.d/tsops-openssh.conf"
STATE_DIR = "/var/lib/tsops/openssh"
UNIT_PREFIX = "tsops-openssh-revert-"
HEADER = "# Written by tsops (openssh mode {mode}); tsops replaces it: see docs/openssh.md.\n"
DISARMED = "disarmed"
WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104 (what sshd reports, not a bind)

PROBE_SECTIONS = rf"""
section sshd_sockets
command -v ss >/dev/null 2>&1 && {{ echo ss; ss -Hltnp 2>/dev/null | grep -F '(("sshd"'; }}
section sshd_units
for u in ssh.service ssh.socket; do
  printf '%s %s %s\n' "$u" "$(systemctl is-active "$u" 2>/dev/null)" \
    "$(systemctl is-enabled "$u" 2>/dev/null)"
done
section sshd_dropin; [ -e {DROPIN} ] && {{ echo present; cat {DROPIN}; }}
section sshd_config_listen
grep -HinE '^[[:space:]]*ListenAddress[[:space:]]' /etc/ssh/sshd_config \
  /etc/ssh/sshd_config.d/*.conf 2>/dev/null
section sshd_ports; /usr/sbin/sshd -T 2>/dev/null | grep -E '^port '
section sshd_include
if grep -qiE '^[[:space:]]*Include[[:space:]]+(/etc/ssh/)?sshd_config\.d/\*\.conf' \
  /etc/ssh/sshd_config 2>/dev/null; then echo yes; else echo no; fi
section sshd_revert
for a in {STATE_DIR}/*.armed; do
  [ -e "$a" ] || continue
  t=$(basename "$a" .armed)
  printf '%s %s\n' "$t" "$(systemctl is-active {UNIT_PREFIX}"$t".timer 2>/dev/null)"
done
"""
"""The probe's part for OpenSSH (appended to tsops.servers.facts.PROBE; no extra round trip)."""


@dataclass(frozen=True, order=True)
class Listener:
    """One listening TCP socket: an address (`0.0.0.0`/`::` for every address) and a port."""

    address: str
    port: int

    @property
    def wildcard(self) -> bool:
        """Whether it listens on every address of its family."""
        return self.address in WILDCARDS

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def described(self) -> str:
        """`10.0.0.5:22`, or `all IPv4 addresses (0.0.0.0:22)` for a wildcard."""
        if not self.wildcard:
            return str(self)
        family = "IPv6" if ":" in self.address else "IPv4"
        return f"all {family} addresses ({self})"


@dataclass(frozen=True)
class ConfigListen:
    """A `ListenAddress` line of sshd's configuration outside tsops's drop-in."""

    file: str
    line: int
    value: str


@dataclass(frozen=True)
class SshdFacts:
    """What the probe found about sshd (listeners None: `ss` missing, or not probed)."""

    listeners: tuple[Listener, ...] | None
    service_active: str = ""
    service_enabled: str = ""
    socket_active: str = ""
    socket_enabled: str = ""
    dropin: str | None = None
    config_listen: tuple[ConfigListen, ...] = ()
    ports: tuple[int, ...] = (22,)
    armed: tuple[tuple[str, str], ...] = ()
    includes_dropins: bool | None = None


@dataclass(frozen=True)
class Exposure:
    """How a server's OpenSSH compares with its `openssh` setting, and the change, if any."""

    mode: str
    listening: tuple[str, ...]
    wanted: tuple[str, ...] = ()
    change: str | None = None
    problem: str | None = None
    unrecorded: tuple[str, ...] = field(default=())

    @property
    def matches(self) -> bool:
        """Whether the host is as its setting asks."""
        return self.change is None and self.problem is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (plan and status `-o json`)."""
        return {"mode": self.mode, "listening": list(self.listening),
                "wanted": list(self.wanted), "matches": self.matches, "change": self.change,
                "problem": self.problem, "unrecorded": list(self.unrecorded)}


def parse_sshd(parts: dict[str, str]) -> SshdFacts:
    """The `sshd_*` sections of the probe's output; listeners None when `ss` is missing."""
    sockets = parts.get("sshd_sockets", "").splitlines()
    listeners = None
    if sockets[:1] == ["ss"]:
        listeners = tuple(sorted({x for x in map(_listener, sockets[1:]) if x is not None}))
    units = {words[0]: [*words[1:], "", ""] for words in
             (line.split() for line in parts.get("sshd_units", "").splitlines()) if words}
    service, socket = units.get("ssh.service", ["", ""]), units.get("ssh.socket", ["", ""])
    dropin_lines = parts.get("sshd_dropin", "").splitlines()
    dropin = "\n".join(dropin_lines[1:]) if dropin_lines[:1] == ["present"] else None
    config = []
    for line in parts.get("sshd_config_listen", "").splitlines():
        path, _, rest = line.partition(":")
        number, _, text = rest.partition(":")
        words = text.split()
        if path != DROPIN and number.isdigit() and len(words) >= 2:
            config.append(ConfigListen(path, int(number), words[1]))
    ports = tuple(int(w[1]) for w in (line.split() for line in
                                      parts.get("sshd_ports", "").splitlines())
                  if len(w) == 2 and w[0] == "port" and w[1].isdigit())
    armed = tuple((w[0], w[1] if len(w) > 1 else "") for w in (
        line.split() for line in parts.get("sshd_revert", "").splitlines()) if w)
    include = parts.get("sshd_include", "")
    return SshdFacts(listeners, service[0], service[1], socket[0], socket[1], dropin,
                     tuple(config), ports or (22,), armed,
                     True if include == "yes" else False if include == "no" else None)


def _listener(line: str) -> Listener | None:
    words = line.split()
    if len(words) < 4:
        return None
    local = words[3]
    host, _, port = local.rpartition(":")
    if not port.isdigit():
        return None
    host = host.strip("[]").partition("%")[0]
    if host == "*":
        host = "::"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return Listener(address.compressed, int(port))


def render_dropin(openssh: OpenSSH) -> str | None:
    """The drop-in for a setting (None for `keep`: tsops's drop-in must not exist)."""
    if openssh.mode == "keep":
        return None
    text = HEADER.format(mode=openssh.mode)
    if openssh.mode == "off":
        return text + "# ssh.service (and ssh.socket) are stopped and disabled by tsops.\n"
    return text + "".join(f"ListenAddress {address}\n" for address in openssh.listen)


def wanted_listeners(openssh: OpenSSH, ports: tuple[int, ...]) -> tuple[Listener, ...]:
    """The sockets sshd should have for `restrict`: each address on its port, or every Port."""
    found = set()
    for value in openssh.listen:
        parts = split_listen_address(value)
        assert parts is not None
        host, port = parts
        address = ipaddress.ip_address(host).compressed
        for number in ([int(port)] if port else ports):
            found.add(Listener(address, number))
    return tuple(sorted(found))


def assess(openssh: OpenSSH, sshd: SshdFacts) -> Exposure:
    """Compare sshd with the setting: the sentences to report, the change, or a problem."""
    mode = openssh.mode
    listening = () if sshd.listeners is None else tuple(x.described for x in sshd.listeners)
    unrecorded = tuple(f"OpenSSH reachable on {x}: unrecorded path" for x in listening)
    base = Exposure(mode, listening, unrecorded=unrecorded)
    if sshd.armed:
        token, timer = sshd.armed[0]
        problem = (f"a tsops dead-man revert ({UNIT_PREFIX}{token}) is still armed: an earlier "
                   "run did not confirm its OpenSSH change; it reverts within its window, "
                   "rerun then" if timer == "active" else
                   f"an earlier OpenSSH change (token {token}) was never confirmed and its "
                   "revert timer is gone (a reboot?): check sshd on the host, then remove "
                   f"{STATE_DIR}/{token}.*")
        return _with(base, problem=problem)
    rendered = render_dropin(openssh)
    if mode == "keep" and sshd.dropin is None:
        return base
    if sshd.listeners is None:
        return _with(base, problem="cannot see sshd's listening sockets (`ss` is not installed)")
    if mode == "keep":
        was_off = sshd.dropin is not None and "mode off)" in sshd.dropin
        return _with(base, change=f"remove tsops's sshd drop-in {DROPIN} and "
                     + ("enable and start ssh.service" if was_off else "restart sshd"))
    if mode == "off":
        off = sshd.dropin == (rendered or "").rstrip("\n") and not listening \
            and sshd.service_active != "active" and sshd.service_enabled != "enabled" \
            and sshd.socket_active != "active" and sshd.socket_enabled != "enabled"
        return base if off else _with(
            base, change="stop and disable sshd (ssh.service and ssh.socket); Tailscale SSH "
                         "stays the only way in")
    wanted = wanted_listeners(openssh, sshd.ports)
    restricted = Exposure(mode, listening, tuple(str(x) for x in wanted), unrecorded=unrecorded)
    if sshd.includes_dropins is False:
        return _with(restricted, problem="/etc/ssh/sshd_config has no `Include "
                     "/etc/ssh/sshd_config.d/*.conf`, so tsops's drop-in would have no effect; "
                     "add that line at its top")
    if sshd.socket_active == "active" or sshd.socket_enabled == "enabled":
        return _with(restricted, problem="sshd is socket-activated (ssh.socket): its addresses "
                     "come from the socket unit, not from ListenAddress; switch to ssh.service "
                     "(systemctl disable --now ssh.socket; systemctl enable --now ssh.service)")
    for line in sshd.config_listen:
        extra = sorted(set(_config_listeners(line.value, sshd.ports)) - set(wanted))
        if extra:
            return _with(restricted, problem=(
                f"{line.file}:{line.line} has `ListenAddress {line.value}`, so sshd also "
                f"listens on {extra[0]}, which a drop-in cannot take away (sshd adds every "
                "ListenAddress up): remove that line or list that address"))
    current = tuple(sshd.listeners)
    if sshd.dropin == (rendered or "").rstrip("\n") and current == wanted \
            and sshd.service_active == "active":
        return restricted
    listed = ", ".join(openssh.listen)
    return _with(restricted, change=f"restrict sshd to {listed} (drop-in {DROPIN}, checked with "
                                    "sshd -t, then sshd restarted)")


def _config_listeners(value: str, ports: tuple[int, ...]) -> list[Listener]:
    """The sockets one `ListenAddress` line gives (a host name: as written, never matching)."""
    parts = split_listen_address(value)
    host, port = parts if parts is not None else (value, "")
    with contextlib.suppress(ValueError):
        host = ipaddress.ip_address(host).compressed
    numbers = [int(port)] if port.isdigit() else list(ports)
    return [Listener(host, number) for number in numbers]


def _with(exposure: Exposure, *, change: str | None = None,
          problem: str | None = None) -> Exposure:
    return Exposure(exposure.mode, exposure.listening, exposure.wanted, change, problem,
                    exposure.unrecorded)


def state_path(token: str) -> str:
    """Where a change's revert files live on the host (`<path>.armed`, `.prev`, ...)."""
    return f"{STATE_DIR}/{token}"


def revert_script(token: str) -> str:
    """The dead-man: restore the drop-in and sshd's units as they were; run by the timer.

    It claims the change by renaming `.armed` first, so that it and the disarm (which claims
    the same file) never both act.
    """
    state = state_path(token)
    return (
        "#!/bin/sh\n"
        "# tsops dead-man revert: restores OpenSSH as it was before an unconfirmed change.\n"
        "set -u\n"
        f"mv {state}.armed {state}.reverting 2>/dev/null || exit 0\n"
        f". {state}.state\n"
        f"if [ -e {state}.prev ]; then cp -p {state}.prev {DROPIN}; "
        "restored='put the previous tsops drop-in back'\n"
        f"else rm -f {DROPIN}; restored='removed the tsops drop-in (there was none before)'; fi\n"
        "[ \"$socket_enabled\" = enabled ] && systemctl enable --quiet ssh.socket\n"
        "[ \"$service_enabled\" = enabled ] && systemctl enable --quiet ssh.service\n"
        "[ \"$socket_active\" = active ] && systemctl start ssh.socket\n"
        "if [ \"$service_active\" = active ]; then systemctl restart ssh.service; "
        "started='restarted ssh.service'; else started='left ssh.service stopped, as it was'; fi\n"
        "echo \"$restored, $started\" "
        f"> {state}.reverted\n"
        f"rm -f {state}.reverting\n"
        "echo \"tsops: OpenSSH change not confirmed: $restored\" >&2\n"
    )


def apply_script(token: str, openssh: OpenSSH) -> str:
    """Arm the dead-man timer, then make the change; one round trip.

    The previous drop-in and sshd's unit states are saved first; a drop-in that `sshd -t`
    refuses is taken back at once (exit 5, its error on stderr) and the timer disarmed.
    """
    state = state_path(token)
    unit = f"{UNIT_PREFIX}{token}"
    rendered = render_dropin(openssh)
    seconds = int(openssh.revert_seconds)
    if rendered is None:
        write = f"rm -f {DROPIN}\n"
    else:
        write = (f"printf '%s' {quote(rendered)} > {DROPIN}.tsops-new\n"
                 f"chmod 0644 {DROPIN}.tsops-new\n"
                 f"mv {DROPIN}.tsops-new {DROPIN}\n")
    if openssh.mode == "off":
        act = ("if systemctl cat ssh.socket >/dev/null 2>&1; then "
               "systemctl disable --quiet --now ssh.socket; fi\n"
               "systemctl disable --quiet --now ssh.service\n")
    else:
        act = ("systemctl enable --quiet ssh.service\n"
               "systemctl restart ssh.service\n")
    return (
        "set -eu\n"
        "umask 077\n"
        f"mkdir -p {STATE_DIR}\n"
        "unit_state() { systemctl \"$1\" \"$2\" 2>/dev/null || true; }\n"
        "{\n"
        "  echo \"service_active='$(unit_state is-active ssh.service)'\"\n"
        "  echo \"service_enabled='$(unit_state is-enabled ssh.service)'\"\n"
        "  echo \"socket_active='$(unit_state is-active ssh.socket)'\"\n"
        "  echo \"socket_enabled='$(unit_state is-enabled ssh.socket)'\"\n"
        f"}} > {state}.state\n"
        f"if [ -e {DROPIN} ]; then cp -p {DROPIN} {state}.prev; fi\n"
        f"printf '%s' {quote(revert_script(token))} > {state}.revert\n"
        f"touch {state}.armed\n"
        f"if ! systemd-run --quiet --unit={unit} --on-active={seconds}s "
        f"--timer-property=AccuracySec=1s /bin/sh {state}.revert; then\n"
        f"  rm -f {state}.*\n"
        "  echo 'cannot arm the dead-man timer (systemd-run failed): nothing was changed' >&2\n"
        "  exit 6\n"
        "fi\n"
        "umask 022\n"
        + write +
        "install -d -m 0755 /run/sshd\n"
        "if ! out=$(/usr/sbin/sshd -t 2>&1); then\n"
        f"  mv {state}.armed {state}.refused\n"
        f"  systemctl stop {unit}.timer 2>/dev/null || true\n"
        f"  if [ -e {state}.prev ]; then cp -p {state}.prev {DROPIN}; else rm -f {DROPIN}; fi\n"
        f"  rm -f {state}.*\n"
        "  echo \"sshd -t refused the new drop-in, which was removed: $out\" >&2\n"
        "  exit 5\n"
        "fi\n"
        + act +
        "echo armed\n"
    )


def disarm_script(token: str) -> str:
    """Over the new connection: claim the change as confirmed and stop the timer.

    Exit 4 (with what was restored on stdout) when the dead-man got there first.
    """
    state = state_path(token)
    return (
        "set -u\n"
        f"if mv {state}.armed {state}.confirmed 2>/dev/null; then\n"
        f"  systemctl stop {UNIT_PREFIX}{token}.timer 2>/dev/null || true\n"
        f"  rm -f {state}.*\n"
        f"  echo {DISARMED}\n"
        "  exit 0\n"
        "fi\n"
        f"if [ -e {state}.reverted ]; then cat {state}.reverted; rm -f {state}.*; "
        "else echo 'the dead-man revert is still running'; fi\n"
        "exit 4\n"
    )


def outcome_script(token: str) -> str:
    """After the dead-man window: what the revert did (exit 4), that it never ran (exit 0), or
    that nothing was ever armed (exit 3: the change did not start)."""
    state = state_path(token)
    return (
        "set -u\n"
        f"if [ -e {state}.reverted ]; then cat {state}.reverted; rm -f {state}.*; exit 4; fi\n"
        f"if [ -e {state}.armed ]; then echo armed; exit 0; fi\n"
        f"if [ -e {state}.reverting ]; then echo 'the dead-man revert is still running'; "
        "exit 4; fi\n"
        f"rm -f {state}.*\n"
        "echo 'no change was armed: nothing was changed'\n"
        "exit 3\n"
    )
