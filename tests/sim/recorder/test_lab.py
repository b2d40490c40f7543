"""The recorder on a real lab host: installed as one file, a systemd unit, a non-root user, S3."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.lab.lab import Lab, LabHost
from tests.lab.s3 import S3Server
from tests.sim.control import ControlServer
from tests.sim.control.state import Device
from tests.sim.recorder.bundle import allow_port_80, install_on_host
from tests.sim.recorder.cast import shell_output
from tests.sim.recorder.conftest import ALICE, register_server
from tests.sim.recorder.session import Outcome, run_session

BUCKET = "recordings"
UNIT = """\
[Unit]
Description=Tailscale SSH session recorder (lab simulator)
After=network-online.target

[Service]
User=tsrecorder
Group=tsrecorder
EnvironmentFile=/etc/tsrecorder/env
ExecStart=/usr/local/bin/tsrecorder --dst s3://{endpoint} --bucket {bucket} \\
  --statedir /var/lib/tsrecorder --hostname recorder-lab
Restart=on-failure
# Hardening a real deployment would use: the simulator must run under it too.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/tsrecorder
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def wait_for_recorder(host: LabHost, control: ControlServer, timeout: float = 20) -> Device:
    """Return the recorder's device once it is online and its :80 answers from outside."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = control.state.now()
        found = [d for d in control.state.devices() if d.endpoint == host.ip and d.online(now)]
        if found:
            try:
                socket.create_connection((host.ip, 80), timeout=1).close()
                return found[0]
            except OSError:
                pass
        time.sleep(0.2)
    status = host.nsenter("systemctl status tsrecorder; journalctl -u tsrecorder --no-pager",
                          check=False)
    pytest.fail(f"the recorder did not come up on {host.name}:\n{status.stdout}")


@pytest.mark.lab(hosts=1)
def test_recorder_under_systemd_as_non_root_records_to_s3(
    lab: Lab, lab_s3: S3Server, lab_control: ControlServer, executable: Path
) -> None:
    host = lab.hosts[0]
    lab_s3.client().create_bucket(Bucket=BUCKET)
    key = lab_control.create_auth_key(["tag:recorder"])
    install_on_host(host, executable)
    allow_port_80(host)
    host.nsenter(
        "useradd --system --no-create-home --shell /usr/sbin/nologin tsrecorder"
        " && install -d -o tsrecorder -g tsrecorder -m 0700 /var/lib/tsrecorder"
        " && install -d -m 0755 /etc/tsrecorder"
        " && install -m 0600 /dev/stdin /etc/tsrecorder/env",
        input=f"TS_AUTHKEY={key.secret}\nTSRECORDER_LOGIN_SERVER={lab_control.url}\n"
              "AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=secret\n",
    )
    host.nsenter("cat > /etc/systemd/system/tsrecorder.service"
                 " && systemctl daemon-reload && systemctl enable --now tsrecorder",
                 input=UNIT.format(endpoint=lab_s3.address, bucket=BUCKET))
    recorder = wait_for_recorder(host, lab_control)
    server = register_server(lab_control)

    result = run_session(lab_control, "web1", ALICE, "alice",
                         shell_output("alice@web1:~$ ", [("id", "uid=1000(alice)\n")]))

    assert recorder.tags == ["tag:recorder"]
    assert result.outcome is Outcome.RECORDED, result
    assert result.recorder is not None and result.recorder.endpoint == host.ip
    assert result.key is not None and result.key.startswith(f"{server.node_id}/")
    stored = lab_s3.client().get_object(Bucket=BUCKET, Key=result.key)["Body"].read()
    assert stored == result.sent
    assert json.loads(stored.splitlines()[0])["srcNodeUser"] == "alice@example.com"
    pid = host.nsenter("systemctl show -p MainPID --value tsrecorder").stdout.strip()
    assert host.nsenter(f"ps -o user= -p {pid}").stdout.strip() == "tsrecorder"
    assert "tsrecorder.state" in host.nsenter("ls /var/lib/tsrecorder").stdout

    host.nsenter("systemctl stop tsrecorder")
    state = host.nsenter("systemctl show -p ActiveState -p Result tsrecorder").stdout.split()
    assert state == ["Result=success", "ActiveState=inactive"]
