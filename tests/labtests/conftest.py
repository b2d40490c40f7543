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
def lab_s3(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto on the lab bridge over HTTPS, reachable from the recorder hosts.

    Its lab CA is in every host's trust store and in the test's `AWS_CA_BUNDLE`, so tsops and
    the recorders it deploys verify the server as they would a real S3 endpoint.
    """
    with S3Server(host=lab.gateway) as server:
        server.trust_on(lab.hosts)
        for name, value in server.client_environment().items():
            monkeypatch.setenv(name, value)
        yield server
