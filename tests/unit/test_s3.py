"""The S3 seam (tsops.s3): bounded waits against an endpoint that never answers, the options and
inventory keys that change them, and AWS credential problems as one line with the remedy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    SSOTokenLoadError,
)
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from tsops import s3
from tsops.errors import ExitCode
from tsops.recorders.bucket import gather_bucket
from tsops.recordings.store import S3Store, StoreError

ENDPOINT_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No real AWS configuration, no instance metadata lookups, and no choice left over from
    another test's --profile or --s3-timeout."""
    for name in ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(s3, "_chosen", s3._Choice())
    yield


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never sends a byte (a hung S3)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_defaults_bound_a_hung_endpoint_well_within_20_seconds() -> None:
    client = s3.client(endpoint="http://127.0.0.1:9", region="us-east-1", keys=("a", "b"))
    config: Any = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (s3.TIMEOUT_S, s3.TIMEOUT_S)
    assert config.retries == {"total_max_attempts": s3.ATTEMPTS, "mode": "standard"}
    # Each attempt waits at most TIMEOUT_S; the standard mode's backoff between attempts is
    # below 0.1 s for a timeout (it is not throttling); 5 s are left for everything else.
    assert s3.ATTEMPTS * s3.TIMEOUT_S <= 15


def test_the_command_line_wins_over_the_inventory_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("[profile audit]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "from-env")
    assert s3.settings() == ("from-env", "AWS_PROFILE", s3.TIMEOUT_S)
    assert s3.settings("ops", 9.0) == ("ops", "storage.profile", 9.0)
    s3.choose(timeout=2.5)
    s3.choose(profile="audit")
    assert s3.settings("ops", 9.0) == ("audit", "--profile", 2.5)
    client = s3.client(endpoint="http://127.0.0.1:9", keys=("a", "b"), timeout=9.0)
    assert getattr(client.meta.config, "read_timeout") == 2.5  # noqa: B009 (untyped)
    assert client.meta.region_name == "eu-west-1"  # the chosen profile's, not AWS_PROFILE's


def test_a_hung_endpoint_is_one_line_naming_it_and_the_wait(
    silent_endpoint: str, keys: None
) -> None:
    client = s3.client(endpoint=silent_endpoint, region="us-east-1", timeout=0.3)
    with pytest.raises(s3.S3Error) as raised:
        gather_bucket(client, "acme-recordings")
    message = raised.value.message
    assert message == (f"S3: read bucket acme-recordings: S3 endpoint {silent_endpoint} did not "
                       "answer: waited 0.3 s for an answer to HeadBucket, 3 times (raise it "
                       "with --s3-timeout or timeouts.s3)")
    assert raised.value.reached is False and raised.value.exit_code == ExitCode.FAILED

    with pytest.raises(StoreError) as listed:
        list(S3Store(client, "acme-recordings").list())
    assert listed.value.message.startswith(
        f"cannot list s3://acme-recordings: S3 endpoint {silent_endpoint} did not answer: "
        "waited 0.3 s for an answer to ListObjectsV2")
    assert "\n" not in listed.value.message


def test_recordings_list_against_a_hung_s3_fails_with_one_line(
    silent_endpoint: str, keys: None
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tsops", "recordings", "list", "--s3-timeout", "0.3",
         "--from", "s3://acme-recordings", "--endpoint", silent_endpoint,
         "--region", "us-east-1"],
        capture_output=True, text=True, check=False, env={**os.environ, "TSOPS_STATE_DIR": ""})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"S3 endpoint {silent_endpoint} did not answer: waited 0.3 s" in lines[0]
    assert "Traceback" not in result.stderr and "botocore" not in result.stderr


def test_an_unknown_profile_is_bad_input_naming_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "prodd")
    with pytest.raises(s3.S3CredentialsError) as raised:
        s3.client(region="us-east-1")
    assert raised.value.exit_code == ExitCode.BAD_INPUT
    assert raised.value.message == (
        "S3: AWS profile 'prodd' (from AWS_PROFILE) is not in ~/.aws/config or "
        "~/.aws/credentials: check its spelling (`aws configure list-profiles` lists them)")
    with pytest.raises(s3.S3CredentialsError, match=r"'ops' \(from storage.profile\)"):
        s3.client(region="us-east-1", profile="ops")
    s3.choose(profile="audit")
    with pytest.raises(s3.S3CredentialsError, match=r"'audit' \(from --profile\)"):
        s3.client(region="us-east-1", profile="ops")
    # Found lazily (a profile referring to another one) it reads the same.
    lazy = s3.failure("list s3://b", ProfileNotFound(profile="base"))
    assert isinstance(lazy, s3.S3CredentialsError) and "'base'" in lazy.message


def test_a_known_profile_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("[profile audit]\naws_access_key_id = AKIDAUDIT\n"
                      "aws_secret_access_key = secret\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    client = s3.client(profile="audit")
    credentials: Any = client._request_signer._credentials  # type: ignore[attr-defined]
    assert credentials.access_key == "AKIDAUDIT"
    assert client.meta.region_name == "eu-west-1"


def test_no_credentials_is_bad_input_with_the_remedy(silent_endpoint: str) -> None:
    client = s3.client(endpoint=silent_endpoint, region="us-east-1", timeout=0.3)
    with pytest.raises(StoreError) as raised:
        list(S3Store(client, "acme-recordings").list())
    assert raised.value.exit_code == ExitCode.BAD_INPUT
    assert raised.value.message == (
        "cannot list s3://acme-recordings: no AWS credentials found (Unable to locate "
        "credentials): pass --profile NAME, set storage.profile or AWS_PROFILE, or set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    built = s3.failure("read bucket b", NoCredentialsError())
    assert isinstance(built, s3.S3CredentialsError) and built.reached is False


def test_expired_tokens_and_sso_sessions_say_how_to_renew(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("AWS_PROFILE", "sso-admin")
    expired = s3.failure("read bucket b", ClientError(
        {"Error": {"Code": "ExpiredToken", "Message": "The provided token has expired."}},
        "HeadBucket"))
    assert isinstance(expired, s3.S3CredentialsError)
    assert expired.exit_code == ExitCode.BAD_INPUT
    assert "have expired (ExpiredToken): renew them" in expired.message
    sso = s3.failure("read bucket b", SSOTokenLoadError(error_msg="token expired"))
    assert isinstance(sso, s3.S3CredentialsError)
    assert sso.message.endswith("run `aws sso login --profile sso-admin`")
    unknown = s3.failure("read bucket b", ClientError(
        {"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key"}}, "HeadBucket"))
    assert isinstance(unknown, s3.S3CredentialsError)
    assert "does not accept the AWS credentials" in unknown.message


def test_other_refusals_and_transport_failures_stay_plain_failures() -> None:
    other = s3.failure("read bucket b", ClientError(
        {"Error": {"Code": "SlowDown", "Message": "reduce your rate"}}, "HeadBucket"))
    assert type(other) is s3.S3Error and other.exit_code == ExitCode.FAILED
    assert other.message == "S3: read bucket b: SlowDown: reduce your rate" and other.reached
    hung = s3.failure("list", ReadTimeoutError(endpoint_url="https://s3.example.test/b?x=1"))
    assert hung.message.startswith("S3: list: S3 endpoint https://s3.example.test did not "
                                   "answer")


@pytest.mark.parametrize(("operation", "action"), [
    ("ListObjectsV2", "s3:ListBucket"), ("HeadBucket", "s3:ListBucket"),
    ("GetObject", "s3:GetObject"), ("GetBucketEncryption", "s3:GetEncryptionConfiguration"),
    ("ListObjectVersions", "s3:ListBucketVersions"), ("PutObject", "s3:PutObject"),
])
def test_iam_actions_of_operations(operation: str, action: str) -> None:
    assert s3.iam_action(operation) == action


@set_initial_no_auth_action_count(3)
def test_access_denied_names_the_action_the_resource_and_whose_credentials(
    monkeypatch: pytest.MonkeyPatch, keys: None
) -> None:
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="acme-recordings")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        operator = s3.client(region="us-east-1")
        with pytest.raises(StoreError) as listed:
            list(S3Store(operator, "acme-recordings", "team").list())
        assert listed.value.exit_code == ExitCode.BAD_INPUT
        assert listed.value.message == (
            "cannot list s3://acme-recordings/team: access denied: s3:ListBucket on "
            "arn:aws:s3:::acme-recordings for the default credential chain: allow it in that "
            "identity's IAM policy (and the bucket policy), or use other credentials "
            "(--profile)")
        recorder = s3.client(region="us-east-1", keys=(key["AccessKeyId"],
                                                       key["SecretAccessKey"]))
        with pytest.raises(StoreError, match=(
                r"s3:GetObject on arn:aws:s3:::acme-recordings/n1/a.cast for the keys given "
                r"\(storage.credentials\)")):
            S3Store(recorder, "acme-recordings").read_range("n1/a.cast", 0, 10)
        with pytest.raises(s3.S3CredentialsError, match="s3:ListBucket on arn:aws:s3:::acme"):
            gather_bucket(operator, "acme-recordings")
