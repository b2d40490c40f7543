"""The simulated Tailscale control plane (API v2 subset and enrollment), started in-process."""

from tests.sim.control.server import ControlServer

__all__ = ["ControlServer"]
