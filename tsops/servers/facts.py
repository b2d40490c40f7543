"""What tsops knows about a host: gathered by one probe script in one SSH round trip.

The probe is a fixed shell script; `parse_facts` is a pure function of its output, tested
with captured outputs in tests/data/facts/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tsops.probe import Probe, ProbeError
from tsops.servers.exposure import PROBE_SECTIONS, SshdFacts, parse_sshd

MARK = "@@tsops:"
NOT_PROBED = SshdFacts(listeners=None)
PROBE = r"""
section() { printf '\n%s%s\n' '@@tsops:' "$1"; }
section os; cat /etc/os-release 2>/dev/null
section arch; uname -m
section init; cat /proc/1/comm 2>/dev/null
section uid; id -u
section tailscale_version
command -v tailscale >/dev/null 2>&1 && tailscale version 2>/dev/null | head -n 1
section tailscaled
systemctl is-active tailscaled 2>/dev/null; systemctl is-enabled tailscaled 2>/dev/null
section status
command -v tailscale >/dev/null 2>&1 && timeout 15 tailscale status --json 2>/dev/null
section prefs
command -v tailscale >/dev/null 2>&1 && timeout 15 tailscale debug prefs 2>/dev/null
section apt_source; cat /etc/apt/sources.list.d/tailscale.list 2>/dev/null
section apt_keyring; sha256sum /usr/share/keyrings/tailscale-archive-keyring.gpg 2>/dev/null
section package_managers; command -v apt-get dnf yum 2>/dev/null
section accounts; cut -d: -f1 /etc/passwd 2>/dev/null
""" + PROBE_SECTIONS + """section end
"""

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


@dataclass(frozen=True)
class TailscaleStatus:
    """The fields of `tailscale status --json` that tsops relies on."""

    backend_state: str
    node_id: str | None
    hostname: str | None
    dns_name: str | None
    tags: tuple[str, ...]
    online: bool
    addresses: tuple[str, ...]
    tailnet: str | None

    @property
    def running(self) -> bool:
        """Whether the node is logged in and connected."""
        return self.backend_state == "Running"


@dataclass(frozen=True)
class Prefs:
    """The fields of `tailscale debug prefs` that tsops relies on."""

    run_ssh: bool
    control_url: str | None
    hostname: str | None
    advertise_tags: tuple[str, ...]
    want_running: bool


@dataclass(frozen=True)
class HostFacts:
    """Everything the planner needs to know about one host."""

    os_id: str
    os_like: tuple[str, ...]
    os_version: str
    codename: str
    arch: str
    init: str
    is_root: bool
    tailscale_version: str | None
    tailscaled_active: bool
    tailscaled_enabled: bool
    status: TailscaleStatus | None
    prefs: Prefs | None
    apt_source: str | None
    apt_keyring_sha256: str | None
    package_managers: tuple[str, ...]
    local_accounts: tuple[str, ...] = ()  # the names in /etc/passwd (not NSS: no LDAP walk)
    sshd: SshdFacts = NOT_PROBED

    @property
    def debian_family(self) -> bool:
        """Whether apt and Debian packaging apply."""
        return self.os_id in ("debian", "ubuntu") or "debian" in self.os_like

    @property
    def rhel_family(self) -> bool:
        """Whether dnf/yum and RPM packaging apply."""
        return bool({self.os_id, *self.os_like} & {"rhel", "fedora", "centos"})


def sections(output: str) -> dict[str, str]:
    """Split the probe's output into its named sections."""
    found: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK):
            if name is not None:
                found[name] = "\n".join(lines).strip()
            name, lines = line[len(MARK):].strip(), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        found[name] = "\n".join(lines).strip()
    return found


def parse_facts(output: str) -> HostFacts:
    """Turn the probe's output into HostFacts; raise ProbeError when it is incomplete."""
    parts = sections(output)
    if "end" not in parts:
        raise ProbeError("the fact probe's output was cut off")
    release = _os_release(parts.get("os", ""))
    service = parts.get("tailscaled", "").split()
    keyring = parts.get("apt_keyring", "").split()
    return HostFacts(
        os_id=release.get("ID", "unknown"),
        os_like=tuple(release.get("ID_LIKE", "").split()),
        os_version=release.get("VERSION_ID", ""),
        codename=release.get("VERSION_CODENAME", ""),
        arch=ARCHITECTURES.get(parts.get("arch", ""), parts.get("arch", "unknown")),
        init=parts.get("init", "unknown") or "unknown",
        is_root=parts.get("uid") == "0",
        tailscale_version=_version(parts.get("tailscale_version", "")),
        tailscaled_active=service[:1] == ["active"],
        tailscaled_enabled=len(service) > 1 and service[1] == "enabled",
        status=parse_status(parts.get("status", "")),
        prefs=parse_prefs(parts.get("prefs", "")),
        apt_source=parts.get("apt_source") or None,
        apt_keyring_sha256=keyring[0] if keyring else None,
        package_managers=tuple(
            path.rsplit("/", 1)[-1] for path in parts.get("package_managers", "").split()
        ),
        local_accounts=tuple(parts.get("accounts", "").split()),
        sshd=parse_sshd(parts),
    )


def parse_status(text: str) -> TailscaleStatus | None:
    """Parse `tailscale status --json`; None when tailscaled did not answer."""
    if not text.strip():
        return None
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        return None
    me: dict[str, Any] = data.get("Self") or {}
    tailnet: dict[str, Any] = data.get("CurrentTailnet") or {}
    return TailscaleStatus(
        backend_state=str(data.get("BackendState", "NoState")),
        node_id=me.get("ID") or None,
        hostname=me.get("HostName") or None,
        dns_name=me.get("DNSName") or None,
        tags=tuple(me.get("Tags") or ()),
        online=bool(me.get("Online")),
        addresses=tuple(me.get("TailscaleIPs") or ()),
        tailnet=tailnet.get("Name") or None,
    )


def parse_prefs(text: str) -> Prefs | None:
    """Parse `tailscale debug prefs`; None when tailscaled did not answer."""
    try:
        data: dict[str, Any] = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict) or not data:
        return None
    return Prefs(
        run_ssh=bool(data.get("RunSSH")),
        control_url=data.get("ControlURL") or None,
        hostname=data.get("Hostname") or None,
        advertise_tags=tuple(data.get("AdvertiseTags") or ()),
        want_running=bool(data.get("WantRunning")),
    )


FACTS = Probe("the fact probe", PROBE, parse_facts)
"""Everything the server planner needs, in one round trip."""
NODE_STATUS = Probe("tailscale status", "tailscale status --json 2>/dev/null || true",
                    parse_status)
"""The node's own view of itself (its stable node ID), when tailscaled answers."""


def _os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _version(text: str) -> str | None:
    match = re.match(r"\s*(\d+\.\d+\.\d+)", text)
    return match.group(1) if match else None
