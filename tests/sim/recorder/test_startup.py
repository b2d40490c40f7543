"""The recorder's documented start-up failures, and keeping its device across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.lab.s3 import S3Server
from tests.sim.control import ControlServer
from tests.sim.recorder.conftest import StartRecorder, run_recorder, trusting

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_s3_mode_requires_the_statedir_flag(executable: Path, tmp_path: Path) -> None:
    # TS_STATE_DIR is not honoured in S3 mode by some versions: the simulator never honours it.
    env = CREDENTIALS | {"TS_STATE_DIR": str(tmp_path), "TSRECORDER_LOGIN_SERVER": "http://x"}
    result = run_recorder(executable, ["--dst", "s3://127.0.0.1:9", "--bucket", "b"], env)

    assert result.returncode == 2
    assert "--statedir is required when recording to S3" in result.stderr


def test_s3_mode_requires_a_bucket(executable: Path, tmp_path: Path) -> None:
    env = CREDENTIALS | {"TSRECORDER_LOGIN_SERVER": "http://x"}
    result = run_recorder(executable, ["--dst", "s3://127.0.0.1:9", "--statedir", str(tmp_path)],
                          env)

    assert result.returncode == 2
    assert "--bucket (or TSRECORDER_BUCKET) is required" in result.stderr


def test_dst_names_an_endpoint_not_a_bucket(executable: Path, tmp_path: Path) -> None:
    env = CREDENTIALS | {"TSRECORDER_LOGIN_SERVER": "http://x"}
    result = run_recorder(executable, ["--dst", "s3://recordings/prefix", "--bucket", "b",
                                       "--statedir", str(tmp_path)], env)

    assert result.returncode == 2
    assert "give the S3 endpoint as s3://<endpoint-host>" in result.stderr


def test_bucket_that_does_not_exist(
    executable: Path, tmp_path: Path, s3_server: S3Server, s3: S3Client
) -> None:
    env = CREDENTIALS | {"TSRECORDER_LOGIN_SERVER": "http://127.0.0.1:9"} | trusting(s3_server)
    result = run_recorder(executable, ["--dst", f"s3://{s3_server.address}", "--bucket",
                                       "missing", "--statedir", str(tmp_path)], env)

    assert result.returncode == 1
    assert "bucket 'missing'" in result.stderr
    assert "NoSuchBucket" in result.stderr


@pytest.mark.lab
def test_s3_over_plain_http_is_refused(executable: Path, tmp_path: Path) -> None:
    # The same moto, bucket and credentials the recorder used to upload to, minus TLS:
    # `--dst=s3://host:port` always means HTTPS, as for the real recorder.
    with S3Server(tls=False) as plain:
        plain.client().create_bucket(Bucket="recordings")
        env = CREDENTIALS | {"TSRECORDER_LOGIN_SERVER": "http://127.0.0.1:9"}
        result = run_recorder(executable, ["--dst", f"s3://{plain.address}", "--bucket",
                                           "recordings", "--statedir", str(tmp_path)], env)

    assert result.returncode == 1
    assert f"S3 endpoint {plain.address}: TLS failed" in result.stderr
    assert "must serve HTTPS" in result.stderr


def test_s3_with_a_certificate_the_system_does_not_trust_is_refused(
    executable: Path, tmp_path: Path, s3_server: S3Server, s3: S3Client
) -> None:
    s3.create_bucket(Bucket="recordings")
    env = CREDENTIALS | {"TSRECORDER_LOGIN_SERVER": "http://127.0.0.1:9"}  # no lab CA
    result = run_recorder(executable, ["--dst", f"s3://{s3_server.address}", "--bucket",
                                       "recordings", "--statedir", str(tmp_path)], env)

    assert result.returncode == 1
    assert f"S3 endpoint {s3_server.address}: TLS failed" in result.stderr
    assert "certificate verify failed" in result.stderr


def test_statedir_that_does_not_exist_is_not_created(executable: Path, tmp_path: Path) -> None:
    missing = tmp_path / "state"
    result = run_recorder(executable, ["--dst", str(tmp_path / "rec"), "--statedir", str(missing)],
                          {"TSRECORDER_LOGIN_SERVER": "http://127.0.0.1:9"})

    assert result.returncode == 2
    assert f"state directory {missing} does not exist" in result.stderr
    assert not missing.exists()


def test_statedir_not_writable_by_the_recorder_user(executable: Path) -> None:
    # Next to the executable: a directory every user can traverse, unlike pytest's tmp_path.
    statedir = executable.parent / "state"
    statedir.mkdir(mode=0o755)  # root's; the recorder runs as nobody
    try:
        result = run_recorder(executable, ["--dst", "/nonexistent", "--statedir", str(statedir)],
                              {"TSRECORDER_LOGIN_SERVER": "http://127.0.0.1:9"}, user="nobody")
    finally:
        statedir.rmdir()

    assert result.returncode == 2
    assert f"state directory {statedir} is not writable" in result.stderr


def test_no_auth_key(executable: Path, control: ControlServer, tmp_path: Path) -> None:
    result = run_recorder(executable, ["--dst", str(tmp_path / "rec"), "--statedir", str(tmp_path)],
                          {"TSRECORDER_LOGIN_SERVER": control.url,
                           "TSRECORDER_SIM_LISTEN_ADDRESS": "127.77.250.1"})

    assert result.returncode == 1
    assert "NeedsLogin: no auth key" in result.stderr
    assert control.state.devices() == []


def test_invalid_auth_key(executable: Path, control: ControlServer, tmp_path: Path) -> None:
    key = control.create_auth_key(["tag:recorder"])
    control.state.revoke_key(key.id)
    key_file = tmp_path / "authkey"
    key_file.write_text(key.secret + "\n")
    result = run_recorder(executable, ["--dst", str(tmp_path / "rec"), "--statedir", str(tmp_path)],
                          {"TSRECORDER_LOGIN_SERVER": control.url, "TS_AUTHKEY_FILE": str(key_file),
                           "TSRECORDER_SIM_LISTEN_ADDRESS": "127.77.250.1"})

    assert result.returncode == 1
    assert "registering with the auth key failed: 401" in result.stderr
    assert "revoked" in result.stderr


def test_restart_keeps_the_device_without_a_key(
    control: ControlServer, start_recorder: StartRecorder, tmp_path: Path
) -> None:
    first = start_recorder(str(tmp_path / "rec"))
    [device] = control.state.devices()
    assert device.tags == ["tag:recorder"]  # from its auth key
    assert first.stop() == 0

    # Same address: the enrollment protocol's poll does not carry a new endpoint.
    start_recorder(str(tmp_path / "rec"), statedir=first.statedir, env={"TS_AUTHKEY": ""},
                   address=first.address)

    [again] = control.state.devices()
    assert again.node_id == device.node_id
