"""tailscaled and the CLI together on this machine, against a control server on loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.sim.control import ControlServer
from tests.sim.tailscale.localnode import LocalNode


def status(node: LocalNode) -> dict[str, Any]:
    """Return `tailscale status --json`."""
    result = node.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def enroll(node: LocalNode, control: ControlServer, *extra: str) -> None:
    """Enroll with a key for tag:server and the flags tsops uses."""
    key = control.create_auth_key(["tag:server"]).secret
    result = node.cli(
        "up", f"--auth-key={key}", "--advertise-tags=tag:server", "--ssh",
        f"--login-server={control.url}", "--hostname=web1", "--timeout=20s", *extra,
    )
    assert result.returncode == 0, result.stderr


def test_fresh_node_needs_login(local_node: LocalNode) -> None:
    answer = status(local_node)
    assert answer["BackendState"] == "NeedsLogin"
    assert answer["Self"]["ID"] == ""
    assert "Tags" not in answer["Self"]
    assert answer["CurrentTailnet"] is None


def test_enrollment_reports_documented_status(
    local_node: LocalNode, local_control: ControlServer
) -> None:
    enroll(local_node, local_control)
    answer = status(local_node)
    me = answer["Self"]
    assert answer["BackendState"] == "Running"
    assert me["ID"].startswith("n") and me["ID"].endswith("CNTRL")
    assert me["HostName"] == "web1"
    assert me["DNSName"] == f"web1.{answer['MagicDNSSuffix']}."
    assert me["Tags"] == ["tag:server"]
    assert me["Online"] is True
    assert me["TailscaleIPs"] == answer["TailscaleIPs"]
    assert answer["CurrentTailnet"]["Name"]
    assert answer["Version"].startswith("0.0.0-t")
    [device] = local_control.devices()
    assert device.tags == ["tag:server"]
    assert device.node_id == me["ID"]
    assert device.ssh is True
    prefs = json.loads(local_node.cli("debug", "prefs").stdout)
    assert prefs["RunSSH"] is True and prefs["WantRunning"] is True


def test_untagged_node_has_no_tags_field(
    local_node: LocalNode, local_control: ControlServer
) -> None:
    key = local_control.create_auth_key([]).secret
    result = local_node.cli("up", f"--auth-key={key}", f"--login-server={local_control.url}")
    assert result.returncode == 0, result.stderr
    assert "Tags" not in status(local_node)["Self"]


def test_key_without_the_tag_is_refused(
    local_node: LocalNode, local_control: ControlServer
) -> None:
    key = local_control.create_auth_key(["tag:other"]).secret
    result = local_node.cli(
        "up", f"--auth-key={key}", "--advertise-tags=tag:server",
        f"--login-server={local_control.url}", "--timeout=10s",
    )
    assert result.returncode == 1
    assert "requested tags [tag:server] are invalid or not permitted" in result.stderr
    assert status(local_node)["BackendState"] == "NeedsLogin"
    assert local_control.devices() == []


def test_changed_flags_need_reset(local_node: LocalNode, local_control: ControlServer) -> None:
    enroll(local_node, local_control)
    result = local_node.cli("up", f"--login-server={local_control.url}", "--hostname=web1")
    assert result.returncode == 1
    assert "requires mentioning all\nnon-default flags" in result.stderr
    assert (
        f"\ttailscale up --advertise-tags=tag:server --hostname=web1 "
        f"--login-server={local_control.url} --ssh\n"
    ) in result.stderr
    restated = local_node.cli(
        "up", "--advertise-tags=tag:server", "--ssh", f"--login-server={local_control.url}",
        "--hostname=web1",
    )
    assert restated.returncode == 0, restated.stderr
    reset = local_node.cli(
        "up", "--reset", "--advertise-tags=tag:server", f"--login-server={local_control.url}",
        "--hostname=web1",
    )
    assert reset.returncode == 0, reset.stderr
    assert json.loads(local_node.cli("debug", "prefs").stdout)["RunSSH"] is False


def test_set_changes_ssh_but_not_tags(
    local_node: LocalNode, local_control: ControlServer
) -> None:
    enroll(local_node, local_control)
    refused = local_node.cli("set", "--advertise-tags=tag:other")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "flag provided but not defined: -advertise-tags"
    assert local_node.cli("set", "--ssh=false").returncode == 0
    assert json.loads(local_node.cli("debug", "prefs").stdout)["RunSSH"] is False


def test_ssh_toggle_over_tailscale_needs_accepted_risk(
    local_node: LocalNode, local_control: ControlServer
) -> None:
    enroll(local_node, local_control)
    over_tailscale = {"SSH_CLIENT": "100.64.0.7 50000 22", "PATH": "/usr/bin:/bin"}
    refused = local_node.cli("set", "--ssh=false", env=over_tailscale)
    assert refused.returncode == 1
    assert "--accept-risk=lose-ssh" in refused.stderr
    accepted = local_node.cli("set", "--ssh=false", "--accept-risk=lose-ssh", env=over_tailscale)
    assert accepted.returncode == 0, accepted.stderr
    lab_network = {"SSH_CLIENT": "10.0.0.5 50000 22", "PATH": "/usr/bin:/bin"}
    assert local_node.cli("set", "--ssh", env=lab_network).returncode == 0


def test_state_survives_restart(local_node: LocalNode, local_control: ControlServer) -> None:
    enroll(local_node, local_control)
    before = status(local_node)["Self"]["ID"]
    local_node.stop()
    local_node.start()
    assert local_node.cli("up", "--advertise-tags=tag:server", "--ssh", "--hostname=web1",
                          f"--login-server={local_control.url}").returncode == 0
    after = status(local_node)
    assert after["BackendState"] == "Running"
    assert after["Self"]["ID"] == before
    assert len(local_control.devices()) == 1


def test_default_login_server_is_never_contacted(local_node: LocalNode) -> None:
    result = local_node.cli("up", "--auth-key=tskey-auth-x", "--timeout=5s")
    assert result.returncode == 1
    assert "never contacts Tailscale's control plane" in result.stderr
    other = local_node.cli(
        "up", "--auth-key=tskey-auth-x", "--login-server=https://login.tailscale.com"
    )
    assert other.returncode == 1
    assert "never contacts Tailscale's servers" in other.stderr


def test_login_server_change_needs_force_reauth(
    local_node: LocalNode, local_control: ControlServer, other_local_control: ControlServer
) -> None:
    enroll(local_node, local_control)
    before = status(local_node)["Self"]["ID"]
    other = other_local_control
    key = other.create_auth_key(["tag:server"]).secret
    move = ("up", "--reset", f"--auth-key={key}", "--advertise-tags=tag:server", "--ssh",
            f"--login-server={other.url}", "--hostname=web1", "--timeout=20s")
    refused = local_node.cli(*move)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "can't change --login-server without --force-reauth"
    assert other.devices() == [] and other.auth_keys()[0].uses == 0
    assert json.loads(local_node.cli("debug", "prefs").stdout)["ControlURL"] == (
        local_control.url)
    assert status(local_node)["Self"]["ID"] == before

    # Over Tailscale, re-authenticating drops the session: the risk must be accepted.
    over_tailscale = {"SSH_CLIENT": "100.64.0.7 50000 22", "PATH": "/usr/bin:/bin"}
    risky = local_node.cli(*move, "--force-reauth", env=over_tailscale)
    assert risky.returncode == 1
    assert "--accept-risk=lose-ssh" in risky.stderr
    assert other.devices() == []

    moved = local_node.cli(*move, "--force-reauth", "--accept-risk=lose-ssh",
                           env=over_tailscale)
    assert moved.returncode == 0, moved.stderr
    [device] = other.devices()
    after = status(local_node)
    assert after["BackendState"] == "Running"
    assert after["Self"]["ID"] == device.node_id
    assert json.loads(local_node.cli("debug", "prefs").stdout)["ControlURL"] == other.url


def test_stopped_node_changes_login_server_without_force_reauth(
    local_node: LocalNode, local_control: ControlServer, other_local_control: ControlServer
) -> None:
    enroll(local_node, local_control)
    assert local_node.cli("down").returncode == 0
    other = other_local_control
    key = other.create_auth_key(["tag:server"]).secret
    moved = local_node.cli(
        "up", "--reset", f"--auth-key={key}", "--advertise-tags=tag:server", "--ssh",
        f"--login-server={other.url}", "--hostname=web1", "--timeout=20s",
    )
    assert moved.returncode == 0, moved.stderr
    assert [d.hostname for d in other.devices()] == ["web1"]


def test_down_and_logout(local_node: LocalNode, local_control: ControlServer) -> None:
    enroll(local_node, local_control)
    assert local_node.cli("down").returncode == 0
    assert status(local_node)["BackendState"] == "Stopped"
    assert local_node.cli("status").stdout.strip() == "Tailscale is stopped."
    assert local_node.cli("logout").returncode == 0
    assert status(local_node)["BackendState"] == "NeedsLogin"
    [device] = local_control.devices()
    assert device.logged_out is not None


def test_cli_without_daemon_fails_like_the_real_one(local_node: LocalNode) -> None:
    local_node.stop()
    result = local_node.cli("status")
    assert result.returncode == 1
    assert "failed to connect to local tailscaled" in result.stderr


def api(control: ControlServer) -> httpx.Client:
    """An API v2 client with an all-scopes token."""
    token = control.create_api_token()
    return httpx.Client(
        base_url=control.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )


def test_retag_by_reauth_keeps_the_device(
    local_node: LocalNode, local_control: ControlServer
) -> None:
    enroll(local_node, local_control)
    before = status(local_node)["Self"]["ID"]
    other = local_control.create_auth_key(["tag:other"]).secret
    result = local_node.cli(
        "up", "--reset", f"--auth-key={other}", "--advertise-tags=tag:other", "--ssh",
        f"--login-server={local_control.url}", "--hostname=web1",
    )
    assert result.returncode == 0, result.stderr
    after = status(local_node)["Self"]
    assert (after["ID"], after["Tags"]) == (before, ["tag:other"])
    [device] = local_control.devices()
    assert device.tags == ["tag:other"]


def test_api_changes_reach_the_node(local_node: LocalNode, local_control: ControlServer) -> None:
    enroll(local_node, local_control)
    [device] = local_control.devices()
    up_again = (
        "up", "--advertise-tags=tag:server", "--ssh", "--hostname=web1",
        f"--login-server={local_control.url}",
    )
    with api(local_control) as client:
        client.post(f"/device/{device.id}/tags", json={"tags": ["tag:other"]}).raise_for_status()
        assert local_node.cli("down").returncode == 0
        assert local_node.cli(*up_again).returncode == 0
        assert status(local_node)["Self"]["Tags"] == ["tag:other"]
        client.delete(f"/device/{device.id}").raise_for_status()
    refused = local_node.cli(*up_again)
    assert refused.returncode == 1
    assert "pass --auth-key" in refused.stderr
    assert status(local_node)["BackendState"] == "NeedsLogin"


def test_status_text(local_node: LocalNode, local_control: ControlServer) -> None:
    assert local_node.cli("status").stdout == "Logged out.\n"
    enroll(local_node, local_control)
    result = local_node.cli("status")
    assert result.returncode == 0
    assert result.stdout.split() == [
        status(local_node)["TailscaleIPs"][0], "web1", "tagged-devices", "linux", "-",
    ]


def test_unreachable_login_server_times_out(local_node: LocalNode) -> None:
    # Port 1 on loopback: nothing listens there, so every attempt is refused at once.
    result = local_node.cli(
        "up", "--auth-key=tskey-auth-x", "--login-server=http://127.0.0.1:1", "--timeout=2s"
    )
    assert result.returncode == 1
    assert "timeout waiting for Tailscale service to enter a Running state" in result.stderr
    assert status(local_node)["BackendState"] == "NeedsLogin"


def test_proxy_variables_are_ignored(local_node: LocalNode, local_control: ControlServer) -> None:
    # The daemon must talk to the login server itself, never through a proxy (port 9: closed).
    local_node.stop()
    proxy = "http://127.0.0.1:9"
    local_node.start(
        env={"http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    )
    enroll(local_node, local_control)
    assert status(local_node)["BackendState"] == "Running"
