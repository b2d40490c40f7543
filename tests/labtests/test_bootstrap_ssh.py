"""Host keys are never trusted silently: a changed or unknown key stops that host only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import LabTailnet
from tests.labtests.test_bootstrap import devices, tsops


@pytest.mark.lab(hosts=3)
def test_changed_and_unknown_host_keys_are_refused(
    lab: Lab, tailnet: LabTailnet, tmp_path: Path
) -> None:
    host1, host2, host3 = lab.hosts
    lines = {line.split()[0]: line for line in lab.known_hosts.read_text().splitlines()}
    # host1 now presents a key other than the recorded one; host3 is not recorded at all.
    forged = lines[host2.ip].replace(host2.ip, host1.ip, 1)
    lab.known_hosts.write_text(f"{forged}\n{lines[host2.ip]}\n")
    inventory = tailnet.inventory(tmp_path / "inventory.yaml", {h.name: () for h in lab.hosts})
    result = tsops(tailnet, "bootstrap", "--yes", "--no-input", str(inventory))
    assert result.returncode == 1
    def fingerprint(line: str) -> str:
        listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=" ".join(line.split()[1:]),
                                capture_output=True, text=True, check=True)
        return listed.stdout.split()[1]

    real1 = (host1.workdir / "ssh_host_ed25519_key.pub").read_text()
    real3 = (host3.workdir / "ssh_host_ed25519_key.pub").read_text()
    assert (f"host1: failed: {host1.ip}: host key changed: it offered ssh-ed25519 key "
            f"{fingerprint('x ' + real1)}, known_hosts has ssh-ed25519 key "
            f"{fingerprint(forged)}: refusing to connect (if the change is expected, replace the "
            "old key in known_hosts)") in result.stderr
    assert (f"host3: failed: {host3.ip}: unknown host key (ssh-ed25519 key "
            f"{fingerprint('x ' + real3)}), not in known_hosts ({lab.known_hosts}, ") \
        in result.stderr
    assert lab.known_hosts.read_text() == f"{forged}\n{lines[host2.ip]}\n"  # never rewritten
    assert sorted(devices(tailnet)) == ["host2"]
    for untouched in (host1, host3):
        assert untouched.nsenter("test -e /usr/bin/tailscale", check=False).returncode == 1
