"""An Ansible inventory of the lab's hosts, imported into tsops, checked and planned for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, LabTailnet

INI = """\
# The lab's servers as an Ansible team keeps them.
[web]
host1 ansible_user=root

[db]
host2

[db:vars]
ansible_user=root
nightly_backup=yes

[lab:children]
web
db
"""

YAML = """\
all:
  vars:
    ansible_user: root
  children:
    web_servers:
      hosts:
        host1:
    databases:
      hosts:
        host2:
"""


def tsops(tailnet: LabTailnet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, TOKEN_VARIABLE: tailnet.token}
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=600)


@pytest.mark.lab(hosts=2)
def test_ansible_inventories_imported_checked_and_planned(lab: Lab, tailnet: LabTailnet,
                                                          tmp_path: Path) -> None:
    # The base names the lab's tailnet and connection; the servers come from Ansible.
    base = tailnet.inventory(tmp_path / "base.yaml", {"host1": (), "host2": ()})
    for name, text, groups in (("hosts.ini", INI, {"web": ["host1"], "db": ["host2"]}),
                               ("hosts.yaml", YAML, {"web-servers": ["host1"],
                                                     "databases": ["host2"]})):
        source = tmp_path / name
        source.write_text(text)
        out = tmp_path / f"{name}.tsops.yaml"
        imported = tsops(tailnet, "inventory", "import", "ansible", str(source), "--base",
                         str(base), "--to", str(out))
        assert imported.returncode == 0, imported.stderr
        checked = tsops(tailnet, "check", str(out))
        assert checked.returncode == 0, checked.stderr
        planned = tsops(tailnet, "plan", "--no-input", "-o", "json", str(out))
        assert planned.returncode == 0, planned.stdout + planned.stderr + out.read_text()
        hosts = {h["name"]: h for h in json.loads(planned.stdout)["hosts"]}
        assert set(hosts) == {"host1", "host2"}
        for host in hosts.values():
            # Reached over SSH as root and planned: not enrolled yet, so there is work to do.
            assert host["problem"] is None, host
            assert host["changes"], host
        limited = tsops(tailnet, "plan", "--no-input", "-o", "json", "-l",
                        next(iter(groups)), str(out))
        assert limited.returncode == 0, limited.stderr
        assert [h["name"] for h in json.loads(limited.stdout)["hosts"]] == ["host1"]
