"""Lab hosts on the lab's tailnet: enrolled by hand with Tailscale SSH on, and a recorder.

For tests that need Tailscale SSH sessions without running tsops: `enroll` installs the
simulated package from the lab's apt repository and runs `tailscale up --ssh`; `start_recorder`
runs the simulated tsrecorder under systemd, writing to a local directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.lab.lab import LabHost
from tests.lab.tailnet import LabTailnet
from tests.sim.control.state import Device
from tests.sim.recorder.bundle import allow_port_80, build_executable, install_on_host
from tests.sim.tailscale.hosts import add_apt_repo, wait_for_state

RECORDINGS = "/var/lib/tsrecorder/recordings"
RECORDER_UNIT = """\
[Unit]
Description=Tailscale SSH session recorder (lab simulator)
After=network-online.target

[Service]
User=tsrecorder
Group=tsrecorder
EnvironmentFile=/etc/tsrecorder/env
ExecStart=/usr/local/bin/tsrecorder --dst {dst} --statedir /var/lib/tsrecorder
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def device_of(tailnet: LabTailnet, host: LabHost) -> Device:
    """The tailnet device registered from `host` (its endpoint is the host's lab address)."""
    return next(d for d in tailnet.control.state.devices()
                if d.endpoint == host.ip and d.logged_out is None)


def enroll(tailnet: LabTailnet, host: LabHost, tags: tuple[str, ...] = ("tag:server",),
           ssh: bool = True) -> Device:
    """Install tailscale from the lab's apt repository and `tailscale up` with these tags."""
    add_apt_repo(host, tailnet.repo)
    host.nsenter("apt-get update -q && apt-get install -y -q tailscale")
    key = tailnet.control.create_auth_key(list(tags)).secret
    host.nsenter("install -m 600 /dev/stdin /root/ts.key", input=key)
    host.nsenter(
        f"tailscale up --auth-key=file:/root/ts.key --advertise-tags={','.join(tags)} "
        f"--ssh={'true' if ssh else 'false'} --login-server={tailnet.control.url} --timeout=30s"
    )
    wait_for_state(host, "Running")
    return device_of(tailnet, host)


def start_recorder(tailnet: LabTailnet, host: LabHost, workdir: Path,
                   dst: str = RECORDINGS) -> Device:
    """Run the simulated tsrecorder on `host` (tag:recorder, local `dst`); return its device."""
    install_on_host(host, build_executable(workdir / "tsrecorder"))
    allow_port_80(host)
    key = tailnet.control.create_auth_key(["tag:recorder"]).secret
    host.nsenter(
        "useradd --system --no-create-home --shell /usr/sbin/nologin tsrecorder"
        " && install -d -o tsrecorder -g tsrecorder -m 0700 /var/lib/tsrecorder"
        " && install -d -m 0755 /etc/tsrecorder"
        " && install -m 0600 /dev/stdin /etc/tsrecorder/env",
        input=f"TS_AUTHKEY={key}\nTSRECORDER_LOGIN_SERVER={tailnet.control.url}\n",
    )
    host.nsenter("cat > /etc/systemd/system/tsrecorder.service"
                 " && systemctl daemon-reload && systemctl enable --now tsrecorder",
                 input=RECORDER_UNIT.format(dst=dst))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = tailnet.control.state.now()
        found = [d for d in tailnet.control.state.devices()
                 if d.endpoint == host.ip and "tag:recorder" in d.tags and d.online(now)]
        if found and host.nsenter(f"ss -Hltn 'sport = :80 and src {host.ip}'",
                                  check=False).stdout.strip():
            return found[0]
        time.sleep(0.2)
    journal = host.nsenter("journalctl -u tsrecorder --no-pager", check=False).stdout
    raise AssertionError(f"the recorder did not come up on {host.name}:\n{journal}")


def recordings(host: LabHost, node_id: str, dst: str = RECORDINGS) -> dict[str, str]:
    """The `.cast` files the recorder on `host` stored for the SSH server `node_id`."""
    listing = host.nsenter(f"ls {dst}/{node_id} 2>/dev/null", check=False).stdout.split()
    return {name: host.nsenter(f"cat {dst}/{node_id}/{name}").stdout
            for name in listing if name.endswith(".cast")}


def wait_for_recording(host: LabHost, node_id: str, needle: str, timeout: float = 10,
                       dst: str = RECORDINGS) -> str:
    """Return the `.cast` holding `needle` once it is complete (the SSH server finishes the
    upload after the client got its exit status, as tailssh does)."""
    deadline = time.monotonic() + timeout
    while True:
        for text in recordings(host, node_id, dst).values():
            if needle in text and text.endswith("\n"):
                return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no recording with {needle!r} for {node_id} on {host.name}")
        time.sleep(0.1)
