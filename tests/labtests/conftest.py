"""Fixtures of the lab tests that run tsops against a simulated tailnet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.lab import Lab
from tests.lab.tailnet import LabTailnet, lab_tailnet


@pytest.fixture
def tailnet(lab: Lab) -> Iterator[LabTailnet]:
    """The simulated tailnet (control plane, package repository) around the lab."""
    with lab_tailnet(lab) as running:
        yield running
