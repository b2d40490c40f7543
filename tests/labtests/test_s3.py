"""The lab's S3 server: a real S3 API on loopback, with the settings tsops will manage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
from botocore.exceptions import ClientError

from tests.lab.s3 import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_server_listens_on_loopback_only(s3_server: S3Server) -> None:
    assert urlparse(s3_server.endpoint).hostname == "127.0.0.1"


def test_bucket_settings_round_trip(s3: S3Client) -> None:
    s3.create_bucket(Bucket="recordings", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket="recordings",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyDelete", "Effect": "Deny", "Principal": "*",
            "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::recordings",
        }],
    }
    s3.put_bucket_policy(Bucket="recordings", Policy=json.dumps(policy))
    assert s3.get_bucket_versioning(Bucket="recordings")["Status"] == "Enabled"
    lock = s3.get_object_lock_configuration(Bucket="recordings")["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 1)
    assert json.loads(s3.get_bucket_policy(Bucket="recordings")["Policy"]) == policy


def test_compliance_lock_refuses_deleting_a_version(s3: S3Client) -> None:
    s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket="locked",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    version = s3.put_object(Bucket="locked", Key="n1/a.cast", Body=b"{}\n")["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket="locked", Key="n1/a.cast", VersionId=version)


def test_each_test_starts_with_an_empty_server(s3: S3Client) -> None:
    assert s3.list_buckets()["Buckets"] == []
    s3.create_bucket(Bucket="left-by-this-test")
