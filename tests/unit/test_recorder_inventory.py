"""Recorder and storage inventory fields: bad input exits 2 naming the field; iam-policy prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tsops.inventory.load import endpoint_region
from tsops.inventory.model import bucket_name_problem

HEAD = """\
version: 1
tailnet:
  credentials: {api_token: {env: TS_API_KEY}}
servers:
  hosts:
    web1:
recorders:
  hosts:
    rec1:
storage:
"""
GOOD = """\
  destination: s3://acme-recordings
  region: us-east-2
  recorder_principal: arn:aws:iam::123456789012:role/tsrecorder
"""


def tsops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator would."""
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, timeout=60)


@pytest.mark.parametrize(("storage", "expected"), [
    ("  destination: s3://acme..recordings\n  region: us-east-1\n",
     "11:16: storage.destination: invalid bucket name 'acme..recordings': no two adjacent dots"),
    ("  destination: s3://Acme_Recordings\n  region: us-east-1\n",
     "11:16: storage.destination: invalid bucket name 'Acme_Recordings'"),
    ("  destination: s3://acme-recordings\n  region: us-west-1\n"
     "  endpoint: https://s3.eu-central-1.amazonaws.com\n",
     "12:11: storage.region: region 'us-west-1' disagrees with the endpoint "
     "https://s3.eu-central-1.amazonaws.com, which is in eu-central-1"),
    ("  destination: s3://acme-recordings\n  region: us-east-1\n"
     "  object_lock: {mode: \"off\", retention_days: 30}\n",
     "13:46: storage.object_lock.retention_days: retention days need Object Lock"),
    ("  destination: s3://acme-recordings\n  region: us-east-1\n  encryption: sse-kms\n"
     "  kms_key: arn:aws:kms:us-east-1:1234:key/nope\n",
     "14:12: storage.kms_key: expected a KMS key ARN"),
    ("  destination: srv/recordings\n",
     "11:16: storage.destination: expected s3://BUCKET[/PREFIX] or an absolute local path, "
     "got 'srv/recordings'"),
    ("  destination: s3://acme-recordings/ssh\n  region: us-east-1\n",
     "11:16: storage.destination: tsrecorder has no key prefix option"),
    ("  destination: s3://acme-recordings\n  region: us-east-1\n"
     "  endpoint: http://minio.internal:9000\n",
     "13:13: storage.endpoint: plain http:// sends recordings and keys unencrypted"),
    ("  destination: s3://acme-recordings\n  region: us-east-1\n"
     "  object_lock: {mode: governance, retention_days: 90}\n  noncurrent_days: 89\n",
     "14:20: storage.noncurrent_days: noncurrent versions would expire after 89 day(s), "
     "before the 90-day Object Lock retention ends"),
    ("  destination: s3://acme-recordings\n  region: us-east-1\n  noncurrent_days: 30\n",
     "13:20: storage.noncurrent_days: noncurrent versions would expire after 30 day(s), "
     "before the 365-day Object Lock retention ends"),
    ("  destination: s3://acme-recordings\n  region: useast1\n",
     "12:11: storage.region: expected a region like \"eu-central-1\", got 'useast1'"),
])
def test_bad_storage_exits_2_naming_the_field(
    tmp_path: Path, storage: str, expected: str
) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + storage)
    result = tsops("check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}:{expected}" in result.stderr


def test_bad_recorder_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    text = HEAD.replace("recorders:\n", "recorders:\n  runtime: container\n"
                        "  image: tailscale/tsrecorder:latest\n  statedir: state\n") + GOOD
    path.write_text(text)
    result = tsops("check", str(path))
    assert result.returncode == 2
    assert "recorders.image: expected an image with a pinned tag" in result.stderr
    assert "recorders.statedir: expected an absolute path on the host, got 'state'" in (
        result.stderr)


def test_iam_policy_prints_least_privilege(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + GOOD)
    result = tsops("recorder", "iam-policy", str(path))
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout)
    actions = sorted(a for s in policy["Statement"] for a in s["Action"])
    assert actions == ["s3:GetBucketLocation", "s3:PutObject"]
    assert [s["Resource"] for s in policy["Statement"]] == [
        "arn:aws:s3:::acme-recordings",
        ["arn:aws:s3:::acme-recordings/*.cast", "arn:aws:s3:::acme-recordings/tsops-canary/*"]]


def test_iam_policy_refuses_a_local_destination(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + "  destination: /srv/recordings\n")
    result = tsops("recorder", "iam-policy", str(path))
    assert result.returncode == 2
    assert "storage.destination: the IAM policy is for an S3 destination" in result.stderr


def test_bucket_names_and_endpoint_regions() -> None:
    assert bucket_name_problem("acme-recordings") is None
    assert bucket_name_problem("192.168.1.1") == "must not look like an IP address"
    assert bucket_name_problem("xn--acme") == "uses a prefix or suffix AWS reserves"
    assert endpoint_region("https://s3.eu-west-3.amazonaws.com") == "eu-west-3"
    assert endpoint_region("https://s3-us-west-2.amazonaws.com:443/") == "us-west-2"
    assert endpoint_region("https://abc.r2.cloudflarestorage.com") is None
