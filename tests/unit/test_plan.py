"""Planning is pure: facts and the inventory in, steps out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tsops.inventory.load import Target
from tsops.inventory.model import Install, Tarball
from tsops.servers.facts import HostFacts, Prefs, TailscaleStatus, parse_facts
from tsops.servers.plan import APT_KEYRING, Desired, plan_host
from tsops.tailscale_api import Device

DATA = Path(__file__).resolve().parents[1] / "data" / "facts"
REPO = "http://10.213.0.1:8089"
TARGET = Target(name="host1", role="server", group=None, address="10.213.0.11",
                tags=("tag:server", "tag:db"), user="root", port=22, identity_file=None,
                sudo=False, jump_host=None, line=1)
DESIRED = Desired(tags=("tag:server", "tag:db"), hostname="host1",
                  login_server="http://10.213.0.1:8088",
                  install=Install(method="apt", repository=REPO, version="1.78.3"),
                  tailnet="example.com")
FRESH = parse_facts((DATA / "debian12-fresh.txt").read_text())
STATUS = TailscaleStatus(backend_state="Running", node_id="nAAA1CNTRL", hostname="host1",
                         dns_name="host1.tail1.ts.net.", tags=("tag:db", "tag:server"),
                         online=True, addresses=("100.64.0.1",), tailnet="example.com")
PREFS = Prefs(run_ssh=True, control_url="http://10.213.0.1:8088", hostname="host1",
              advertise_tags=("tag:server", "tag:db"), want_running=True)
DEVICE = Device(id="1001", node_id="nAAA1CNTRL", name="host1.tail1.ts.net", hostname="host1",
                tags=("tag:server", "tag:db"), addresses=("100.64.0.1",), authorized=True)
CONVERGED: HostFacts = replace(
    FRESH, tailscale_version="1.78.3", tailscaled_active=True, tailscaled_enabled=True,
    status=STATUS, prefs=PREFS,
    apt_source=f"deb [signed-by={APT_KEYRING}] {REPO}/debian bookworm main",
    apt_keyring_sha256="ab" * 32,
)


def kinds(facts: HostFacts, desired: Desired = DESIRED,
          devices: tuple[Device, ...] = (DEVICE,)) -> list[str]:
    plan = plan_host(TARGET, desired, facts, list(devices))
    assert plan.problem is None, plan.problem
    return [step.kind for step in plan.steps]


def problem(facts: HostFacts, desired: Desired = DESIRED) -> str | None:
    return plan_host(TARGET, desired, facts, [DEVICE]).problem


def test_fresh_debian_host_gets_everything() -> None:
    plan = plan_host(TARGET, DESIRED, FRESH, [])
    assert [s.kind for s in plan.steps] == ["repo", "install", "service", "enroll"]
    assert plan.steps[1].summary == "install tailscale 1.78.3 (apt)"
    assert plan.steps[3].api_calls == (
        "POST /tailnet/example.com/keys: single-use key with tags tag:server tag:db",
        "DELETE /tailnet/example.com/keys/<id>: revoke it after use",
    )


def test_converged_host_has_nothing_to_do() -> None:
    plan = plan_host(TARGET, DESIRED, CONVERGED, [DEVICE])
    assert plan.converged and plan.device == DEVICE


def test_tags_differ_only_in_order_is_converged() -> None:
    assert kinds(CONVERGED, devices=(replace(DEVICE, tags=("tag:db", "tag:server")),)) == []


def test_the_canary_account_is_created_once_on_fresh_and_enrolled_hosts() -> None:
    wanted = replace(DESIRED, canary_user="tsops-canary")
    assert kinds(FRESH, wanted, ()) == ["repo", "install", "service", "account", "enroll"]
    assert kinds(CONVERGED, wanted) == ["account"]
    assert kinds(replace(CONVERGED, local_accounts=("root", "tsops-canary")), wanted) == []
    assert kinds(CONVERGED) == []  # no canary section: no account


def test_changed_tags_are_a_retag_through_the_api() -> None:
    plan = plan_host(TARGET, DESIRED, CONVERGED, [replace(DEVICE, tags=("tag:server",))])
    assert [s.kind for s in plan.steps] == ["retag"]
    assert plan.steps[0].summary == "retag tag:server -> tag:server tag:db"
    assert plan.steps[0].api_calls == ("POST /device/1001/tags: tag:server tag:db",)


def test_retag_needs_the_device_in_the_api() -> None:
    facts = replace(CONVERGED, status=replace(STATUS, tags=("tag:old",)))
    found = plan_host(TARGET, DESIRED, facts, []).problem
    assert found == "node nAAA1CNTRL is not in the API's device list; cannot retag it"


def test_ssh_off_is_turned_on_with_set() -> None:
    assert kinds(replace(CONVERGED, prefs=replace(PREFS, run_ssh=False))) == ["ssh"]


def test_pinned_version_differs() -> None:
    plan = plan_host(TARGET, DESIRED, replace(CONVERGED, tailscale_version="1.76.1"), [DEVICE])
    assert [s.summary for s in plan.steps] == ["change 1.76.1 to tailscale 1.78.3 (apt)"]


def test_no_pin_keeps_any_installed_version() -> None:
    unpinned = replace(DESIRED, install=Install(method="apt", repository=REPO))
    assert kinds(replace(CONVERGED, tailscale_version="1.60.0"), unpinned) == []


def test_stopped_service_is_started() -> None:
    assert kinds(replace(CONVERGED, tailscaled_active=False)) == ["service"]


def test_other_login_server_is_a_move_shown_in_the_plan() -> None:
    other = replace(PREFS, control_url="http://10.213.0.1:9090")
    plan = plan_host(TARGET, DESIRED, replace(CONVERGED, prefs=other), [DEVICE])
    assert [s.kind for s in plan.steps] == ["enroll"]
    assert plan.steps[0].summary == (
        "move from login server http://10.213.0.1:9090 to http://10.213.0.1:8088 "
        "(re-authenticates: --force-reauth) and enroll as host1 with tags tag:server tag:db "
        "and Tailscale SSH on"
    )
    assert plan.steps[0].api_calls == (
        "POST /tailnet/example.com/keys: single-use key with tags tag:server tag:db",
        "DELETE /tailnet/example.com/keys/<id>: revoke it after use",
    )


def test_move_from_the_default_login_server_names_it() -> None:
    default = replace(PREFS, control_url="https://controlplane.tailscale.com")
    plan = plan_host(TARGET, DESIRED, replace(CONVERGED, prefs=default), [DEVICE])
    assert plan.steps[0].summary.startswith(
        "move from login server Tailscale's default https://controlplane.tailscale.com to "
        "http://10.213.0.1:8088 (re-authenticates: --force-reauth) and enroll as host1"
    )


def test_no_login_server_in_the_inventory_means_the_default() -> None:
    default = replace(DESIRED, login_server=None)
    for spelling in ("https://controlplane.tailscale.com", "https://login.tailscale.com", None):
        assert kinds(replace(CONVERGED, prefs=replace(PREFS, control_url=spelling)),
                     default) == []
    plan = plan_host(TARGET, default, CONVERGED, [DEVICE])
    assert plan.steps[0].summary.startswith(
        "move from login server http://10.213.0.1:8088 to Tailscale's default "
        "https://controlplane.tailscale.com (re-authenticates: --force-reauth)"
    )


def test_login_servers_compare_exactly_as_tailscale_up_does() -> None:
    slash = replace(PREFS, control_url="http://10.213.0.1:8088/")
    assert kinds(replace(CONVERGED, prefs=slash)) == ["enroll"]


def test_stopped_node_on_another_login_server_is_a_move_too() -> None:
    stopped = replace(CONVERGED, status=replace(STATUS, backend_state="Stopped"),
                      prefs=replace(PREFS, control_url="http://10.213.0.1:9090"))
    plan = plan_host(TARGET, DESIRED, stopped, [DEVICE])
    assert plan.steps[0].summary.startswith("move from login server http://10.213.0.1:9090")


def test_logged_out_node_is_not_a_move() -> None:
    logged_out = replace(STATUS, backend_state="NeedsLogin", node_id=None, tags=())
    facts = replace(CONVERGED, status=logged_out, prefs=replace(PREFS, control_url=None))
    plan = plan_host(TARGET, DESIRED, facts, [DEVICE])
    assert [s.summary for s in plan.steps] == [
        "enroll as host1 with tags tag:server tag:db and Tailscale SSH on"]


def test_logged_out_node_is_enrolled() -> None:
    logged_out = replace(STATUS, backend_state="NeedsLogin")
    assert kinds(replace(CONVERGED, status=logged_out)) == ["enroll"]


def test_other_repository_is_reconfigured() -> None:
    assert kinds(replace(CONVERGED, apt_source="deb http://old/debian bookworm main")) == ["repo"]


@pytest.mark.parametrize(
    ("facts", "desired", "expected"),
    [
        (replace(FRESH, init="init"), DESIRED, "init system is 'init'; tsops needs systemd"),
        (FRESH, replace(DESIRED, install=Install(method="preinstalled")),
         "Tailscale is not installed and install.method is preinstalled"),
        (FRESH, replace(DESIRED, install=Install(method="rhel")),
         "install.method rhel needs a RHEL-family host, not 'debian'"),
        (replace(FRESH, os_id="rocky", os_like=("rhel",)), DESIRED,
         "install.method apt needs a Debian-family host, not 'rocky'"),
        (FRESH, replace(DESIRED, install=Install(method="tarball", tarball=Tarball(
            path="/srv/tailscale_1.78.3_arm64.tgz", sha256="0" * 64))),
         "the tarball is for arm64, this host is amd64"),
        (replace(CONVERGED, status=replace(STATUS, tailnet="other.org")), DESIRED,
         "enrolled in tailnet 'other.org', the inventory says 'example.com'; log it out by "
         "hand if the move is intended"),
    ],
)
def test_hosts_that_cannot_be_planned(facts: HostFacts, desired: Desired, expected: str) -> None:
    assert problem(facts, desired) == expected


def test_tarball_version_comes_from_its_name() -> None:
    tarball = replace(DESIRED, install=Install(method="tarball", tarball=Tarball(
        url="https://mirror.example.com/tailscale_1.78.3_amd64.tgz", sha256="0" * 64)))
    assert kinds(FRESH, tarball) == ["install", "service", "enroll"]
    assert kinds(replace(CONVERGED, apt_source=None), tarball) == []
