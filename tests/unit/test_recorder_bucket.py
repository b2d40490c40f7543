"""S3 provisioning against moto in-process: create, converge, compare policies, fail clearly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from tsops.inventory.model import Storage
from tsops.recorders.bucket import (
    S3Writes,
    apply_bucket,
    desired_lifecycle_rule,
    gather_bucket,
    plan_bucket,
    verify_bucket,
)
from tsops.recorders.render import bucket_policy, normalize_policy
from tsops.s3 import S3Error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

STORAGE = Storage.model_validate({
    "destination": "s3://acme-recordings", "region": "eu-central-1",
    "object_lock": {"mode": "compliance", "retention_days": 30},
    "encryption": "sse-kms",
    "kms_key": "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "noncurrent_days": 90,
    "recorder_principal": "arn:aws:iam::123456789012:role/tsrecorder",
    "break_glass_principal": "arn:aws:iam::123456789012:role/break-glass",
})


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    """An in-process moto S3 in eu-central-1."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("s3", region_name="eu-central-1")


def provision(s3: S3Client, storage: Storage, ui: bool = False) -> S3Writes:
    """Plan and apply once; return the writes made."""
    writes = S3Writes()
    facts = gather_bucket(s3, storage.bucket)
    plan = plan_bucket(storage, ui, facts)
    assert plan.problem is None
    apply_bucket(s3, storage, ui, plan, facts, writes)
    return writes


def test_a_missing_bucket_is_created_with_every_setting_then_left_alone(s3: S3Client) -> None:
    plan = plan_bucket(STORAGE, False, gather_bucket(s3, STORAGE.bucket))
    assert [c.kind for c in plan.changes] == [
        "create", "versioning", "object_lock", "encryption", "public_access", "lifecycle",
        "policy"]
    assert plan.changes[0].summary == (
        "create bucket acme-recordings in eu-central-1 with Object Lock")

    writes = provision(s3, STORAGE)
    assert writes.calls[0] == "create_bucket" and len(writes.calls) == 7
    verify_bucket(s3, STORAGE, False)
    assert s3.get_bucket_location(Bucket="acme-recordings")["LocationConstraint"] == (
        "eu-central-1")
    retention = s3.get_object_lock_configuration(Bucket="acme-recordings")[
        "ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 30)
    default = s3.get_bucket_encryption(Bucket="acme-recordings")[
        "ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": STORAGE.kms_key}
    stored = s3.get_bucket_policy(Bucket="acme-recordings")["Policy"]
    assert normalize_policy(stored) == normalize_policy(bucket_policy(STORAGE, ui=False))

    again = plan_bucket(STORAGE, False, gather_bucket(s3, STORAGE.bucket))
    assert again.changes == () and again.problem is None
    assert provision(s3, STORAGE).calls == []


def test_an_equal_policy_written_differently_is_not_rewritten(s3: S3Client) -> None:
    provision(s3, STORAGE)
    policy = bucket_policy(STORAGE, ui=False)
    policy["Statement"].reverse()
    for statement in policy["Statement"]:
        if isinstance(statement["Action"], list):
            statement["Action"].reverse()
    s3.put_bucket_policy(Bucket=STORAGE.bucket, Policy=json.dumps(policy, indent=4))
    assert plan_bucket(STORAGE, False, gather_bucket(s3, STORAGE.bucket)).changes == ()


def test_a_changed_policy_is_planned_as_a_diff_and_only_the_policy_written(
    s3: S3Client
) -> None:
    provision(s3, STORAGE)
    plan = plan_bucket(STORAGE, True, gather_bucket(s3, STORAGE.bucket))
    assert [c.kind for c in plan.changes] == ["policy"]
    assert '+        "s3:ListBucket"' in plan.changes[0].detail
    assert provision(s3, STORAGE, ui=True).calls == ["put_bucket_policy"]


def test_other_lifecycle_rules_are_kept(s3: S3Client) -> None:
    provision(s3, STORAGE)
    other: Any = {"ID": "operator-rule", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
             "Expiration": {"Days": 3}}
    s3.put_bucket_lifecycle_configuration(Bucket=STORAGE.bucket,
                                          LifecycleConfiguration={"Rules": [other]})
    assert provision(s3, STORAGE).calls == ["put_bucket_lifecycle_configuration"]
    ids = [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=STORAGE.bucket)["Rules"]]
    assert ids == ["operator-rule", "tsops-noncurrent-versions"]


def test_a_bucket_in_another_region_is_a_problem_not_a_change(s3: S3Client) -> None:
    s3.create_bucket(Bucket=STORAGE.bucket,
                     CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    elsewhere = STORAGE.model_copy(update={"region": "eu-west-1"})
    plan = plan_bucket(elsewhere, False, gather_bucket(s3, STORAGE.bucket))
    assert plan.problem == "bucket acme-recordings is in eu-central-1, the inventory says eu-west-1"
    assert plan.changes == ()


def test_unreachable_s3_is_an_s3_error() -> None:
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="y",
                          config=Config(connect_timeout=1, retries={"max_attempts": 1}))
    with pytest.raises(S3Error, match="cannot reach S3"):
        gather_bucket(client, "acme-recordings")


def test_kms_key_reported_as_an_arn_matches_a_key_id_and_empty_filters_match(
    s3: S3Client
) -> None:
    key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
    by_id = STORAGE.model_copy(update={"kms_key": key_id})
    provision(s3, STORAGE)  # S3 now holds the ARN
    assert plan_bucket(by_id, False, gather_bucket(s3, STORAGE.bucket)).changes == ()
    other = STORAGE.model_copy(update={"kms_key": "alias/other"})
    assert [c.kind for c in plan_bucket(other, False, gather_bucket(s3, STORAGE.bucket)).changes
            ] == ["encryption"]
    rule = dict(desired_lifecycle_rule(STORAGE))
    rule["Filter"] = {}
    facts = replace(gather_bucket(s3, STORAGE.bucket), lifecycle_rules=(rule,))
    assert plan_bucket(STORAGE, False, facts).changes == ()
