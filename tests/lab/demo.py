"""`make demo`: bring the lab up and run tsops against it for real, then tear it down.

It boots the hosts that inventories/lab.yaml names, serves the simulated tailnet on the lab
bridge, and runs tsops as an operator would: check, plan, bootstrap (the recorder on host3 and
its health gate, the servers, then the policy file), bootstrap again to show that a converged
rerun changes nothing, status to show that nothing drifted, and verify: a canary Tailscale SSH
session to each server from this machine (a node of the lab's tailnet), whose recording tsops
then finds on the recorder. One of those recordings is shown where the recorder wrote it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.lab.errors import LabError, LabUnavailable
from tests.lab.inspect import leftovers
from tests.lab.lab import Lab
from tests.lab.tailnet import TOKEN_VARIABLE, lab_tailnet
from tests.sim.recorder.bundle import allow_port_80, build_executable

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab.yaml"
CONTROL_PORT, REPO_PORT = 8088, 8089


def say(text: str) -> None:
    """Print a demo heading."""
    print(f"\n== {text}", flush=True)


def main() -> int:
    """Run the demo; return the process exit code."""
    tsops = Path(sys.executable).with_name("tsops")
    inventory = str(INVENTORY.relative_to(REPO))
    started = time.monotonic()
    say("starting the lab: 3 Debian hosts booted with systemd-nspawn")
    try:
        with Lab(host_count=3, requested_slot=0) as lab, \
                lab_tailnet(lab, CONTROL_PORT, REPO_PORT) as tailnet:
            print(f"   up in {time.monotonic() - started:.1f}s on {lab.network}; control plane "
                  f"{tailnet.control.url}, packages {tailnet.repo.url}", flush=True)
            for host in lab.hosts:
                with host.connection() as conn:
                    result = conn.run(
                        "echo $(hostname) $(systemctl is-system-running --wait) "
                        "$(. /etc/os-release; echo $PRETTY_NAME)", hide=True, warn=True,
                    )
                print(f"   ssh root@{host.ip}: {result.stdout.strip()}", flush=True)
            build_executable(lab.workdir / "tsrecorder")
            allow_port_80(lab.host("host3"))  # the simulator binds :80 as its service user
            env = {**os.environ, TOKEN_VARIABLE: tailnet.token}
            steps = [
                ["check", inventory],
                ["plan", inventory],
                ["bootstrap", "--yes", inventory],
                ["bootstrap", "--yes", inventory],
                ["status", inventory],
                ["verify", inventory],
            ]
            for args in steps:
                say("tsops " + " ".join(args))
                if subprocess.run([str(tsops), *args], env=env, cwd=REPO,
                                  check=False).returncode != 0:
                    print("demo: tsops failed", file=sys.stderr)
                    return 1
            say("the control plane's devices")
            for device in tailnet.control.state.devices():
                print(f"   {device.hostname}: {device.node_id} {' '.join(device.tags)} "
                      f"ssh={'on' if device.ssh else 'off'}", flush=True)
            say("the recordings on host3, and the header of one")
            listing = lab.host("host3").nsenter(
                "find /var/lib/tsrecorder/recordings -name '*.cast' | sort").stdout.split()
            for path in listing:
                print(f"   {path}", flush=True)
            if not listing:
                print("demo: no recording on host3", file=sys.stderr)
                return 1
            header = lab.host("host3").nsenter(f"head -1 {listing[0]}").stdout.strip()
            print(f"   {header}", flush=True)
            say("stopping the lab")
        left = leftovers(lab.slot)
        if left:
            print("demo: the lab left behind: " + "; ".join(left), file=sys.stderr)
            return 1
        print("   no container, namespace, bridge, mount or process left behind", flush=True)
        return 0
    except (LabUnavailable, LabError) as error:
        print(f"demo: the lab could not run: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
