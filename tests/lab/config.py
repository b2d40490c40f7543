"""Every setting of the lab in one place: its network, its caches and its naming."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

# The one private network the lab owns. Each running lab takes one /24 slot of it, so that
# several labs (parallel test runs, a demo beside a test run) never share a bridge or address.
# The lab creates every address it uses inside this network and sends nothing anywhere else.
LAB_NETWORK = ipaddress.IPv4Network(os.environ.get("TSOPS_LAB_NETWORK", "10.213.0.0/16"))
SLOT_PREFIXLEN = 24
# Inside a slot: the bridge (the control machine's side) is .1, hosts start at .11.
GATEWAY_OFFSET = 1
FIRST_HOST_OFFSET = 11

# The lab's tailnet: Tailscale hands out IPv4 addresses in 100.64.0.0/10. Each lab slot has its
# own /24 there (slot N: 100.64.N.0/24 with the default network), where its control simulator
# hands out node addresses; the first address is the control machine's own node (the
# operator), put on the lab bridge so that tailnet traffic to the lab's nodes rides the bridge.
TAILNET_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
OPERATOR_OFFSET = 1

# The Debian rootfs is built once and cached outside the repository.
CACHE_DIR = Path(os.environ.get("TSOPS_LAB_CACHE", "/var/cache/tsops-lab"))
# Live state of running labs: keys, logs and a record of what each created, for cleanup.
RUN_DIR = Path(os.environ.get("TSOPS_LAB_RUN", "/run/tsops-lab"))

DEBIAN_SUITE = "bookworm"
# Every interface, namespace and bridge name starts with this, so leftovers are findable.
NAME_PREFIX = "tsl"

# Each host's container runs in cgroups of its own, below this name, in each hierarchy present.
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"),
                      Path("/sys/fs/cgroup"))
CGROUP_NAME = "tsops-lab"

# How long a host may take to answer SSH after its container starts.
BOOT_TIMEOUT_S = 60.0
# How long a container may take to power off before it is killed.
STOP_TIMEOUT_S = 15.0


def slot_network(slot: int) -> ipaddress.IPv4Network:
    """Return the /24 of the lab network that lab slot `slot` owns."""
    if not 0 <= slot < slot_count():
        raise ValueError(f"lab slot {slot} is outside {LAB_NETWORK}")
    size = 2 ** (32 - SLOT_PREFIXLEN)
    return ipaddress.IPv4Network((int(LAB_NETWORK.network_address) + slot * size, SLOT_PREFIXLEN))


def slot_count() -> int:
    """Return how many labs may run at once on this machine."""
    return int(2 ** (SLOT_PREFIXLEN - LAB_NETWORK.prefixlen))


def slot_tailnet(slot: int) -> ipaddress.IPv4Network:
    """Return the /24 of the tailnet range that lab slot `slot` hands out node addresses in."""
    slot_network(slot)  # the same range check
    size = 2 ** (32 - SLOT_PREFIXLEN)
    return ipaddress.IPv4Network(
        (int(TAILNET_NETWORK.network_address) + slot * size, SLOT_PREFIXLEN)
    )
