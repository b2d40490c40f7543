"""Fixtures shared by every test: the lab, its S3 server, and the rule that CI never skips it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.lab.errors import LabUnavailable
from tests.lab.lab import Lab
from tests.lab.s3 import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LAB_FIXTURES = {"lab", "s3_server", "s3"}


def in_ci() -> bool:
    """Return whether this run is CI's, where a lab that cannot start is a failure."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def lab_unavailable(error: Exception) -> None:
    """Fail in CI, skip elsewhere, saying why the lab cannot run here."""
    if in_ci():
        pytest.fail(f"the lab cannot start here, and CI must run it: {error}", pytrace=False)
    pytest.skip(f"the lab cannot start here: {error}")


@pytest.fixture(autouse=True, scope="session")
def private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """tsops's state (the run log, policy history, rotation records) goes to a directory of
    this run, for every tsops the tests start, never to the home of whoever runs them."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


def pytest_configure(config: pytest.Config) -> None:
    """Give the processes the tests start a working Ctrl-C, however the suite was started.

    A shell without job control starts background commands with SIGINT ignored, and an ignored
    signal stays ignored in every child: the tests that interrupt tsops or a lab owner with
    SIGINT would then see it ignored. A handler here is reset to the default in each child.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the lab, so `-m 'not lab'` selects the fast unit tests."""
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker(
            "lab"
        ):
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A running lab with as many hosts as the test's `@pytest.mark.lab(hosts=N)` asks."""
    marker = request.node.get_closest_marker("lab")
    hosts = int(marker.kwargs.get("hosts", 1)) if marker else 1
    running = Lab(host_count=hosts)
    try:
        running.start()
    except LabUnavailable as error:
        running.stop()
        lab_unavailable(error)
    except BaseException:
        running.stop()
        raise
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server on loopback for the whole session, over TLS with its own lab CA."""
    server = S3Server()
    try:
        server.start()
    except LabUnavailable as error:
        server.stop()
        lab_unavailable(error)
    except BaseException:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Client:
    """A boto3 client for the lab's S3 server, emptied before the test.

    The test's environment trusts the server's lab CA (`AWS_CA_BUNDLE`), so tsops run in the
    test or as a subprocess of it reaches the server over HTTPS as it would a real store.
    """
    for name, value in s3_server.client_environment().items():
        monkeypatch.setenv(name, value)
    s3_server.reset()
    return s3_server.client()
