"""The simulated tailscale package installed and enrolled by hand on real lab hosts."""

from __future__ import annotations

import hashlib
import urllib.request

import pytest

from tests.lab.lab import LabHost
from tests.sim.control import ControlServer
from tests.sim.tailscale.build import VERSIONS, RepoTree
from tests.sim.tailscale.hosts import add_apt_repo, node_status, wait_for_state
from tests.sim.tailscale.server import RepoServer

OLD, NEW = VERSIONS


@pytest.mark.lab(hosts=1)
def test_hand_enrollment_from_the_apt_repo(
    lab_host: LabHost, tailscale_repo: RepoServer, lab_control: ControlServer
) -> None:
    host = lab_host
    add_apt_repo(host, tailscale_repo)
    host.nsenter(f"apt-get update -q && apt-get install -y -q tailscale={OLD}")
    assert host.nsenter("tailscale version").stdout.splitlines()[0] == OLD
    assert host.nsenter("dpkg-query -W -f '${Version}' tailscale").stdout == OLD
    host.nsenter("systemctl enable --now tailscaled && systemctl is-active tailscaled")
    assert host.nsenter("cat /etc/default/tailscaled").stdout.count('PORT="41641"') == 1

    wrong = lab_control.create_auth_key(["tag:other"]).secret
    good = lab_control.create_auth_key(["tag:server"]).secret
    host.nsenter("install -m 600 /dev/stdin /root/wrong.key", input=wrong)
    host.nsenter("install -m 600 /dev/stdin /root/ts.key", input=good)
    up = (
        f"tailscale up --advertise-tags=tag:server --ssh --login-server={lab_control.url} "
        "--timeout=30s"
    )
    refused = host.nsenter(f"{up} --auth-key=file:/root/wrong.key", check=False)
    assert refused.returncode == 1
    assert "requested tags [tag:server] are invalid or not permitted" in refused.stderr
    assert lab_control.devices() == []

    with host.connection() as conn:
        conn.run(f"{up} --auth-key=file:/root/ts.key", hide=True)
        [device] = lab_control.devices()
        assert device.hostname == host.name
        assert device.tags == ["tag:server"]
        assert device.endpoint == host.ip
        answer = node_status(host)
        me = answer["Self"]
        assert answer["BackendState"] == "Running"
        assert (me["ID"], me["HostName"], me["Tags"], me["Online"]) == (
            device.node_id, host.name, ["tag:server"], True
        )
        assert me["DNSName"] == f"{device.name}."
        assert me["TailscaleIPs"] == device.addresses
        assert answer["CurrentTailnet"]["Name"] == lab_control.tailnet
        assert answer["MagicDNSSuffix"] == lab_control.magic_dns_suffix
        assert answer["Version"].startswith(f"{OLD}-t")

        # This SSH session reaches the node at its tailnet endpoint: toggling SSH needs the risk.
        risky = conn.run("tailscale set --ssh=false", hide=True, warn=True)
        assert risky.return_code == 1
        assert "--accept-risk=lose-ssh" in risky.stderr
        conn.run("tailscale set --ssh=false --accept-risk=lose-ssh", hide=True)

        changed = conn.run(
            f"tailscale up --login-server={lab_control.url}", hide=True, warn=True
        )
        assert changed.return_code == 1
        assert "requires mentioning all\nnon-default flags" in changed.stderr
        assert "\ttailscale up --advertise-tags=tag:server" in changed.stderr

    # A changed conffile survives the upgrade, and the daemon takes its FLAGS.
    host.nsenter("sed -i 's/^FLAGS=.*/FLAGS=\"--verbose=1\"/' /etc/default/tailscaled")
    host.nsenter(f"apt-get install -y -q tailscale={NEW}")
    assert host.nsenter("tailscale version").stdout.splitlines()[0] == NEW
    main_pid = host.nsenter("systemctl show -p MainPID --value tailscaled").stdout.strip()
    assert "--verbose=1" in host.nsenter(f"tr '\\0' ' ' < /proc/{main_pid}/cmdline").stdout
    host.nsenter("systemctl restart tailscaled")
    after = wait_for_state(host, "Running")
    assert after["Self"]["ID"] == device.node_id
    assert after["Self"]["Tags"] == ["tag:server"]
    assert after["Version"].startswith(f"{NEW}-t")
    [device] = lab_control.devices()
    assert device.client_version == NEW


@pytest.mark.lab(hosts=1)
def test_apt_refuses_the_repo_signed_by_another_key(
    lab_host: LabHost, tailscale_repo: RepoServer
) -> None:
    add_apt_repo(lab_host, tailscale_repo, "file:///usr/share/keyrings/debian-archive-keyring.gpg")
    update = lab_host.nsenter("apt-get update -q", check=False)
    assert update.returncode != 0
    assert "NO_PUBKEY" in update.stdout + update.stderr
    policy = lab_host.nsenter("apt-cache policy tailscale").stdout
    assert "Candidate" not in policy


@pytest.mark.lab(hosts=1)
def test_static_tarball_install(
    lab_host: LabHost, tailscale_repo: RepoServer, tailscale_repo_tree: RepoTree
) -> None:
    url = tailscale_repo.tarball_url(OLD)
    with urllib.request.urlopen(url + ".sha256") as response:
        published = response.read().decode()
    assert published == hashlib.sha256(tailscale_repo_tree.tarball(OLD).read_bytes()).hexdigest()
    top = f"tailscale_{OLD}_{tailscale_repo_tree.arch}"
    lab_host.nsenter(
        f"cd /tmp && curl -fsSO {url} && "
        f'echo "$(curl -fsS {url}.sha256)  {top}.tgz" | sha256sum -c - && tar xzf {top}.tgz && '
        f"install -m 755 {top}/tailscale /usr/bin/tailscale && "
        f"install -m 755 {top}/tailscaled /usr/sbin/tailscaled && "
        f"install -m 644 {top}/systemd/tailscaled.service /etc/systemd/system/ && "
        f"install -m 644 {top}/systemd/tailscaled.defaults /etc/default/tailscaled && "
        "systemctl daemon-reload && systemctl enable --now tailscaled"
    )
    assert lab_host.nsenter("tailscale version").stdout.splitlines()[0] == OLD
    assert node_status(lab_host)["BackendState"] == "NeedsLogin"
    verify = lab_host.nsenter("systemd-analyze verify tailscaled.service", check=False)
    assert (verify.returncode, verify.stderr) == (0, "")
    as_nobody = "runuser -u nobody -- tailscale"
    assert lab_host.nsenter(f"{as_nobody} status --json", check=False).returncode == 0
    denied = lab_host.nsenter(f"{as_nobody} set --ssh", check=False)
    assert denied.returncode == 1
    assert "Access denied: prefs write access denied" in denied.stderr
