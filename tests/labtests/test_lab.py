"""The lab's hosts are real: systemd as PID 1, SSH, private filesystems, the lab's network only."""

from __future__ import annotations

import ipaddress

import pytest

from tests.lab.lab import Lab


@pytest.mark.lab(hosts=3)
def test_three_real_hosts_over_ssh(lab: Lab) -> None:
    seen = {}
    for host in lab.hosts:
        with host.connection() as conn:
            name = conn.run("hostname", hide=True).stdout.strip()
            state = conn.run("systemctl is-system-running --wait", hide=True, warn=True)
            failed = conn.run("systemctl --failed --no-legend", hide=True).stdout
            pid1 = conn.run("cat /proc/1/comm", hide=True).stdout.strip()
        seen[host.name] = (name, state.stdout.strip(), pid1)
        assert state.stdout.strip() == "running", f"{host.name}: failed units: {failed}"
    assert seen == {
        "host1": ("host1", "running", "systemd"),
        "host2": ("host2", "running", "systemd"),
        "host3": ("host3", "running", "systemd"),
    }


@pytest.mark.lab(hosts=3)
def test_each_host_has_a_private_filesystem(lab: Lab) -> None:
    first, *others = lab.hosts
    with first.connection() as conn:
        conn.run("echo only-on-host1 > /etc/tsops-private-marker")
        assert conn.run("cat /etc/tsops-private-marker", hide=True).stdout == "only-on-host1\n"
    for host in others:
        with host.connection() as conn:
            result = conn.run("test -e /etc/tsops-private-marker", warn=True, hide=True)
            assert result.exited == 1, f"{host.name} sees host1's file"


@pytest.mark.lab(hosts=2)
def test_a_systemd_unit_runs_on_one_host_only(lab: Lab) -> None:
    unit = (
        "[Unit]\nDescription=lab test unit\n"
        "[Service]\nExecStart=/bin/sh -c 'echo started > /run/lab-unit.out; exec sleep infinity'\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    one, other = lab.hosts
    with one.connection() as conn:
        conn.put(_bytes(unit), "/etc/systemd/system/lab-test.service")
        conn.run("systemctl daemon-reload && systemctl enable --now lab-test.service", hide=True)
        assert conn.run("systemctl is-active lab-test.service", hide=True).stdout == "active\n"
        assert conn.run("cat /run/lab-unit.out", hide=True).stdout == "started\n"
        assert conn.run("systemctl is-enabled lab-test.service", hide=True).stdout == "enabled\n"
    with other.connection() as conn:
        result = conn.run("systemctl is-active lab-test.service", hide=True, warn=True)
        assert result.stdout.strip() == "inactive"


@pytest.mark.lab(hosts=2)
def test_hosts_reach_only_the_lab_network(lab: Lab) -> None:
    for host in lab.hosts:
        routes = [r.strip() for r in host.nsenter("ip -4 route show").stdout.splitlines()]
        assert routes == [f"{lab.network} dev eth0 proto kernel scope link src {host.ip}"]
        assert ipaddress.ip_address(host.ip) in lab.network
    # ...and hosts reach each other across the lab bridge.
    first, second = lab.hosts
    first.nsenter(f"ping -c1 -W2 {second.ip}")


@pytest.mark.lab(hosts=1)
def test_host_keys_are_checked(lab: Lab) -> None:
    (host,) = lab.hosts
    lab.known_hosts.write_text(lab.known_hosts.read_text().replace(host.ip, "10.255.255.254"))
    from paramiko.ssh_exception import SSHException

    with pytest.raises(SSHException, match="not found in known_hosts"), host.connection() as conn:
        conn.run("true", hide=True)


def _bytes(text: str) -> object:
    import io

    return io.BytesIO(text.encode())
