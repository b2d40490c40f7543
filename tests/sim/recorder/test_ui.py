"""The recorder's web UI (`--ui`): listing and fetching recordings, and the partial-file bug."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.sim.control import ControlServer
from tests.sim.control.state import Device
from tests.sim.recorder.cast import OutputChunk, cast_header, render_cast
from tests.sim.recorder.conftest import ALICE, BOB, StartRecorder, trusting
from tests.sim.recorder.session import Outcome, run_session
from tests.sim.recorder.test_pure import STARTED

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.lab.s3 import S3Server

OUTPUT = [OutputChunk(0.1, "$ ")]


def get(url: str) -> bytes:
    """GET a URL of the UI."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def test_ui_lists_and_serves_recordings_and_a_partial_file_breaks_the_listing(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path,
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"), extra=["--ui"])
    result = run_session(control, "web1", ALICE, "alice", OUTPUT)
    assert result.outcome is Outcome.RECORDED

    page = get(f"http://{recorder.address}:443/").decode()
    assert server_device.node_id in page
    assert "alice@example.com" in page
    assert get(f"http://{recorder.address}:443/recordings/{result.key}") == result.sent

    whole = render_cast(cast_header(source=BOB, ssh_user="bob", started=STARTED), OUTPUT)
    (tmp_path / "rec" / server_device.node_id / "partial.cast").write_bytes(whole[:20])
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"http://{recorder.address}:443/")
    assert refused.value.code == 500


def test_ui_reads_back_from_s3(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder,
    s3_server: S3Server, s3: S3Client,
) -> None:
    s3.create_bucket(Bucket="recordings")
    recorder = start_recorder(
        f"s3://{s3_server.address}",
        extra=["--bucket", "recordings", "--access-key", "AKIDEXAMPLE", "--secret-key", "secret"],
        env={"TSRECORDER_UI": "true", **trusting(s3_server)},
    )
    result = run_session(control, "web1", ALICE, "alice", OUTPUT)

    assert f"/recordings/{result.key}" in get(f"http://{recorder.address}:443/").decode()
    assert get(f"http://{recorder.address}:443/recordings/{result.key}") == result.sent
    with pytest.raises(urllib.error.HTTPError) as missing:
        get(f"http://{recorder.address}:443/recordings/{server_device.node_id}/nope.cast")
    assert missing.value.code == 404
