"""The lab's pure parts: which mirror the rootfs is built from, which addresses a lab owns."""

from __future__ import annotations

import pytest

from tests.lab import config
from tests.lab.rootfs import _mirror_in

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""

def test_mirror_from_deb822_sources() -> None:
    assert _mirror_in(DEB822) == "http://deb.debian.org/debian"

def test_mirror_from_one_line_sources() -> None:
    text = (
        "deb [arch=amd64] https://packages.example.com/apt stable main\n"
        "deb [signed-by=/k.gpg] http://mirror.example.org/debian bookworm main contrib\n"
    )
    assert _mirror_in(text) == "http://mirror.example.org/debian"

def test_no_mirror_for_other_suites() -> None:
    assert _mirror_in("deb http://deb.debian.org/debian bullseye main\n") is None

def test_each_slot_owns_its_own_24_inside_the_lab_network() -> None:
    first, second = config.slot_network(0), config.slot_network(1)
    assert first.prefixlen == second.prefixlen == 24
    assert first.subnet_of(config.LAB_NETWORK) and second.subnet_of(config.LAB_NETWORK)
    assert not first.overlaps(second)
    assert config.slot_network(config.slot_count() - 1).broadcast_address == (
        config.LAB_NETWORK.broadcast_address
    )
    with pytest.raises(ValueError, match="outside"):
        config.slot_network(config.slot_count())
