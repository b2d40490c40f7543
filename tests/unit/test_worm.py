"""WORM by default: Object Lock defaults, noncurrent expiry, the recorder's narrow policy, and
tamper detection (a recording key with more than one version) in status, verify and
`recordings verify`."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import keyring.core
import pytest
from moto import mock_aws

from tests.unit.test_flow_verify import BUCKET, DEVICES, Api, Tailnet, context_for, s3_inventory
from tests.unit.test_flow_verify import s3 as s3  # the bucket fixture, used by name
from tests.unit.test_secrets import MemoryKeyring
from tsops.checks import Check, Status, tamper_check, tamper_error
from tsops.cli import recordings as recordings_cli
from tsops.cli.recorder import print_recorder_plans
from tsops.cli.status import print_status
from tsops.errors import ExitCode, InventoryError
from tsops.flows.bootstrap import BootstrapPlan
from tsops.flows.recordings import DriftFound, RecordingsLocation
from tsops.flows.verify import VerifyReport, verify
from tsops.inventory.load import load_inventory
from tsops.inventory.model import DEFAULT_RETENTION_DAYS, Storage
from tsops.recorders.bucket import (
    EXISTING_BUCKET_LOCK_NOTE,
    BucketPlan,
    S3Writes,
    apply_bucket,
    desired_lifecycle_rule,
    desired_object_lock,
    gather_bucket,
    plan_bucket,
    worm_warnings,
)
from tsops.recorders.phase import RecorderPlans
from tsops.recorders.render import WRITE_CHECK_PREFIX, iam_policy
from tsops.recordings.store import S3Store, StoreError
from tsops.recordings.tamper import (
    CANARY_PREFIX,
    Tampered,
    VersionEntry,
    entries_of,
    findings,
    list_versions,
    tampered,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NODE = "nWEB1CNTRL"
KEY = f"{NODE}/2026-12-01T10:00:00.000000Z.cast"
HEAD = """\
version: 1
tailnet:
  credentials: {api_token: {env: TS_API_KEY}}
recorders:
  hosts:
    rec1:
storage:
  destination: s3://acme-recordings
  region: eu-central-1
"""


def storage(**fields: Any) -> Storage:
    return Storage.model_validate({"destination": "s3://acme-recordings",
                                   "region": "eu-central-1", **fields})


# --- defaults ---------------------------------------------------------------------------------

def test_object_lock_is_governance_for_a_year_unless_written_otherwise() -> None:
    default = storage()
    assert (default.object_lock.mode, default.object_lock.days) == ("governance", 365)
    assert DEFAULT_RETENTION_DAYS == 365
    assert default.noncurrent_expiry_days == 365
    assert desired_object_lock(default) == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 365}}}
    assert desired_lifecycle_rule(default)["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 365}
    assert worm_warnings(default) == []

    seven_years = storage(object_lock={"mode": "compliance", "retention_days": 2555})
    assert seven_years.object_lock.days == 2555
    assert seven_years.noncurrent_expiry_days == 2555  # follows the retention when not written
    assert storage(object_lock={"mode": "compliance", "retention_days": 30},
                   noncurrent_days=90).noncurrent_expiry_days == 90


def test_off_must_be_written_and_then_warns() -> None:
    off = storage(object_lock={"mode": "off"})
    assert off.object_lock.days is None and desired_object_lock(off) is None
    assert off.noncurrent_expiry_days == 365  # the evidence of a rewrite is kept a year anyway
    (warning,) = worm_warnings(off)
    assert warning.startswith("storage.object_lock.mode is off: anyone holding the recorder's "
                              "keys can overwrite a recording")
    assert "after 365 day(s)" in warning
    # A local destination has no Object Lock to speak of.
    assert worm_warnings(Storage.model_validate({"destination": "/srv/rec",
                                                 "object_lock": {"mode": "off"}})) == []


def load(tmp_path: Path, extra: str) -> Storage:
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + extra)
    loaded = load_inventory(path).model.storage
    assert loaded is not None
    return loaded


def test_noncurrent_days_equal_to_the_retention_or_with_lock_off_are_accepted(
        tmp_path: Path) -> None:
    assert load(tmp_path, "  noncurrent_days: 365\n").noncurrent_expiry_days == 365
    assert load(tmp_path, "  object_lock: {mode: \"off\"}\n  noncurrent_days: 30\n"
                ).noncurrent_expiry_days == 30
    assert load(tmp_path, "  object_lock: {mode: governance, retention_days: 7}\n"
                ).noncurrent_expiry_days == 7


def test_noncurrent_days_shorter_than_the_retention_is_one_line_naming_the_field(
        tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + "  object_lock: {mode: compliance, retention_days: 400}\n"
                           "  noncurrent_days: 399\n")
    with pytest.raises(InventoryError) as raised:
        load_inventory(path)
    (problem,) = raised.value.problems
    assert problem == (
        f"{path}:11:20: storage.noncurrent_days: noncurrent versions would expire after 399 "
        "day(s), before the 400-day Object Lock retention ends: a rewritten recording's "
        "original must outlive the retention; give at least 400, or remove noncurrent_days "
        "(it then follows the retention)")


# --- an existing bucket without Object Lock ---------------------------------------------------

@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("s3", region_name="eu-central-1")


def test_an_existing_bucket_without_lock_gets_it_enabled_and_the_plan_says_so(
        moto: S3Client) -> None:
    moto.create_bucket(Bucket="acme-recordings",
                       CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    wanted = storage()
    facts = gather_bucket(moto, "acme-recordings")
    plan = plan_bucket(wanted, False, facts)
    summaries = {c.kind: c.summary for c in plan.changes}
    assert summaries["object_lock"] == ("enable Object Lock on the existing bucket: governance, "
                                        "365 day(s) default retention")
    assert summaries["versioning"] == "enable versioning"
    assert summaries["lifecycle"] == "expire noncurrent versions after 365 day(s)"
    assert EXISTING_BUCKET_LOCK_NOTE in plan.notes
    assert "Recordings already in the bucket stay unlocked" in EXISTING_BUCKET_LOCK_NOTE
    writes = S3Writes()
    apply_bucket(moto, wanted, False, plan, facts, writes)
    # Versioning first: S3 enables Object Lock only on a versioned bucket.
    assert writes.calls.index("put_bucket_versioning") < writes.calls.index(
        "put_object_lock_configuration")
    lock = moto.get_object_lock_configuration(Bucket="acme-recordings")["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    assert (lock["ObjectLockEnabled"], retention["Mode"], retention["Days"]) == (
        "Enabled", "GOVERNANCE", 365)
    again = plan_bucket(wanted, False, gather_bucket(moto, "acme-recordings"))
    assert again.changes == () and EXISTING_BUCKET_LOCK_NOTE not in again.notes


# --- the recorder's policy --------------------------------------------------------------------

def iam_allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement grants `action` on `resource` (IAM wildcards: * and ?)."""
    def match(pattern: str, value: str) -> bool:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        return re.fullmatch(regex, value) is not None

    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [
            statement["Resource"]]
        if statement["Effect"] == "Allow" and any(match(a, action) for a in actions) and any(
                match(r, resource) for r in resources):
            return True
    return False


def test_the_recorder_may_write_recordings_and_canaries_only() -> None:
    policy = iam_policy(storage(), ui=False)
    bucket = "arn:aws:s3:::acme-recordings"
    # What tsrecorder (and the lab's simulator) does: GetBucketLocation, then one PutObject of
    # `<node ID>/<time>.cast`; tsops's health gate writes its canary with the same keys.
    simulated = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ") + ".cast"
    assert iam_allows(policy, "s3:GetBucketLocation", bucket)
    assert iam_allows(policy, "s3:PutObject", f"{bucket}/{NODE}/{simulated}")
    assert iam_allows(policy, "s3:PutObject", f"{bucket}/{WRITE_CHECK_PREFIX}rec1")
    for action, resource in [
        ("s3:PutObject", f"{bucket}/manifest.json"),
        ("s3:PutObject", f"{bucket}/{NODE}/notes.txt"),
        ("s3:GetObject", f"{bucket}/{NODE}/{simulated}"),
        ("s3:AbortMultipartUpload", f"{bucket}/{NODE}/{simulated}"),
        ("s3:DeleteObject", f"{bucket}/{NODE}/{simulated}"),
        ("s3:DeleteObjectVersion", f"{bucket}/{NODE}/{simulated}"),
        ("s3:PutObjectRetention", f"{bucket}/{NODE}/{simulated}"),
        ("s3:BypassGovernanceRetention", f"{bucket}/{NODE}/{simulated}"),
        ("s3:ListBucketVersions", bucket),
    ]:
        assert not iam_allows(policy, action, resource), (action, resource)
    with_ui = iam_policy(storage(), ui=True)
    assert iam_allows(with_ui, "s3:GetObject", f"{bucket}/{NODE}/{simulated}")
    assert iam_allows(with_ui, "s3:ListBucket", bucket)


def test_sse_kms_grants_what_multipart_uploads_need_and_only_through_s3() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    policy = iam_policy(storage(encryption="sse-kms", kms_key=key), ui=False)
    (kms,) = [s for s in policy["Statement"] if s["Sid"] == "RecorderKmsKey"]
    assert kms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == key
    # The key's own region (from its ARN), not the storage's.
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    china = iam_policy(Storage.model_validate({
        "destination": "s3://acme-recordings", "region": "cn-north-1", "encryption": "sse-kms",
        "kms_key": "alias/recordings"}), ui=False)
    (kms,) = [s for s in china["Statement"] if s["Sid"] == "RecorderKmsKey"]
    assert kms["Condition"]["StringEquals"]["kms:ViaService"] == (
        "s3.cn-north-1.amazonaws.com.cn")
    assert not [s for s in iam_policy(storage(), ui=False)["Statement"]
                if s["Sid"] == "RecorderKmsKey"]


def test_the_canary_prefix_is_the_one_tamper_detection_skips() -> None:
    assert CANARY_PREFIX == WRITE_CHECK_PREFIX


# --- findings (pure) --------------------------------------------------------------------------

def version(key: str, number: int, *, latest: bool = False, marker: bool = False
            ) -> VersionEntry:
    return VersionEntry(key, f"v{number}", marker, latest)


def test_one_version_per_recording_is_clean() -> None:
    assert findings([version(KEY, 1, latest=True),
                     version(f"{NODE}/other.cast", 2, latest=True)]) == []


def test_a_second_version_or_a_delete_marker_is_tampering_named_by_key() -> None:
    overwritten = f"{NODE}/a.cast"
    deleted = f"{NODE}/b.cast"
    marker_only = f"{NODE}/c.cast"
    found = findings([
        version(overwritten, 2, latest=True), version(overwritten, 1),
        version(deleted, 3, latest=True, marker=True), version(deleted, 1),
        version(marker_only, 4, latest=True, marker=True),
        version(KEY, 5, latest=True),
    ])
    assert found == [Tampered(overwritten, 2, 0, False), Tampered(deleted, 1, 1, True),
                     Tampered(marker_only, 0, 1, True)]
    assert found[0].line() == (
        f"{overwritten}: 2 version(s): overwritten after it was recorded (tsrecorder writes a "
        "recording once); the original is a noncurrent version")
    assert found[1].line().startswith(f"{deleted}: 1 version(s), 1 delete marker(s): deleted")
    assert found[1].as_dict() == {"key": deleted, "versions": 1, "delete_markers": 1,
                                  "deleted": True}


def test_canaries_and_files_that_are_not_recordings_are_not_watched() -> None:
    assert findings([
        *(version(f"{CANARY_PREFIX}rec1", n, latest=n == 9) for n in range(10)),
        *(version(f"{CANARY_PREFIX}x/y.cast", n) for n in range(3)),
        version("README.txt", 1), version("README.txt", 2),
        version(f"{NODE}/deep/x.cast", 1), version(f"{NODE}/deep/x.cast", 2),
    ]) == []


def test_a_page_is_read_relative_to_the_prefix() -> None:
    when = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    page = {"Versions": [{"Key": f"rec/{KEY}", "VersionId": "a", "IsLatest": True,
                          "LastModified": when},
                         {"Key": "elsewhere/x.cast", "VersionId": "b"}],
            "DeleteMarkers": [{"Key": f"rec/{KEY}", "VersionId": "c", "IsLatest": False}]}
    assert list(entries_of(page, "rec/")) == [
        VersionEntry(KEY, "a", False, True, when.timestamp()),
        VersionEntry(KEY, "c", True, False, None)]


class PagedClient:
    """A client whose version listing comes in the pages given (one key across two pages)."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def get_paginator(self, name: str) -> PagedClient:
        assert name == "list_object_versions"
        return self

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.asked.append(kwargs)
        yield from self.pages


def test_versions_of_one_key_split_across_pages_are_counted_together() -> None:
    client = PagedClient([
        {"Versions": [{"Key": KEY, "VersionId": "2", "IsLatest": True}]},
        {"Versions": [{"Key": KEY, "VersionId": "1", "IsLatest": False}]},
    ])
    found = tampered(S3Store(client, "acme-recordings"))  # type: ignore[arg-type]
    assert found == [Tampered(KEY, 2, 0, False)]
    assert client.asked == [{"Bucket": "acme-recordings", "Prefix": ""}]


def test_versions_from_a_real_listing(moto: S3Client) -> None:
    moto.create_bucket(Bucket="acme-recordings", ObjectLockEnabledForBucket=True,
                       CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    moto.put_object(Bucket="acme-recordings", Key=KEY, Body=b"original")
    moto.put_object(Bucket="acme-recordings", Key=f"{NODE}/kept.cast", Body=b"kept")
    for _ in range(3):
        moto.put_object(Bucket="acme-recordings", Key=f"{CANARY_PREFIX}rec1", Body=b"canary")
    assert tampered(S3Store(moto, "acme-recordings")) == []
    moto.put_object(Bucket="acme-recordings", Key=KEY, Body=b"forged")
    assert tampered(S3Store(moto, "acme-recordings")) == [Tampered(KEY, 2, 0, False)]
    with pytest.raises(StoreError, match="cannot list the versions of s3://no-such-bucket"):
        list(list_versions(moto, "no-such-bucket"))


# --- status, verify, recordings verify --------------------------------------------------------

def test_status_reports_tampering_as_drift_exit_3_and_in_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    found = [Tampered(KEY, 2, 0, False)]
    status = Status((), recordings=tamper_check(found), tampered=tuple(found),
                    warnings=("storage.object_lock.mode is off: ...",))
    assert status.exit_code == ExitCode.DRIFT
    data = status.as_dict()
    assert data["recordings"] == {
        "name": "recordings", "state": "drift",
        "expected": "every recording has exactly one version (never overwritten or deleted)",
        "actual": f"1 recording(s) rewritten or deleted: {KEY}",
        "tampered": [{"key": KEY, "versions": 2, "delete_markers": 0, "deleted": False}]}
    assert data["warnings"] == ["storage.object_lock.mode is off: ..."]
    print_status(status, symbols=False)
    out, err = capsys.readouterr()
    assert "recordings: drift: expected every recording has exactly one version" in out
    assert f"tampered: {KEY}: 2 version(s): overwritten" in out
    assert "warning: storage.object_lock.mode is off" in err
    assert Status((), recordings=tamper_check([])).exit_code == ExitCode.OK
    assert Status((), recordings=tamper_error("AccessDenied")).exit_code == ExitCode.FAILED
    assert tamper_check([]) == Check("recordings", "ok", data["recordings"]["expected"],
                                     "no recording rewritten")


def test_verify_report_exit_codes_with_tampering() -> None:
    found = (Tampered(KEY, 2, 0, False),)
    assert VerifyReport([], tampered=found).exit_code == ExitCode.DRIFT
    assert VerifyReport([], tampered=found).as_dict()["state"] == "tampered"
    assert VerifyReport([], tampered=found).alarms() == [f"tampered: {found[0].line()}"]
    failed = VerifyReport([], tamper_problem="cannot list the versions")
    assert failed.exit_code == ExitCode.FAILED and failed.as_dict()["state"] == "error"


def test_verify_finds_a_rewritten_recording_in_the_bucket(
        tmp_path: Path, s3: S3Client) -> None:
    bucket = BUCKET
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key=KEY, Body=b"original")
    s3.put_object(Bucket=bucket, Key=KEY, Body=b"forged")

    def record(node: str, marker: str) -> None:
        s3.put_object(Bucket=bucket, Key=f"{node}/{time.time_ns()}.cast",
                      Body=f'{{"version": 2}}\n[0.1, "o", "{marker}\\r\\n"]\n'.encode())

    with context_for(s3_inventory(tmp_path), {}, Api(DEVICES), s3=s3) as context:
        report = verify(context, None, timeout=30, session=Tailnet(DEVICES, record=record))
    assert [r.state for r in report.results] == ["recorded", "recorded"]
    assert report.tampered == (Tampered(KEY, 2, 0, False),)
    assert report.exit_code == ExitCode.DRIFT
    assert json.loads(json.dumps(report.as_dict()))["tampered"][0]["key"] == KEY


def test_recordings_verify_names_the_rewritten_key_and_exits_3(
        moto: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(keyring.core, "_keyring_backend", MemoryKeyring())
    moto.create_bucket(Bucket="acme-recordings", ObjectLockEnabledForBucket=True,
                       CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    header = b'{"version": 2, "width": 80, "height": 24, "timestamp": 1764583200}\n'
    moto.put_object(Bucket="acme-recordings", Key=KEY, Body=header + b'[0.5, "o", "hi"]\n')
    source = RecordingsLocation("s3://acme-recordings", region="eu-central-1")
    monkeypatch.setattr("tsops.s3.client", lambda **kwargs: moto)
    manifest = tmp_path / "manifest.json"
    recordings_cli.run_seal(source, manifest, "tsops/seal")
    recordings_cli.run_verify(source, manifest, "tsops/seal", None, "table")
    assert "1 intact" in capsys.readouterr().out
    moto.put_object(Bucket="acme-recordings", Key=KEY, Body=header + b'[0.5, "o", "bye"]\n')
    with pytest.raises(DriftFound) as raised:
        recordings_cli.run_verify(source, manifest, "tsops/seal", None, "table")
    assert raised.value.exit_code == ExitCode.DRIFT
    out = capsys.readouterr().out
    assert f"altered     {KEY}" in out
    assert f"tampered    {KEY}: 2 version(s): overwritten" in out
    assert "; 1 tampered" in out
    with pytest.raises(DriftFound):
        recordings_cli.run_verify(source, manifest, "tsops/seal", None, "json")
    assert json.loads(capsys.readouterr().out)["tampered"] == [
        {"key": KEY, "versions": 2, "delete_markers": 0, "deleted": False}]


def test_plan_warns_when_object_lock_is_written_off(capsys: pytest.CaptureFixture[str]) -> None:
    off = storage(object_lock={"mode": "off"})
    plans = RecorderPlans(off, BucketPlan(off.bucket), None, [])
    print_recorder_plans(plans)
    assert "warning: storage.object_lock.mode is off: anyone holding the recorder's keys" in (
        capsys.readouterr().err)
    assert BootstrapPlan([], plans).as_dict()["warnings"] == worm_warnings(off)
    locked = RecorderPlans(storage(), BucketPlan("acme-recordings"), None, [])
    print_recorder_plans(locked)
    assert "object_lock" not in capsys.readouterr().err
    assert BootstrapPlan([], locked).as_dict()["warnings"] == []
