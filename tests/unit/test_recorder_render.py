"""Recorder renderers against golden files in tests/golden/recorder/; units verified by systemd.

Regenerate after an intended change with TSOPS_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import in_ci
from tsops.inventory.model import ObjectLock, S3Credentials, Storage
from tsops.recorders.render import (
    RecorderSpec,
    RenderError,
    bucket_policy,
    iam_policy,
    normalize_policy,
    policy_diff,
    render_authkey_env,
    render_env,
    render_unit,
    s3_dst,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "recorder"
S3 = Storage.model_validate({
    "destination": "s3://acme-ssh-recordings", "region": "us-east-2",
    "object_lock": {"mode": "compliance", "retention_days": 365},
    "recorder_principal": "arn:aws:iam::123456789012:role/tsrecorder",
    "break_glass_principal": "arn:aws:iam::123456789012:role/break-glass",
})
R2 = Storage.model_validate({
    "destination": "s3://recordings", "endpoint": "https://abc123.r2.cloudflarestorage.com",
    "region": "auto", "send_content_md5": True,
})
KMS = S3.model_copy(update={
    "encryption": "sse-kms",
    "kms_key": "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
})
LAB = Storage.model_validate({"destination": "s3://lab", "endpoint": "http://10.0.0.1:9000",
                              "region": "us-east-1", "allow_plain_http": True})
LOCAL = Storage.model_validate({"destination": "/srv/recordings"})
KEYS = S3.model_copy(update={"credentials": S3Credentials.model_validate({
    "access_key_id": {"env": "RECORDER_KEY_ID"}, "secret_access_key": {"env": "RECORDER_SECRET"},
})})
BINARY = RecorderSpec(
    hostname="rec1", runtime="binary", binary_path="/usr/local/bin/tsrecorder",
    image="tailscale/tsrecorder:v1.80.0", container_engine="docker", service_user="tsrecorder",
    statedir="/var/lib/tsrecorder", ui=False, login_server="https://ctl.example.com", storage=S3,
)
CONTAINER = replace(BINARY, runtime="container", login_server=None)

UNITS: dict[str, RecorderSpec] = {
    "binary-s3": BINARY,
    "binary-s3-ui-r2": replace(BINARY, ui=True, storage=R2),
    "binary-local": replace(BINARY, storage=LOCAL, service_user="recorder"),
    "container-s3": CONTAINER,
    "container-s3-keys": replace(CONTAINER, storage=KEYS),
    "container-podman-local": replace(CONTAINER, container_engine="podman", storage=LOCAL,
                                      image="docker.io/tailscale/tsrecorder:v1.80.0"),
}
POLICIES: dict[str, Callable[[], dict[str, Any]]] = {
    "bucket-policy-default": lambda: bucket_policy(S3, ui=False),
    "bucket-policy-ui": lambda: bucket_policy(S3, ui=True),
    "bucket-policy-lab-plain-http": lambda: bucket_policy(LAB, ui=False),
    "bucket-policy-no-principals": lambda: bucket_policy(R2, ui=False),
    "iam-policy-default": lambda: iam_policy(S3, ui=False),
    "iam-policy-ui": lambda: iam_policy(S3, ui=True),
    "iam-policy-kms-ui": lambda: iam_policy(KMS, ui=True),
    "iam-policy-kms": lambda: iam_policy(KMS, ui=False),
}


def golden(name: str, rendered: str) -> str:
    """The golden file's text (rewritten first with TSOPS_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if os.environ.get("TSOPS_UPDATE_GOLDEN"):
        path.write_text(rendered)
    return path.read_text()


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_matches_golden_file(name: str) -> None:
    rendered = render_unit(UNITS[name])
    assert rendered == golden(f"{name}.service", rendered)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_matches_golden_file(name: str) -> None:
    rendered = json.dumps(POLICIES[name](), indent=2) + "\n"
    assert rendered == golden(f"{name}.json", rendered)


@pytest.fixture(scope="module")
def system_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file-system root for systemd-analyze: the host's targets and the executables units run."""
    if shutil.which("systemd-analyze") is None:
        # `make setup` installs it (package systemd, through systemd-container); CI must run this.
        if in_ci():
            pytest.fail("systemd-analyze is not installed", pytrace=False)
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path_factory.mktemp("root")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for found in Path("/usr/lib/systemd/system").glob("*.target"):
        if found.is_file():
            shutil.copy(found, units / found.name)
    (units / "docker.service").write_text("[Service]\nExecStart=/usr/bin/docker\n")
    for program in ("usr/local/bin/tsrecorder", "usr/bin/docker", "usr/bin/podman", "bin/sh",
                    "bin/rm"):
        path = root / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_passes_systemd_analyze_verify_without_any_warning(
    name: str, system_root: Path
) -> None:
    (system_root / "etc/systemd/system/tsrecorder.service").write_text(render_unit(UNITS[name]))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={system_root}", "tsrecorder.service"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_verify_catches_a_bad_unit(system_root: Path) -> None:
    broken = render_unit(BINARY).replace("Restart=always", "Restart=sometimes")
    (system_root / "etc/systemd/system/tsrecorder.service").write_text(broken)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={system_root}", "tsrecorder.service"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert "Failed to parse service restart specifier" in result.stderr


def test_unit_holds_no_secret_and_passes_flags_tsrecorder_takes() -> None:
    unit = render_unit(BINARY)
    assert "--dst=s3://s3.us-east-2.amazonaws.com --bucket=acme-ssh-recordings" in unit
    assert "--statedir=/var/lib/tsrecorder" in unit
    assert "EnvironmentFile=/etc/tsrecorder/env\n" in unit
    assert "AWS_SECRET" not in unit and "TS_AUTHKEY" not in unit
    # Object Lock makes S3 demand Content-MD5 on every PutObject.
    assert "Environment=S3_SEND_CONTENT_MD5=true" in unit
    # Object Lock is on by default, and S3 wants Content-MD5 there; off and unasked: none.
    assert "Environment=S3_SEND_CONTENT_MD5=true" in render_unit(replace(BINARY, storage=LAB))
    unlocked = LAB.model_copy(update={"object_lock": ObjectLock(mode="off")})
    assert "S3_SEND_CONTENT_MD5" not in render_unit(replace(BINARY, storage=unlocked))


def test_s3_dst_is_the_endpoint_host_never_the_bucket() -> None:
    assert s3_dst(S3) == "s3://s3.us-east-2.amazonaws.com"
    assert s3_dst(R2) == "s3://abc123.r2.cloudflarestorage.com"
    assert s3_dst(LAB) == "s3://10.0.0.1:9000"


def test_environment_files_quote_values_and_hold_only_secrets() -> None:
    env = render_env("AKIDEXAMPLE", 'se"cr\\et')
    assert env.splitlines()[1:] == ['AWS_ACCESS_KEY_ID="AKIDEXAMPLE"',
                                    'AWS_SECRET_ACCESS_KEY="se\\"cr\\\\et"']
    assert render_env(None, None).splitlines()[1:] == []
    assert render_authkey_env("tskey-auth-x") == 'TS_AUTHKEY="tskey-auth-x"\n'
    with pytest.raises(RenderError, match=r"^storage\.credentials\.access_key_id: holds the "
                       r"control character U\+000A"):
        render_env("a\nb", "c")
    with pytest.raises(RenderError, match="secret_access_key") as refused:
        render_env("a", "hunter2\r")
    assert "hunter2" not in refused.value.message  # a secret is never shown
    with pytest.raises(RenderError, match=r"^storage\.credentials\.secret_access_key: starts or "
                       r"ends with white space") as refused:
        render_env("AKID", " hunter2")
    assert "hunter2" not in refused.value.message
    assert render_authkey_env('k$`"\\') == 'TS_AUTHKEY="k\\$\\`\\"\\\\"\n'


def test_equal_policies_in_another_form_are_equal() -> None:
    desired = bucket_policy(S3, ui=False)
    reordered = json.loads(json.dumps(desired))
    reordered["Statement"].reverse()
    for statement in reordered["Statement"]:
        if isinstance(statement["Resource"], list) and len(statement["Resource"]) == 1:
            statement["Resource"] = statement["Resource"][0]
        if isinstance(statement["Action"], list):
            statement["Action"] = list(reversed(statement["Action"]))
    assert normalize_policy(reordered) == normalize_policy(desired)
    assert policy_diff(json.dumps(reordered), desired) == ""


def test_a_changed_policy_shows_as_a_json_diff() -> None:
    current = bucket_policy(S3, ui=False)
    desired = bucket_policy(S3, ui=True)
    diff = policy_diff(current, desired)
    assert diff.startswith("--- current\n+++ desired\n")
    assert '+        "s3:GetObject",' in diff.splitlines()
    assert policy_diff(None, desired).count("\n+") > 10


def test_a_single_statement_object_equals_a_one_item_list() -> None:
    statement = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*",
                 "Principal": {"AWS": "arn:aws:iam::123456789012:role/r"}}
    assert normalize_policy({"Version": "2012-10-17", "Statement": statement}) == (
        normalize_policy({"Version": "2012-10-17", "Statement": [statement]}))


# `systemd-analyze security` exposure (0-100, tenths of its 0-10 score) each unit must not
# exceed: measured 11 (binary) and 85 (container); before the sandbox 85 and 91.
EXPOSURE = {"binary": 11, "container": 85}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_sandbox_keeps_its_systemd_analyze_security_score(
    name: str, system_root: Path, tmp_path: Path
) -> None:
    unit = tmp_path / "tsrecorder.service"
    unit.write_text(render_unit(UNITS[name]))
    threshold = EXPOSURE[UNITS[name].runtime]
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--threshold={threshold}", str(unit)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stdout[-300:]
    assert f"Overall exposure level for tsrecorder.service: {threshold / 10:.1f}" in (
        result.stdout)
