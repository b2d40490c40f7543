"""The lab's S3 server: a real S3 API on loopback over TLS, with the settings tsops will manage."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
from botocore.exceptions import ClientError
from moto.iam.access_control import IAMPolicy, PermissionResult

from tests.lab.moto_launcher import patched
from tests.lab.s3 import S3Server
from tsops.inventory.model import Storage
from tsops.recorders.render import bucket_policy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


LOCKED = Storage.model_validate({
    "destination": "s3://recordings", "region": "us-east-1",
    "recorder_principal": "arn:aws:iam::123456789012:user/recorder",
})
OBJECT = "arn:aws:s3:::recordings/n1/a.cast"


def test_server_listens_on_loopback_only(s3_server: S3Server) -> None:
    assert urlparse(s3_server.endpoint).hostname == "127.0.0.1"


def test_server_speaks_tls_with_a_certificate_of_the_lab_ca_only(s3_server: S3Server) -> None:
    assert urlparse(s3_server.endpoint).scheme == "https"
    trusting = ssl.create_default_context(cafile=str(s3_server.ca_bundle))
    with urllib.request.urlopen(f"{s3_server.endpoint}/moto-api/data.json", timeout=10,
                                context=trusting) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.URLError, match="certificate verify failed"):
        urllib.request.urlopen(f"{s3_server.endpoint}/moto-api/data.json", timeout=10,
                               context=ssl.create_default_context())
    assert s3_server.ca_bundle.parent.stat().st_mode & 0o077 == 0


def test_moto_alone_applies_the_tls_only_deny_to_every_write() -> None:
    # Why the launcher exists: if moto learns `Bool` conditions, this fails and it can go.
    policy = IAMPolicy(json.dumps(bucket_policy(LOCKED, ui=False)))
    assert policy.is_action_permitted("s3:PutObject", OBJECT) is PermissionResult.DENIED


def test_the_launcher_answers_secure_transport_true_and_leaves_other_denies() -> None:
    policy = IAMPolicy(json.dumps(bucket_policy(LOCKED, ui=False)))
    with patched():
        assert policy.is_action_permitted("s3:PutObject", OBJECT) is PermissionResult.PERMITTED
        assert policy.is_action_permitted("s3:DeleteObject", OBJECT) is PermissionResult.DENIED
        only_tls = IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJECT,
            "Condition": {"Bool": {"aws:securetransport": ["true"]}}}]}))
        assert only_tls.is_action_permitted("s3:GetObject", OBJECT) is PermissionResult.DENIED
    assert policy.is_action_permitted("s3:PutObject", OBJECT) is PermissionResult.DENIED


def test_a_bucket_locked_to_tls_takes_writes_over_tls_and_still_refuses_deletes(
    s3: S3Client,
) -> None:
    s3.create_bucket(Bucket="recordings")
    s3.put_bucket_policy(Bucket="recordings", Policy=json.dumps(bucket_policy(LOCKED, ui=False)))
    s3.put_object(Bucket="recordings", Key="n1/a.cast", Body=b"{}\n")
    assert s3.get_object(Bucket="recordings", Key="n1/a.cast")["Body"].read() == b"{}\n"
    with pytest.raises(ClientError, match="403"):
        s3.delete_object(Bucket="recordings", Key="n1/a.cast")


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
