"""Planning: compare a host's facts with what the inventory wants; pure code, no I/O.

A plan is a list of steps per host, each with the sentence the operator reads and the API calls
it will make. An empty list means the host is converged. A host that cannot be planned (not
reachable, unsupported) carries a `problem` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from tsops.inventory.load import LoadedInventory, Target
from tsops.inventory.model import Install
from tsops.servers.exposure import Exposure, assess
from tsops.servers.facts import HostFacts
from tsops.tailscale_api import Device

StepKind = Literal["repo", "install", "service", "account", "enroll", "retag", "ssh", "hostname",
                   "openssh"]
APT_KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"
APT_SOURCE = "/etc/apt/sources.list.d/tailscale.list"
TARBALL_NAME = re.compile(r"tailscale_(\d+\.\d+\.\d+)_([a-z0-9]+)\.tgz$")
# How a node's ControlURL pref may name Tailscale's own control plane ("" before any was chosen);
# `tailscale up` treats these as one login server and compares every other one exactly.
DEFAULT_LOGIN_SERVER = "https://controlplane.tailscale.com"
DEFAULT_LOGIN_SERVER_SYNONYMS = frozenset({"", DEFAULT_LOGIN_SERVER, "https://login.tailscale.com"})


@dataclass(frozen=True)
class Step:
    """One change to one host."""

    kind: StepKind
    summary: str
    api_calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Desired:
    """What the inventory wants on one server."""

    tags: tuple[str, ...]
    hostname: str
    login_server: str | None
    install: Install
    tailnet: str
    canary_user: str | None = None  # the local account canary sessions log in as


@dataclass(frozen=True)
class HostPlan:
    """The steps for one host, or the problem that prevents planning it."""

    target: Target
    desired: Desired
    facts: HostFacts | None = None
    device: Device | None = None
    steps: tuple[Step, ...] = ()
    problem: str | None = None
    notes: tuple[str, ...] = field(default=())
    exposure: Exposure | None = None

    @property
    def converged(self) -> bool:
        """Whether nothing needs to change."""
        return self.problem is None and not self.steps


def desired_for(inventory: LoadedInventory, target: Target) -> Desired:
    """Read what the inventory wants for one server."""
    model = inventory.model
    return Desired(
        tags=target.tags, hostname=target.name, login_server=model.tailnet.login_server,
        install=model.tailscale.install, tailnet=model.tailnet.name,
        canary_user=model.canary.user if model.canary is not None else None,
    )


def same_login_server(current: str | None, wanted: str | None) -> bool:
    """Whether a node's login server is the wanted one, compared as `tailscale up` does."""
    current, wanted = current or "", wanted or ""
    return current == wanted or (
        current in DEFAULT_LOGIN_SERVER_SYNONYMS and wanted in DEFAULT_LOGIN_SERVER_SYNONYMS
    )


def apt_source_line(repository: str, facts: HostFacts) -> str:
    """The sources.list line for Tailscale's apt repository, as the official installer writes."""
    return f"deb [signed-by={APT_KEYRING}] {repository}/{facts.os_id} {facts.codename} main"


def tarball_version(install: Install) -> str | None:
    """The version a static tarball holds, from its file name."""
    if install.tarball is None:
        return None
    name = (install.tarball.url or install.tarball.path or "").rsplit("/", 1)[-1]
    match = TARBALL_NAME.search(name)
    return match.group(1) if match else None


def plan_host(
    target: Target, desired: Desired, facts: HostFacts, devices: list[Device] | None
) -> HostPlan:
    """Compute the steps that bring one server to the desired state.

    `devices` None: the API's device list could not be read (status goes on without it); the
    tags are then compared with what the node itself reports, and no retag is planned.

    OpenSSH exposure comes last, after enrollment: a failed enrollment never leaves a host
    whose OpenSSH was already closed.
    """
    plan = _plan_tailscale(target, desired, facts, devices)
    if plan.problem is not None and plan.facts is None:
        return plan
    exposure = assess(target.openssh, facts.sshd)
    plan = replace(plan, exposure=exposure, notes=(*plan.notes, *exposure.unrecorded))
    if plan.problem is not None:
        return plan
    if exposure.problem is not None:
        return replace(plan, problem=f"openssh: {exposure.problem}")
    if exposure.change is not None:
        return replace(plan, steps=(*plan.steps, Step("openssh", exposure.change)))
    return plan


def _plan_tailscale(
    target: Target, desired: Desired, facts: HostFacts, devices: list[Device] | None
) -> HostPlan:
    """The Tailscale steps of one server."""
    plan = HostPlan(target=target, desired=desired, facts=facts)
    if facts.init != "systemd":
        return _problem(plan, f"init system is {facts.init!r}; tsops needs systemd")
    steps: list[Step] = []
    install = desired.install
    wanted_version = tarball_version(install) if install.method == "tarball" else install.version
    installed = facts.tailscale_version
    if install.method == "preinstalled":
        if installed is None:
            return _problem(plan, "Tailscale is not installed and install.method is preinstalled")
    elif install.method == "apt":
        if not facts.debian_family:
            return _problem(plan, f"install.method apt needs a Debian-family host, not "
                                  f"{facts.os_id!r}")
        if facts.apt_source != apt_source_line(install.repository, facts) or not (
            facts.apt_keyring_sha256
        ):
            steps.append(Step("repo", f"configure the apt repository {install.repository}/"
                                      f"{facts.os_id} {facts.codename} with its signing key"))
    elif install.method == "rhel" and not facts.rhel_family:
        return _problem(plan, f"install.method rhel needs a RHEL-family host, not {facts.os_id!r}")
    elif install.method == "tarball" and facts.arch not in _tarball_arches(install):
        return _problem(plan, f"the tarball is for {', '.join(_tarball_arches(install))}, "
                              f"this host is {facts.arch}")
    if install.method != "preinstalled" and (
        installed is None or (wanted_version is not None and installed != wanted_version)
    ):
        target_version = wanted_version or "the repository's latest"
        verb = "install" if installed is None else f"change {installed} to"
        steps.append(Step("install", f"{verb} tailscale {target_version} ({install.method})"))
    if not (facts.tailscaled_active and facts.tailscaled_enabled):
        steps.append(Step("service", "enable and start tailscaled"))
    if desired.canary_user is not None and desired.canary_user not in facts.local_accounts:
        steps.append(Step("account", f"create the canary account {desired.canary_user} "
                                     "(locked system account, for verify's Tailscale SSH session)"))
    status, prefs = facts.status, facts.prefs
    device = next(
        (d for d in devices or () if status is not None and d.node_id == status.node_id), None
    )
    plan = HostPlan(target=target, desired=desired, facts=facts, device=device)
    tags = " ".join(desired.tags)
    other_server = (
        status is not None and status.node_id is not None and prefs is not None
        and not same_login_server(prefs.control_url, desired.login_server)
    )
    enrolled = status is not None and status.running and prefs is not None and not other_server
    if status is not None and status.running and desired.tailnet not in ("-", status.tailnet):
        return _problem(plan, f"enrolled in tailnet {status.tailnet!r}, the inventory says "
                              f"{desired.tailnet!r}; log it out by hand if the move is intended")
    if not enrolled:
        summary = f"enroll as {desired.hostname} with tags {tags} and Tailscale SSH on"
        if other_server:
            assert prefs is not None
            # `tailscale up` refuses to move a running node without --force-reauth, which
            # the enroll script passes; the node logs in to the new server with a new key.
            summary = (f"move from login server {_server_name(prefs.control_url)} to "
                       f"{_server_name(desired.login_server)} (re-authenticates: "
                       f"--force-reauth) and {summary}")
        steps.append(Step(
            "enroll", summary,
            (f"POST /tailnet/{desired.tailnet}/keys: single-use key with tags {tags}",
             f"DELETE /tailnet/{desired.tailnet}/keys/<id>: revoke it after use"),
        ))
        return _with_steps(plan, steps)
    assert status is not None and prefs is not None
    current_tags = device.tags if device is not None else status.tags
    if sorted(current_tags) != sorted(desired.tags) and devices is not None:
        if device is None:
            return _problem(plan, f"node {status.node_id} is not in the API's device list; "
                                  "cannot retag it")
        steps.append(Step(
            "retag", f"retag {' '.join(current_tags) or '(untagged)'} -> {tags}",
            (f"POST /device/{device.id}/tags: {tags}",),
        ))
    if not prefs.run_ssh:
        steps.append(Step("ssh", "turn Tailscale SSH on (tailscale set --ssh)"))
    if prefs.hostname not in (None, desired.hostname):
        steps.append(Step("hostname", f"rename {prefs.hostname} -> {desired.hostname}"))
    return _with_steps(plan, steps)


def _server_name(url: str | None) -> str:
    if (url or "") in DEFAULT_LOGIN_SERVER_SYNONYMS:
        return f"Tailscale's default {DEFAULT_LOGIN_SERVER}"
    return str(url)


def _tarball_arches(install: Install) -> tuple[str, ...]:
    assert install.tarball is not None
    name = (install.tarball.url or install.tarball.path or "").rsplit("/", 1)[-1]
    match = TARBALL_NAME.search(name)
    return (match.group(2),) if match else ()


def _problem(plan: HostPlan, problem: str) -> HostPlan:
    return HostPlan(target=plan.target, desired=plan.desired, facts=plan.facts,
                    device=plan.device, problem=problem)


def _with_steps(plan: HostPlan, steps: list[Step]) -> HostPlan:
    return HostPlan(target=plan.target, desired=plan.desired, facts=plan.facts,
                    device=plan.device, steps=tuple(steps))
