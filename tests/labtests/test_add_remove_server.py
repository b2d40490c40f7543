"""`tsops add-server` and `remove-server` on a bootstrapped lab: one host in, then out again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet
from tests.labtests.test_main_job import bootstrap, policy_writes
from tests.sim.recorder.bundle import allow_port_80


def commented_inventory(tailnet: LabTailnet, tmp_path: Path) -> Path:
    """host1 the only server, host3 the recorder, one rule; host2 left out; comments about."""
    path = tailnet.recorded_inventory(tmp_path, {"host1": ()})
    text = path.read_text()
    assert "  hosts:\n    host1:\n" in text
    text = ("# The lab's inventory: these comments must survive.\n"
            + text.replace("    host1:\n", "    host1:   # the first server\n")
            .replace("ssh_rules:\n", "# rules tsops manages\nssh_rules:  # one rule\n"))
    path.write_text(text)
    return path


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run tsops as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "tsops", *args], capture_output=True, text=True, check=False,
        timeout=600, env={**os.environ, TOKEN_VARIABLE: tailnet.token},
    )


@pytest.mark.lab(hosts=3)
def test_add_server_then_remove_it(lab: Lab, tailnet: LabTailnet, tmp_path: Path) -> None:
    allow_port_80(lab.host("host3"))
    path = commented_inventory(tailnet, tmp_path)
    code, _, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    before = path.read_text()
    writes = policy_writes(tailnet)

    dry = tsops(tailnet, "add-server", "--dry-run", "--no-input", "--tag", "tag:web",
                str(path), "host2")
    assert dry.returncode == 0, dry.stderr
    # The file writes lists in block style, dashes at the key's column: the new tags do too.
    new_lines = ["    host2:\n", "      tags:\n", "      - tag:web\n"]
    assert "".join(f"+{line}" for line in new_lines) in dry.stdout and "dry run" in dry.stdout
    assert path.read_text() == before
    assert not any(d.hostname == "host2" for d in tailnet.control.state.devices())

    added = tsops(tailnet, "add-server", "--yes", "--no-input", "--tag", "tag:web",
                  str(path), "host2")
    assert added.returncode == 0, added.stdout + added.stderr
    after = path.read_text().splitlines(keepends=True)
    start = after.index("    host2:\n")
    assert after[start:start + 3] == new_lines
    assert after[:start] + after[start + 3:] == before.splitlines(keepends=True)
    device = next(d for d in tailnet.control.state.devices() if d.hostname == "host2")
    assert sorted(device.tags) == ["tag:server", "tag:web"]
    # tag:server is in the rule's dst and tag:web is owned already: the policy needs no write.
    assert "policy file: no change" in added.stdout
    assert policy_writes(tailnet) == writes
    # The proof: a canary session over Tailscale SSH, its recording found under host2's node.
    proof = next(line for line in added.stdout.splitlines() if line.startswith("host2: recorded"))
    key = proof.split(" landed at ", 1)[1].split(" after ")[0]
    assert key.startswith(f"{device.node_id}/") and key.endswith(".cast")
    cast = lab.host("host3").nsenter(f"cat /var/lib/tsrecorder/recordings/{key}").stdout
    assert '"command": "echo tsops-canary-' in cast.splitlines()[0].replace('":"', '": "')

    code, report, stderr = bootstrap(tailnet, path)
    assert code == 0, stderr
    assert report["policy"]["changed"] is False
    assert {h["name"]: h["outcome"] for h in report["hosts"]} == {
        "host1": "unchanged", "host2": "unchanged"}

    current = path.read_bytes()
    duplicate = tsops(tailnet, "add-server", "--yes", "--no-input", str(path), "host2")
    assert duplicate.returncode == 2 and "already in the inventory" in duplicate.stderr
    assert path.read_bytes() == current

    removed = tsops(tailnet, "remove-server", "--logout", "--yes", "--no-input", str(path),
                    "host2")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert path.read_text() == before
    assert not any(d.hostname == "host2" for d in tailnet.control.state.devices())
    status = json.loads(lab.host("host2").nsenter("tailscale status --json").stdout)
    assert status["BackendState"] == "NeedsLogin"

    unknown = tsops(tailnet, "remove-server", "--yes", "--no-input", str(path), "host2")
    assert unknown.returncode == 2 and "not a server" in unknown.stderr
    assert path.read_text() == before

    # Back in (a logged-out host enrolls again as a new device), then out with --uninstall.
    again = tsops(tailnet, "add-server", "--yes", "--no-input", str(path), "host2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "host2: recorded: a canary session as root landed at" in again.stdout
    device = next(d for d in tailnet.control.state.devices() if d.hostname == "host2")
    assert device.tags == ["tag:server"]
    gone = tsops(tailnet, "remove-server", "--uninstall", "--yes", "--no-input", str(path),
                 "host2")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert path.read_text() == before
    assert not any(d.hostname == "host2" for d in tailnet.control.state.devices())
    package = lab.host("host2").nsenter(
        "dpkg-query -W -f='${Status}' tailscale; command -v tailscale || true").stdout
    assert package == "deinstall ok config-files"  # removed, its configuration kept

    # With the recorder unreachable from the new server (a route on host2 that refuses; the
    # recorder stays online: with no online recorder Tailscale SSH would run the session
    # unrecorded instead), the new server enrolls but its canary is refused: exit 3, and the
    # host stays in the inventory for `tsops verify` once the recorder is reachable.
    blocked = f"ip route add prohibit {lab.host('host3').ip}/32"
    lab.host("host2").nsenter(blocked)
    unproved = tsops(tailnet, "add-server", "--yes", "--no-input", "--canary-timeout", "5",
                     str(path), "host2")
    assert unproved.returncode == 3, unproved.stdout + unproved.stderr
    assert "host2: refused:" in unproved.stderr and "tsops verify" in unproved.stderr
    assert "    host2:\n" in path.read_text()
    lab.host("host2").nsenter(blocked.replace(" add ", " del "))
    later = subprocess.run(
        [sys.executable, "-m", "tsops", "verify", "--no-input", "--limit", "host2", str(path)],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, TOKEN_VARIABLE: tailnet.token})
    assert later.returncode == 0, later.stdout + later.stderr
