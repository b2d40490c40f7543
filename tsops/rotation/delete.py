"""Delete the old destination's recordings, each only once the current one holds the same bytes.

The one step of a rotation that writes to the old destination, and only on request
(`--delete-source`). Each recording is read at both ends and deleted only when the SHA-256
digests agree; anything missing or different stays. An old bucket whose Object Lock default is
compliance mode is refused outright: compliance retention means the recordings must be kept.
In a versioned bucket a delete adds a delete marker: the versions expire with the bucket's
noncurrent-version lifecycle rule (or stay, where the bucket policy denies deleting).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tsops import s3
from tsops.errors import TsopsError, UsageError
from tsops.rotation.migrate import RecordingSource, RecordingTarget, SourceObject, SshSource

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass
class DeletePlan:
    """Which old recordings are verified at the current destination, and which are not."""

    verified: list[SourceObject] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)


def compliance_lock(client: S3Client, bucket: str) -> bool:
    """Whether the bucket's default Object Lock retention is compliance mode."""
    try:
        config = client.get_object_lock_configuration(Bucket=bucket)
    except s3.errors() as error:
        if s3.error_code(error) == "ObjectLockConfigurationNotFoundError":
            return False
        raise TsopsError(f"cannot read the Object Lock of s3://{bucket}: {error}") from error
    rule = config.get("ObjectLockConfiguration", {}).get("Rule", {})
    return rule.get("DefaultRetention", {}).get("Mode") == "COMPLIANCE"


def refuse_compliance(client: S3Client, bucket: str) -> None:
    """Refuse (exit 2) to delete from a bucket under compliance-mode Object Lock."""
    if compliance_lock(client, bucket):
        raise UsageError(f"--delete-source s3://{bucket}: the bucket's Object Lock is in "
                         "compliance mode: its recordings must be kept until their retention "
                         "ends; nothing was deleted")


def plan_delete(source: RecordingSource, destination: RecordingTarget,
                workers: int = 8) -> DeletePlan:
    """Read every old recording and its copy; only equal digests may be deleted (read only)."""
    items = source.objects()
    present = destination.listing()
    plan = DeletePlan()
    lock = threading.Lock()

    def check(batch: list[SourceObject]) -> None:
        try:
            for fetched in source.fetch(batch):
                with fetched.file:
                    item = fetched.item
                    if item.key not in present:
                        verdict: str | None = "missing at the current destination"
                    elif destination.sha256(item.key) != fetched.sha256:
                        verdict = "different at the current destination"
                    else:
                        verdict = None
                with lock:
                    if verdict is None:
                        plan.verified.append(item)
                    else:
                        plan.kept.append((item.key, verdict))
        except Exception as error:  # one batch's failure keeps its recordings, nothing more
            with lock:
                done = {i.key for i in plan.verified} | {k for k, _ in plan.kept}
                plan.kept += [(i.key, f"not verified: {error}") for i in batch
                              if i.key not in done]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(check, source.batches(items)))
    plan.verified.sort(key=lambda i: (i.host, i.key))
    plan.kept.sort()
    return plan


def delete_verified(source: RecordingSource, plan: DeletePlan,
                    s3_client: Callable[[], S3Client] | None, bucket: str) -> list[tuple[str, str]]:
    """Delete the verified recordings at the source; (key, failure) for those that failed."""
    if isinstance(source, SshSource):
        return _delete_local(source, plan.verified)
    assert s3_client is not None
    client = s3_client()
    failed: list[tuple[str, str]] = []
    keys = [i.key for i in plan.verified]
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        try:
            response = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        except s3.errors() as error:
            reason = s3.failure(f"DeleteObjects on s3://{bucket}", error).message
            failed += [(k, reason) for k in chunk]
            continue
        failed += [(e.get("Key", "?"), f"{e.get('Code', '')}: {e.get('Message', '')}")
                   for e in response.get("Errors", [])]
    return failed


def _delete_local(source: SshSource, items: list[SourceObject]) -> list[tuple[str, str]]:
    failed: list[tuple[str, str]] = []
    for host in sorted({i.host for i in items}):
        keys = [i.key for i in items if i.host == host]
        for start in range(0, len(keys), 200):
            chunk = keys[start:start + 200]
            script = (f"cd {shlex.quote(source.directory)} && rm -f -- "
                      + " ".join(shlex.quote(k) for k in chunk) + "\n")
            result = source.remotes[host].run(script)
            if not result.ok:
                failed += [(k, f"{host}: rm failed: {result.stderr.strip()[-200:]}")
                           for k in chunk]
    return failed
