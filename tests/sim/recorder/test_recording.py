"""The recorder on loopback: recordings landing in S3 and in a directory, over v2 and legacy v1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.sim.control import ControlServer
from tests.sim.control.state import Device
from tests.sim.recorder.cast import OutputChunk, shell_output
from tests.sim.recorder.conftest import ALICE, StartRecorder, trusting
from tests.sim.recorder.session import Outcome, V1Upload, V2Upload, run_session

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.lab.s3 import S3Server

BUCKET = "session-recordings"


S3_ARGS = ["--bucket", BUCKET, "--access-key", "AKIDEXAMPLE", "--secret-key", "secret"]


def test_recording_lands_in_s3_under_the_server_node_id(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder,
    s3_server: S3Server, s3: S3Client,
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    start_recorder(f"s3://{s3_server.address}", extra=S3_ARGS,
                   env={"S3_SEND_CONTENT_MD5": "true", **trusting(s3_server)})
    output = shell_output("alice@web1:~$ ", [("uptime", " 10:00:00 up 3 days\n")])

    result = run_session(control, "web1", ALICE, "alice", output)

    assert result.outcome is Outcome.RECORDED, result
    assert result.protocol == "v2"
    assert result.key is not None
    node_dir, name = result.key.split("/")
    assert node_dir == server_device.node_id
    assert name.endswith(".cast")
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [item["Key"] for item in listed] == [result.key]
    stored = s3.get_object(Bucket=BUCKET, Key=result.key)["Body"].read()
    assert stored == result.sent
    header = json.loads(stored.splitlines()[0])
    assert header["srcNodeUser"] == "alice@example.com"
    assert len(stored.splitlines()) == 1 + len(output)


def test_recording_lands_in_a_local_directory(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder, tmp_path: Path,
) -> None:
    dst = tmp_path / "recordings"  # created by the recorder, as tsrecorder does
    start_recorder(str(dst))

    result = run_session(control, "web1", ALICE, "root", [OutputChunk(0.2, "# ")])

    assert result.outcome is Outcome.RECORDED
    assert result.key is not None
    assert result.key.startswith(f"{server_device.node_id}/")
    assert (dst / result.key).read_bytes() == result.sent


def test_v2_acknowledges_every_byte(
    server_device: Device, start_recorder: StartRecorder, tmp_path: Path,
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"))
    upload = V2Upload.start(recorder.address, 80, f"{recorder.address}:80",
                            server_device.node_id, ack_window=5)
    assert upload is not None
    upload.send(b'{"version":2}\n')
    upload.send(b"x" * 200_000)  # more than one flow-control window
    key = upload.finish()

    assert upload.acked == upload.sent_bytes == 14 + 200_000
    assert (tmp_path / "rec" / key).stat().st_size == 14 + 200_000


def test_legacy_record_endpoint(
    server_device: Device, start_recorder: StartRecorder, tmp_path: Path,
) -> None:
    recorder = start_recorder(str(tmp_path / "rec"))
    upload = V1Upload.start(recorder.address, 80, f"{recorder.address}:80",
                            server_device.node_id)
    upload.send(b'{"version":2}\n')
    upload.send(b'[0.5,"o","hi"]\n')
    key = upload.finish()

    assert (tmp_path / "rec" / key).read_bytes() == b'{"version":2}\n[0.5,"o","hi"]\n'


def test_s3_refusing_the_upload_is_an_error_frame_that_ends_the_session(
    control: ControlServer, server_device: Device, start_recorder: StartRecorder,
    s3_server: S3Server, s3: S3Client,
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    start_recorder(f"s3://{s3_server.address}", extra=S3_ARGS, env=trusting(s3_server))

    def bucket_deleted_mid_session() -> Iterator[OutputChunk]:
        yield OutputChunk(0.1, "$ ")
        s3.delete_bucket(Bucket=BUCKET)
        yield OutputChunk(0.2, "ls\r\n")

    result = run_session(control, "web1", ALICE, "alice", bucket_deleted_mid_session())

    assert result.outcome is Outcome.ENDED
    assert result.failure is not None
    assert "received error from the recorder" in result.failure
    assert "NoSuchBucket" in result.failure
