"""Fixtures of the lab tests that run tsops against a simulated tailnet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.lab import Lab
from tests.lab.s3 import S3Server
from tests.lab.tailnet import LabTailnet, lab_tailnet


@pytest.fixture
def tailnet(lab: Lab) -> Iterator[LabTailnet]:
    """The simulated tailnet (control plane, package repository) around the lab."""
    with lab_tailnet(lab) as running:
        yield running


@pytest.fixture
def lab_s3(lab: Lab) -> Iterator[S3Server]:
    """moto on the lab bridge, reachable from the recorder hosts."""
    with S3Server(host=lab.gateway) as server:
        yield server
