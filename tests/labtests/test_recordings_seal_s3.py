"""Sealing and exporting against the lab's S3 server (moto): a forged overwrite of a recording
in a versioned bucket is exported again and flagged with both VersionIds, and a recording
deleted between two nightly seals is reported by the seal and by the chain's verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.lab.s3 import S3Server
from tests.unit.test_recordings import DB, WEB, archive

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
BUCKET = "recordings-seal"
A1 = f"{WEB}/20261124T093005-a1.cast"
C1 = f"{DB}/20261124T103005-c1.cast"


def fill(s3: S3Client, versioned: bool) -> None:
    """A bucket (with versioning or without) holding archive() below `rec/`."""
    s3.create_bucket(Bucket=BUCKET)
    if versioned:
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for key, data in archive().items():
        s3.put_object(Bucket=BUCKET, Key=f"rec/{key}", Body=data)


def runner(s3_server: S3Server) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`tsops recordings ...` against the bucket, as an operator's nightly job runs it."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1",
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

    def tsops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tsops", "recordings", *args, "--from", f"s3://{BUCKET}/rec",
             "--endpoint", s3_server.endpoint], capture_output=True, text=True, env=env,
            cwd=REPO, check=False)

    return tsops


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_a_forged_overwrite_is_exported_again_and_flagged(
        s3: S3Client, s3_server: S3Server, tmp_path: Path, versioned: bool) -> None:
    fill(s3, versioned)
    tsops = runner(s3_server)
    checkpoint = tmp_path / "cp.json"
    first = tsops("export", "--checkpoint", str(checkpoint))
    assert first.returncode == 0, first.stderr
    events = {e["id"]: e for e in map(json.loads, first.stdout.splitlines())}
    original = events[C1.removesuffix(".cast")]["version"]
    assert original.startswith("s3:" if versioned else "etag:")
    body = s3.get_object(Bucket=BUCKET, Key=f"rec/{C1}")["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=f"rec/{C1}", Body=body.replace(b"3 days", b"4 days"))
    again = tsops("export", "--format", "ecs", "--checkpoint", str(checkpoint))
    assert again.returncode == 0, again.stderr
    (event,) = map(json.loads, again.stdout.splitlines())
    assert event["file"]["path"] == C1
    assert event["labels"]["rewritten"] == "true"
    assert event["labels"]["previous_version"] == original
    assert event["labels"]["recording_version"] != original
    assert event["event"]["action"] == "ssh-session-recording-rewritten"
    assert f"warning: rewritten: {C1}" in again.stderr
    if versioned:
        versions = s3.list_object_versions(Bucket=BUCKET, Prefix=f"rec/{C1}")["Versions"]
        assert {f"s3:{v['VersionId']}" for v in versions} == {
            original, event["labels"]["recording_version"]}
        kept = s3.get_object(Bucket=BUCKET, Key=f"rec/{C1}",
                             VersionId=original.removeprefix("s3:"))["Body"].read()
        assert kept == body  # what the SIEM's previous_version names is the original
    quiet = tsops("export", "--checkpoint", str(checkpoint))
    assert (quiet.returncode, quiet.stdout) == (0, "")


def test_a_recording_deleted_between_two_nightly_seals(
        s3: S3Client, s3_server: S3Server, tmp_path: Path) -> None:
    fill(s3, versioned=True)
    tsops = runner(s3_server)
    key_file = tmp_path / "seal.key"
    made = subprocess.run([sys.executable, "-m", "tsops", "recordings", "new-key", "--key-file",
                           str(key_file)], capture_output=True, text=True, cwd=REPO, check=False)
    assert made.returncode == 0, made.stderr
    seals = tmp_path / "seals"
    first = tsops("seal", "--key-file", str(key_file), "--manifest-dir", str(seals))
    assert first.returncode == 0, first.stderr
    assert "sealed 9 recording(s) of s3://recordings-seal/rec" in first.stdout
    s3.delete_object(Bucket=BUCKET, Key=f"rec/{A1}")
    (manifest,) = seals.iterdir()
    # The next manifest is named by its second; a seal in the same second as the first says so
    # (exit 2, nothing written) and is simply run again.
    second = tsops("seal", "--key-file", str(key_file), "--manifest-dir", str(seals))
    while "sealed in the same second" in second.stderr:
        second = tsops("seal", "--key-file", str(key_file), "--manifest-dir", str(seals))
    assert second.returncode == 3, second.stderr
    assert f"deleted     {A1}  (sealed in {manifest}" in second.stdout
    assert len(list(seals.iterdir())) == 2
    checked = tsops("verify", "--key-file", str(key_file), "--manifest-dir", str(seals))
    assert checked.returncode == 3, checked.stderr
    assert A1 in checked.stderr and str(manifest) in checked.stderr
