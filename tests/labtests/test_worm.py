"""WORM in the lab: a forged overwrite of a recording is reported, and the original survives.

After a bootstrap onto the lab's S3 (Object Lock governance, as the inventory's default is), a
real recorded session lands in the bucket; someone holding write access puts other bytes at the
same key. `status` and `recordings verify` must name that key and exit 3, the original must
still be readable by its version ID, and Object Lock (not only the bucket policy) must refuse
to delete it without the governance bypass.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import keyring.core
import pytest
from botocore.exceptions import ClientError

from tests.lab.lab import Lab
from tests.lab.s3 import S3Server
from tests.lab.tailnet import LabTailnet
from tests.labtests.test_recorder import (  # noqa: F401 (executable is a fixture)
    BUCKET,
    bootstrap,
    executable,
    record_a_session,
    s3_storage,
    tsops,
    write_inventory,
)
from tests.sim.recorder.bundle import allow_port_80
from tests.unit.test_secrets import MemoryKeyring
from tsops.cli import recordings as recordings_cli
from tsops.errors import ExitCode
from tsops.flows.recordings import DriftFound, RecordingsLocation


@pytest.mark.lab(hosts=1)
def test_a_forged_overwrite_is_reported_and_the_original_kept(
    lab: Lab, tailnet: LabTailnet, lab_s3: S3Server, executable: Path,  # noqa: F811 (fixture)
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    host = lab.hosts[0]
    allow_port_80(host)
    storage = s3_storage(lab_s3)
    path = write_inventory(tailnet, tmp_path / "inventory.yaml", [host.name], storage,
                           executable)
    bootstrap(tailnet, path)
    key = record_a_session(tailnet).key
    assert key is not None
    s3 = lab_s3.client()
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert b"up 3 days" in original

    clean = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    recordings = json.loads(clean.stdout)["recordings"]
    assert (recordings["state"], recordings["tampered"]) == ("ok", [])  # canaries excepted

    # Seal what is there now (the operator's own credentials), then forge the recording.
    monkeypatch.setattr(keyring.core, "_keyring_backend", MemoryKeyring())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "admin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "admin-secret")
    source = RecordingsLocation(f"s3://{BUCKET}", endpoint=lab_s3.endpoint, region="us-east-1")
    manifest = tmp_path / "manifest.json"
    recordings_cli.run_seal(source, manifest, "tsops/seal")
    capsys.readouterr()
    forged = original.replace(b"up 3 days", b"up 9 days")
    assert forged != original
    s3.put_object(Bucket=BUCKET, Key=key, Body=forged)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == forged  # what readers see

    # status: exit 3, the key named, in JSON and in text.
    drift = tsops(tailnet, "status", "--no-input", "-o", "json", str(path))
    assert drift.returncode == 3, drift.stdout + drift.stderr
    report = json.loads(drift.stdout)
    assert report["recordings"]["state"] == "drift"
    assert report["recordings"]["tampered"] == [
        {"key": key, "versions": 2, "delete_markers": 0, "deleted": False}]
    text = tsops(tailnet, "status", "--no-input", str(path))
    assert text.returncode == 3, text.stdout + text.stderr
    assert f"tampered: {key}: 2 version(s): overwritten" in text.stdout

    # recordings verify: exit 3, the key named as altered and as tampered.
    with pytest.raises(DriftFound) as raised:
        recordings_cli.run_verify(source, manifest, "tsops/seal", None, "table")
    assert raised.value.exit_code == ExitCode.DRIFT
    out = capsys.readouterr().out
    assert f"altered     {key}" in out
    assert f"tampered    {key}: 2 version(s): overwritten" in out

    # The original is still there, by its version ID, under governance retention.
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
    (kept,) = [v for v in versions if not v["IsLatest"]]
    assert s3.get_object(Bucket=BUCKET, Key=key, VersionId=kept["VersionId"])[
        "Body"].read() == original
    # (moto answers GetObjectRetention with an internal error: HeadObject carries the same.)
    head = s3.head_object(Bucket=BUCKET, Key=key, VersionId=kept["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.datetime.now(datetime.UTC)
    # Without the bucket policy's deny (moto does not check bucket-level calls), Object Lock
    # alone still refuses to delete the original without the governance bypass.
    s3.delete_bucket_policy(Bucket=BUCKET)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=kept["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.get_object(Bucket=BUCKET, Key=key, VersionId=kept["VersionId"])[
        "Body"].read() == original
