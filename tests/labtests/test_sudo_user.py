"""The main job through a non-root SSH user with passwordless sudo, sudo's I/O logging on.

One lab: host1 a server installed from a local tarball (uploaded), host3 a binary recorder
(the executable uploaded) writing to S3 with its own keys, host2 added later with add-server.
tsops connects as `ops` everywhere; sudo keeps every sudo'd command's input and output. After
the whole job, neither sudo's I/O logs nor the journal hold an auth key or the recorder's AWS
secret, and no staging directory is left. A user whose sudo asks for a password is refused
up front with one line.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.lab.s3 import S3Server
from tests.lab.sudo import add_sudo_user, enable_sudo_io_log, sudo_io_logs, sudo_io_sessions
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_recorder import s3_storage
from tests.sim.recorder.bundle import allow_port_80
from tsops.remote import STAGE_PREFIX

RECORDER_SECRET = f"lab-recorder-aws-secret-{secrets.token_hex(12)}"
RECORDER_KEY_ID = "AKIDLABRECORDERSUDO"


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """tsops as an operator runs it: API token, operator and recorder keys in the environment."""
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token, "AWS_ACCESS_KEY_ID": "admin",
           "AWS_SECRET_ACCESS_KEY": "admin-secret", "LAB_RECORDER_KEY_ID": RECORDER_KEY_ID,
           "LAB_RECORDER_SECRET": RECORDER_SECRET}
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=600)


def write_inventory(tailnet: LabTailnet, s3: S3Server, folder: Path, user: str) -> Path:
    """host1 (tarball from a local file), host3 the binary recorder on S3; SSH user `user`."""
    folder.mkdir()
    path = tailnet.recorded_inventory(folder, {"host1": ()})
    tarball = tailnet.repo.tree.tarball("1.78.3")
    digest = tarball.with_name(tarball.name + ".sha256").read_text().split()[0]
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["connection"]["user"] = user
    document["connection"]["sudo"] = True
    document["tailscale"]["install"] = {"method": "tarball",
                                        "tarball": {"path": str(tarball), "sha256": digest}}
    document["storage"] = s3_storage(s3)
    with path.open("w") as out:
        yaml.dump(document, out)
    return path


def bootstrap(tailnet: LabTailnet, path: Path) -> dict[str, Any]:
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", "-o", "json", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.lab(hosts=3)
def test_the_main_job_through_a_sudo_user_leaks_no_secret_to_sudo_logs(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, tmp_path: Path
) -> None:
    for host in lab.hosts:
        add_sudo_user(host, "ops")
        enable_sudo_io_log(host)
    add_sudo_user(lab.host("host1"), "asker", sudo="password")
    allow_port_80(lab.host("host3"))

    # A user whose sudo asks for a password: refused at the first command, one line, nothing
    # changed on the host or in the tailnet.
    asker = write_inventory(tailnet, lab_s3, tmp_path / "asker", "asker")
    refused = tsops(tailnet, "bootstrap", "--yes", "--no-input", "--limit", "host1", str(asker))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    line = ("sudo asks asker for a password; tsops runs privileged steps with `sudo -n` and "
            "never types one: give asker passwordless sudo (NOPASSWD) or connect as root "
            '(see docs/servers.md, "SSH users and sudo")')
    output = refused.stdout + refused.stderr
    assert f"host1: cannot plan: {line}\n" in output, output
    assert "nothing was changed" in output
    assert "Traceback" not in refused.stderr
    assert tailnet.control.state.devices() == []
    assert lab.host("host1").nsenter("test -e /usr/bin/tailscale", check=False).returncode == 1

    # The whole job as `ops`: both uploads (tarball and recorder executable), both secrets.
    path = write_inventory(tailnet, lab_s3, tmp_path / "ops", "ops")
    first = bootstrap(tailnet, path)
    assert [(h["name"], h["outcome"]) for h in first["hosts"]] == [("host1", "changed")]
    (recorder,) = first["recorders"]["hosts"]
    assert (recorder["outcome"], recorder["healthy"], recorder["verification"]) == (
        "changed", True, "verified"), recorder
    host1, host3 = lab.host("host1"), lab.host("host3")
    assert host1.nsenter("tailscale version").stdout.splitlines()[0] == "1.78.3"
    assert host3.nsenter("stat -c '%a %U' /etc/tsrecorder/env").stdout.strip() == "600 root"
    assert RECORDER_SECRET in host3.nsenter("cat /etc/tsrecorder/env").stdout
    assert '"enforceRecorder": true' in tailnet.control.state.policy().text

    again = bootstrap(tailnet, path)
    assert [(h["name"], h["outcome"], h["round_trips"]) for h in again["hosts"]] == [
        ("host1", "unchanged", 1)]
    assert [h["outcome"] for h in again["recorders"]["hosts"]] == ["unchanged"]
    assert again["policy"]["changed"] is False

    status = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    verify = tsops(tailnet, "verify", "--no-input", str(path))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    added = tsops(tailnet, "add-server", "--yes", "--no-input", str(path), "host2")
    assert added.returncode == 0, added.stdout + added.stderr
    assert any(line.startswith("host2: recorded") for line in added.stdout.splitlines()), \
        added.stdout
    assert lab.host("host2").nsenter("tailscale version").stdout.splitlines()[0] == "1.78.3"

    # What sudo kept, and the journal: no auth key, no AWS secret. Every privileged step
    # went through sudo as ops (the logs are not empty), and nothing was left staged.
    keys = [key.secret for key in tailnet.control.state.auth_keys()]
    assert len(keys) == 3  # host1, host3 and host2 each enrolled with a key of their own
    for host in lab.hosts:
        assert sudo_io_sessions(host) > 0, host.name
        logs = sudo_io_logs(host)
        journal = host.nsenter("journalctl -b --no-pager -o cat").stdout
        assert "ops : " in journal, host.name  # sudo's own log lines: it ran as ops
        for secret in [*keys, RECORDER_SECRET]:
            assert secret not in logs, f"{host.name}: a secret in sudo's I/O log"
            assert secret not in journal, f"{host.name}: a secret in the journal"
        assert host.nsenter(f"ls -d {STAGE_PREFIX}* 2>/dev/null | wc -l").stdout.strip() == "0"
        assert host.nsenter("ls -A /run/tsops 2>/dev/null | wc -l").stdout.strip() == "0"
    # The control: what does go through sudo's standard input is in those logs (so the search
    # above would have found a secret sent the old way).
    control = f"stdin-control-{secrets.token_hex(8)}"
    host1.nsenter(f"printf %s {control} | su ops -c 'sudo -n sh -c cat' >/dev/null")
    assert control in sudo_io_logs(host1)
