"""Nothing the lab starts survives it: not after a pass, a failure, an interrupt or a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lab_unavailable
from tests.lab.errors import LabUnavailable
from tests.lab.inspect import leftovers
from tests.lab.journal import process_start_time, reap_stale
from tests.lab.lab import Lab
from tests.lab.rootfs import check_prerequisites

REPO = Path(__file__).resolve().parents[2]
# A lab owner in another process: it boots two hosts and an S3 server, says where, then waits.
HOLDER = """
import sys, time
from tests.lab.lab import Lab
from tests.lab.s3 import S3Server
with Lab(host_count=2) as lab:
    s3 = S3Server(host=lab.gateway)
    s3.start(journal=lab.journal)
    print(lab.slot, s3.process.pid, s3.ca_bundle.parent, flush=True)
    time.sleep(600)
"""


@pytest.fixture(autouse=True)
def _lab_possible() -> None:
    try:
        check_prerequisites()
    except LabUnavailable as error:
        lab_unavailable(error)


def start_holder() -> tuple[subprocess.Popen[str], int, int, Path]:
    """Start a lab in a child process; return it, its lab slot, its S3 server's PID and the
    private directory of the server's TLS key."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"the lab holder died with {child.wait()}"
    slot, s3_pid, tls = int(line.split()[0]), int(line.split()[1]), Path(line.split()[2])
    assert leftovers(slot), "the holder's lab should be running"
    assert tls.is_dir()
    return child, slot, s3_pid, tls


@pytest.mark.lab
def test_stop_leaves_nothing_behind() -> None:
    with Lab(host_count=2) as lab:
        slot = lab.slot
        pids = [h.process.pid for h in lab.hosts if h.process]
        assert len(leftovers(slot)) >= 2
    assert leftovers(slot) == []
    assert all(process_start_time(pid) is None for pid in pids)


@pytest.mark.lab
def test_a_failing_body_still_cleans_up() -> None:
    slot = -1
    with pytest.raises(RuntimeError, match="test body failed"), Lab(host_count=1) as lab:
        slot = lab.slot
        raise RuntimeError("test body failed")
    assert leftovers(slot) == []


@pytest.mark.lab
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_owner_cleans_up(signum: signal.Signals) -> None:
    child, slot, s3_pid, tls = start_holder()
    try:
        child.send_signal(signum)
        child.wait(timeout=60)
        assert leftovers(slot) == []
        assert process_start_time(s3_pid) is None
        assert not tls.exists()
    finally:
        child.kill()
        child.wait()
        reap_stale()


@pytest.mark.lab
def test_a_killed_owner_is_reaped_by_the_next_lab() -> None:
    child, slot, s3_pid, tls = start_holder()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # SIGKILL cannot be handled: the hosts and the server outlive their owner...
    assert leftovers(slot)
    assert process_start_time(s3_pid) is not None and tls.is_dir()
    # ...until the next lab starts, which reads the dead owner's journal and removes it all.
    with Lab(host_count=1) as lab:
        assert lab.slot == slot or leftovers(slot) == []
    assert leftovers(slot) == []
    assert process_start_time(s3_pid) is None
    assert not tls.exists()  # the S3 server's TLS key with it
