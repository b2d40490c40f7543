"""A lab host as the bastion (`connection.jump_host`): the whole main job through it, and a
bastion whose key is unknown or changed refused with its fingerprint, the servers never
contacted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.lab.lab import Lab
from tests.lab.tailnet import LabTailnet
from tests.labtests.test_add_remove_server import tsops
from tests.labtests.test_main_job import bootstrap
from tests.sim.recorder.bundle import allow_port_80

BASTION = "host4"


def through(path: Path, ssh_config: Path | None = None) -> None:
    """Make every host of the inventory at `path` reached through the bastion."""
    yaml = YAML()
    document = yaml.load(path.read_text())
    document["connection"]["jump_host"] = BASTION
    if ssh_config is not None:
        document["connection"]["ssh_config"] = str(ssh_config)
    with path.open("w") as out:
        yaml.dump(document, out)


def sshd_lines_from(lab: Lab, host: str, address: str) -> int:
    """How many lines of `host`'s sshd journal name `address` (every connection logs some)."""
    journal = lab.host(host).nsenter("journalctl -u ssh --no-pager -o cat").stdout
    return sum(1 for line in journal.splitlines() if f" {address} " in f"{line} ")


def fingerprint(public_line: str, folder: Path) -> str:
    """ssh-keygen's SHA256 fingerprint of a known_hosts line's key."""
    (folder / "key.pub").write_text(" ".join(public_line.split()[1:3]) + "\n")
    listed = subprocess.run(["ssh-keygen", "-lf", str(folder / "key.pub")], check=True,
                            capture_output=True, text=True)
    return listed.stdout.split()[1]


def ssh_config_with(lab: Lab, folder: Path, bastion_line: str | None) -> Path:
    """The lab's ssh_config reading a known_hosts whose bastion line is `bastion_line`."""
    bastion_ip = lab.host(BASTION).ip
    lines = [line for line in lab.known_hosts.read_text().splitlines(keepends=True)
             if line.split()[0] != bastion_ip]
    known = folder / "known_hosts"
    known.write_text("".join(lines) + (bastion_line or ""))
    config = folder / "ssh_config"
    config.write_text(lab.ssh_config.read_text().replace(str(lab.known_hosts), str(known)))
    return config


@pytest.mark.lab(hosts=4)
def test_the_main_job_through_a_bastion_and_untrusted_bastions_refused(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    allow_port_80(lab.host("host3"))
    bastion_ip = lab.host(BASTION).ip
    bastion_line = next(line for line in lab.known_hosts.read_text().splitlines(keepends=True)
                        if line.split()[0] == bastion_ip)
    real = fingerprint(bastion_line, tmp_path)

    # Refused first, before any server was ever contacted through the bastion.
    for case, line in (("unknown", None), ("changed", None)):
        folder = tmp_path / case
        folder.mkdir()
        if case == "changed":
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(folder / "other")], check=True)
            other = (folder / "other.pub").read_text().split()
            line = f"{bastion_ip} {other[0]} {other[1]}\n"
        path = tailnet.recorded_inventory(folder, {"host1": ()})
        through(path, ssh_config_with(lab, folder, line))
        refused = tsops(tailnet, "plan", "--no-input", str(path))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        shown = refused.stdout + refused.stderr
        if case == "unknown":
            assert f"host1: cannot plan: jump host {bastion_ip}: unknown host key (ssh-ed25519 " \
                   f"key {real})" in shown
        else:
            assert f"host1: cannot plan: jump host {bastion_ip}: host key changed: it offered " \
                   f"ssh-ed25519 key {real}, known_hosts has ssh-ed25519 key " \
                   f"{fingerprint(line or '', folder)}" in shown
        assert "host1 was not contacted" in shown
        assert "Traceback" not in shown
        assert (folder / "known_hosts").read_text().endswith(line or "\n")  # never rewritten
    for host in ("host1", "host2", "host3"):
        assert sshd_lines_from(lab, host, bastion_ip) == 0, host

    # The whole main job through the bastion.
    path = tailnet.recorded_inventory(tmp_path, {"host1": ()}, min_free_gb=1)
    through(path)
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {"host1": "changed"}
    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {"host1": "unchanged"}
    assert report["policy"]["changed"] is False

    status = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert status.returncode == 0, status.stdout + status.stderr
    assert {h["name"]: h["state"] for h in json.loads(status.stdout)["hosts"]} == {
        "host1": "ok", "host3": "ok"}
    verified = tsops(tailnet, "verify", "--no-input", str(path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    added = tsops(tailnet, "add-server", "--yes", "--no-input", str(path), "host2")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "host2: recorded: a canary session as root landed at" in added.stdout

    # Every server and the recorder were reached from the bastion's address.
    for host in ("host1", "host2", "host3"):
        assert sshd_lines_from(lab, host, bastion_ip) > 0, host
