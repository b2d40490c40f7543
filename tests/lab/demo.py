"""`make demo`: bring the lab up and run tsops against it for real, then tear it down.

Grows with tsops: today it boots the hosts that inventories/lab.yaml names, shows each is a
real systemd host reachable over SSH, and runs `tsops check` on that inventory.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.lab.errors import LabError, LabUnavailable
from tests.lab.inspect import leftovers
from tests.lab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab.yaml"


def main() -> int:
    """Run the demo; return the process exit code."""
    tsops = Path(sys.executable).with_name("tsops")
    started = time.monotonic()
    print("== starting the lab: 3 Debian hosts booted with systemd-nspawn", flush=True)
    try:
        with Lab(host_count=3, requested_slot=0) as lab:
            print(f"   up in {time.monotonic() - started:.1f}s on {lab.network}", flush=True)
            for host in lab.hosts:
                with host.connection() as conn:
                    result = conn.run(
                        "echo $(hostname) $(systemctl is-system-running --wait) "
                        "$(. /etc/os-release; echo $PRETTY_NAME)",
                        hide=True, warn=True,
                    )
                print(f"   ssh root@{host.ip}: {result.stdout.strip()}", flush=True)
            print(f"== tsops check {INVENTORY.relative_to(REPO)}", flush=True)
            check = subprocess.run([str(tsops), "check", str(INVENTORY)], check=False)
            print("== stopping the lab", flush=True)
        left = leftovers(lab.slot)
        if left:
            print("demo: the lab left behind: " + "; ".join(left), file=sys.stderr)
            return 1
        print("   no container, namespace, bridge, mount or process left behind", flush=True)
        return check.returncode
    except (LabUnavailable, LabError) as error:
        print(f"demo: the lab could not run: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
