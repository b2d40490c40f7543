"""The session generator against live recorders: rule choice, recorder order, fail-closed."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from tests.sim.control import ControlServer
from tests.sim.control.state import Device
from tests.sim.recorder.cast import OutputChunk
from tests.sim.recorder.conftest import ALICE, BOB, CI, RecorderProcess, StartRecorder
from tests.sim.recorder.session import Outcome, run_session

OUTPUT = [OutputChunk(round(0.1 * i, 1), f"line {i}\r\n") for i in range(1, 6)]


def killing_after(recorder: RecorderProcess, count: int) -> Iterator[OutputChunk]:
    """Yield OUTPUT, killing the recorder after `count` chunks were written."""
    for index, chunk in enumerate(OUTPUT):
        if index == count:
            recorder.kill()
        yield chunk


def test_first_matching_rule_wins(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    start_recorder(str(tmp_path / "rec"))

    deploy = run_session(control, "web1", CI, "deploy", OUTPUT)
    as_root = run_session(control, "web1", CI, "root", OUTPUT, command="uptime", height=0,
                          width=0)

    assert deploy.outcome is Outcome.UNRECORDED
    assert deploy.rule is not None and deploy.rule.index == 0
    assert deploy.attempts == ()
    assert deploy.delivered == len(OUTPUT)
    assert as_root.outcome is Outcome.RECORDED
    assert as_root.rule is not None and as_root.rule.index == 1
    header = json.loads((tmp_path / "rec" / str(as_root.key)).read_bytes().splitlines()[0])
    assert header["srcNodeTags"] == ["tag:ci"]
    assert "srcNodeUser" not in header
    assert header["command"] == "uptime"
    assert (header["width"], header["height"]) == (0, 0)
    assert header["sshUser"] == header["localUser"] == "root"
    assert re.fullmatch(r"ssh-conn-\d{8}T\d{6}-[0-9a-f]{10}", header["connectionID"])


def test_no_matching_rule_denies(control: ControlServer, server_device: Device) -> None:
    result = run_session(control, "web1", BOB, "root", OUTPUT)

    assert result.outcome is Outcome.DENIED
    assert not result.accepted


def test_enforced_rule_with_no_recorder_online_runs_unrecorded(
    control: ControlServer, server_device: Device
) -> None:
    # No node carries the recorder tag: Tailscale SSH is sent no recorder address and runs the
    # session unrecorded even under enforceRecorder (fail-open, reference section 6).
    result = run_session(control, "web1", ALICE, "alice", OUTPUT)

    assert result.outcome is Outcome.UNRECORDED
    assert result.accepted
    assert result.rule is not None and result.rule.enforce_recorder
    assert result.attempts == ()
    assert result.delivered == len(OUTPUT)


def test_enforced_recorder_gone_offline_runs_unrecorded(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"))
    recorder.kill()
    control.state.advance_clock(60)  # its device is offline now: no recorder address is sent

    result = run_session(control, "web1", ALICE, "alice", OUTPUT)

    assert result.outcome is Outcome.UNRECORDED
    assert result.attempts == ()


def test_enforced_recorder_dead_refuses(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"))
    recorder.kill()  # still online in the control plane for 15 s, but nothing listens

    result = run_session(control, "web1", ALICE, "alice", OUTPUT)

    assert result.outcome is Outcome.REFUSED
    [attempt] = result.attempts
    assert attempt.error is not None and "Connection refused" in attempt.error


def test_unenforced_rule_without_recorder_is_accepted_unrecorded(
    control: ControlServer, server_device: Device
) -> None:
    result = run_session(control, "web1", BOB, "bob", OUTPUT)

    assert result.outcome is Outcome.UNRECORDED
    assert result.accepted
    assert result.rule is not None and result.rule.index == 2
    assert result.delivered == len(OUTPUT)


def test_recorders_are_tried_lowest_ip_first(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    first = start_recorder(str(tmp_path / "a"))  # registered first: the lower tailnet IP
    start_recorder(str(tmp_path / "b"))
    [low, high] = sorted((d for d in control.state.devices() if "tag:recorder" in d.tags),
                         key=lambda d: tuple(int(p) for p in d.addresses[0].split(".")))

    before = run_session(control, "web1", ALICE, "alice", OUTPUT)
    first.kill()
    after = run_session(control, "web1", ALICE, "alice", OUTPUT)

    assert before.recorder is not None and before.recorder.node_id == low.node_id
    assert len(before.attempts) == 1
    assert after.outcome is Outcome.RECORDED
    assert after.recorder is not None and after.recorder.node_id == high.node_id
    assert [a.recorder.node_id for a in after.attempts] == [low.node_id, high.node_id]
    assert after.attempts[0].error is not None
    assert (tmp_path / "b" / str(after.key)).read_bytes() == after.sent


def test_enforced_upload_failing_mid_way_ends_the_session(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"))

    result = run_session(control, "web1", ALICE, "alice", killing_after(recorder, 2))

    assert result.outcome is Outcome.ENDED
    assert result.accepted
    # The write right after the kill may still land in the socket buffer, as it would for the
    # real SSH server; the one after it cannot.
    assert result.delivered in (2, 3)
    assert result.failure is not None
    [partial] = (tmp_path / "rec" / server_device.node_id).iterdir()
    assert result.sent.startswith(partial.read_bytes())  # a truncated .cast stays behind


def test_unenforced_upload_failing_mid_way_continues_unrecorded(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"), tag="tag:spare-recorder")

    result = run_session(control, "web1", BOB, "bob", killing_after(recorder, 2))

    assert result.outcome is Outcome.RECORDING_FAILED
    assert result.delivered == len(OUTPUT)


def test_missing_acks_end_an_enforced_session(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"))

    def stalling() -> Iterator[OutputChunk]:
        yield OUTPUT[0]
        os.kill(recorder.process.pid, signal.SIGSTOP)  # alive, connected, silent
        for chunk in OUTPUT[1:]:
            time.sleep(0.6)
            yield chunk

    try:
        result = run_session(control, "web1", ALICE, "alice", stalling(), ack_window=1.0)
    finally:
        os.kill(recorder.process.pid, signal.SIGCONT)

    assert result.outcome is Outcome.ENDED
    assert result.failure == "did not receive ack frames from the recorder in 1.0s"
    assert result.delivered < len(OUTPUT)
