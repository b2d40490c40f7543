"""S3 provisioning for the recordings bucket: gather its settings, plan the changes, apply them.

boto3 clients are passed in (the one seam to S3). Planning is pure; every write is counted, so
tests can prove that a converged bucket is never written to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tsops.inventory.model import Storage
from tsops.recorders.render import LIFECYCLE_RULE_ID, bucket_policy, normalize_policy, policy_diff
from tsops.s3 import S3Error, error_code, errors, failure

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ChangeKind = Literal["create", "versioning", "object_lock", "encryption", "public_access",
                     "lifecycle", "policy"]
# S3 enables Object Lock on an existing bucket with PutObjectLockConfiguration once versioning
# is on (tsops turns versioning on first); it cannot be turned off again, and the default
# retention applies to objects written from then on, not to those already there.
EXISTING_BUCKET_LOCK_NOTE = (
    "the bucket exists without Object Lock: tsops enables it (S3 allows this on a versioned "
    "bucket; it cannot be turned off again). Recordings already in the bucket stay unlocked: "
    "the default retention protects only recordings written from now on. Some S3-compatible "
    "stores refuse this: then create a new bucket with Object Lock and move to it with "
    "`tsops rotate-storage`")
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                       "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


@dataclass(frozen=True)
class BucketFacts:
    """The bucket's settings as S3 reports them (None: not set)."""

    exists: bool
    region: str | None = None
    versioning: str | None = None
    object_lock: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None
    public_access_block: dict[str, Any] | None = None
    lifecycle_rules: tuple[dict[str, Any], ...] = ()
    policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class BucketChange:
    """One write to the bucket's settings; `detail` is a JSON diff for a policy."""

    kind: ChangeKind
    summary: str
    detail: str = ""


@dataclass
class BucketPlan:
    """What to change on the bucket, or why it cannot be planned."""

    bucket: str
    changes: tuple[BucketChange, ...] = ()
    problem: str | None = None
    notes: tuple[str, ...] = ()
    # The problem is that the bucket could not be read at all (S3 not reached, or the operator's
    # credentials missing or refused): its settings are unknown, not wrong.
    unread: bool = False


@dataclass
class S3Writes:
    """A count of the write calls made to S3, by operation."""

    calls: list[str] = field(default_factory=list)


def _optional(call: Any, missing: tuple[str, ...], what: str, **kwargs: Any) -> Any:
    """Call a read; return None when S3 says the setting is not there."""
    try:
        return call(**kwargs)
    except errors() as error:
        if missing and error_code(error) in missing:
            return None
        raise failure(what, error) from error


def gather_bucket(client: S3Client, bucket: str) -> BucketFacts:
    """Read every setting tsops manages (read-only calls)."""
    try:
        client.head_bucket(Bucket=bucket)
    except errors() as error:
        if error_code(error) in ("404", "NoSuchBucket", "NotFound"):
            return BucketFacts(exists=False)
        raise failure(f"read bucket {bucket}", error) from error
    b = {"Bucket": bucket}
    location = _optional(client.get_bucket_location, (), "read the bucket's region", **b)
    versioning = _optional(client.get_bucket_versioning, (), "read versioning", **b)
    lock = _optional(client.get_object_lock_configuration,
                     ("ObjectLockConfigurationNotFoundError",), "read Object Lock", **b)
    encryption = _optional(client.get_bucket_encryption,
                           ("ServerSideEncryptionConfigurationNotFoundError",),
                           "read encryption", **b)
    public = _optional(client.get_public_access_block, ("NoSuchPublicAccessBlockConfiguration",),
                       "read the public access block", **b)
    lifecycle = _optional(client.get_bucket_lifecycle_configuration,
                          ("NoSuchLifecycleConfiguration",), "read lifecycle", **b)
    policy = _optional(client.get_bucket_policy, ("NoSuchBucketPolicy",), "read the policy", **b)
    return BucketFacts(
        exists=True,
        region=(location or {}).get("LocationConstraint") or "us-east-1",
        versioning=(versioning or {}).get("Status"),
        object_lock=(lock or {}).get("ObjectLockConfiguration"),
        encryption=(encryption or {}).get("ServerSideEncryptionConfiguration"),
        public_access_block=(public or {}).get("PublicAccessBlockConfiguration"),
        lifecycle_rules=tuple((lifecycle or {}).get("Rules", ())),
        policy=json.loads(policy["Policy"]) if policy else None,
    )


def desired_object_lock(storage: Storage) -> dict[str, Any] | None:
    """The Object Lock configuration wanted, or None when Object Lock is off."""
    lock = storage.object_lock
    if lock.mode == "off":
        return None
    return {"ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": lock.mode.upper(), "Days": lock.days}}}


def worm_warnings(storage: Storage) -> list[str]:
    """What plan and status say about an S3 destination whose recordings can be rewritten."""
    if not storage.is_s3 or storage.object_lock.mode != "off":
        return []
    return ["storage.object_lock.mode is off: anyone holding the recorder's keys can overwrite "
            "a recording, and the original is expired after "
            f"{storage.noncurrent_expiry_days} day(s); set mode governance or compliance "
            "(see docs/recorder.md)"]


def desired_encryption(storage: Storage) -> dict[str, Any]:
    """The default encryption wanted."""
    if storage.encryption == "sse-kms":
        default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": storage.kms_key}
        return {"Rules": [{"ApplyServerSideEncryptionByDefault": default,
                           "BucketKeyEnabled": True}]}
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def desired_lifecycle_rule(storage: Storage) -> dict[str, Any]:
    """tsops's lifecycle rule: expire noncurrent versions, abort stale multipart uploads."""
    return {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": storage.noncurrent_expiry_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}


def _encryption_key(config: dict[str, Any] | None) -> tuple[str, str | None] | None:
    if not config or not config.get("Rules"):
        return None
    default = config["Rules"][0].get("ApplyServerSideEncryptionByDefault", {})
    return str(default.get("SSEAlgorithm")), default.get("KMSMasterKeyID")


def _same_encryption(current: tuple[str, str | None] | None,
                     wanted: tuple[str, str | None] | None) -> bool:
    """Equal settings; S3 may report a key id or alias given by the operator as its full ARN."""
    if current is None or wanted is None or current[0] != wanted[0]:
        return current == wanted
    have, want = current[1] or "", wanted[1] or ""
    return have == want or (not want.startswith("arn:") and bool(want)
                            and have.endswith(("/" + want, ":" + want)))


def _lock_key(config: dict[str, Any] | None) -> tuple[str, int | None] | None:
    if not config or config.get("ObjectLockEnabled") != "Enabled":
        return None
    retention = (config.get("Rule") or {}).get("DefaultRetention") or {}
    return str(retention.get("Mode")), retention.get("Days")


def plan_bucket(storage: Storage, ui: bool, facts: BucketFacts) -> BucketPlan:
    """Compare the bucket with what the inventory wants (pure)."""
    bucket = storage.bucket
    plan = BucketPlan(bucket)
    changes: list[BucketChange] = []
    notes: list[str] = []
    if not facts.exists:
        where = f" in {storage.region}" if storage.region else ""
        lock = " with Object Lock" if storage.object_lock.mode != "off" else ""
        changes.append(BucketChange("create", f"create bucket {bucket}{where}{lock}"))
    elif storage.region and facts.region and facts.region != storage.region \
            and storage.region != "auto":
        plan.problem = (f"bucket {bucket} is in {facts.region}, the inventory says "
                        f"{storage.region}")
        return plan
    if facts.versioning != "Enabled":
        changes.append(BucketChange("versioning", "enable versioning"))
    wanted_lock = desired_object_lock(storage)
    if wanted_lock is not None and _lock_key(facts.object_lock) != _lock_key(wanted_lock):
        wanted = storage.object_lock
        summary = f"Object Lock {wanted.mode}, {wanted.days} day(s) default retention"
        if facts.exists and _lock_key(facts.object_lock) is None:
            summary = f"enable Object Lock on the existing bucket: {wanted.mode}, " \
                      f"{wanted.days} day(s) default retention"
            notes.append(EXISTING_BUCKET_LOCK_NOTE)
        changes.append(BucketChange("object_lock", summary))
    if wanted_lock is None and _lock_key(facts.object_lock) is not None:
        notes.append("Object Lock is on for this bucket and cannot be turned off; "
                     "the inventory's `off` leaves it as it is")
    if not _same_encryption(_encryption_key(facts.encryption),
                            _encryption_key(desired_encryption(storage))):
        changes.append(BucketChange("encryption", f"default encryption {storage.encryption}"
                                    + (f" with {storage.kms_key}" if storage.kms_key else "")))
    if facts.public_access_block != PUBLIC_ACCESS_BLOCK:
        changes.append(BucketChange("public_access", "block all public access"))
    ours = [r for r in facts.lifecycle_rules if r.get("ID") == LIFECYCLE_RULE_ID]
    if [_lifecycle_key(r) for r in ours] != [_lifecycle_key(desired_lifecycle_rule(storage))]:
        changes.append(BucketChange(
            "lifecycle",
            f"expire noncurrent versions after {storage.noncurrent_expiry_days} day(s)"))
    desired_policy = bucket_policy(storage, ui)
    diff = policy_diff(facts.policy, desired_policy)
    if diff:
        changes.append(BucketChange("policy", "write the bucket policy", diff))
    plan.changes = tuple(changes)
    plan.notes = tuple(notes)
    return plan


def _lifecycle_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    return (rule.get("Status"), (rule.get("NoncurrentVersionExpiration") or {}).get(
        "NoncurrentDays"), (rule.get("AbortIncompleteMultipartUpload") or {}).get(
        "DaysAfterInitiation"), json.dumps(_filter(rule), sort_keys=True))


def _filter(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule's filter, with the forms S3 uses for "every object" made one."""
    found = rule.get("Filter")
    if found is None and "Prefix" in rule:
        found = {"Prefix": rule["Prefix"]}
    return {} if not found or found == {"Prefix": ""} else dict(found)


def apply_bucket(client: S3Client, storage: Storage, ui: bool, plan: BucketPlan,
                 facts: BucketFacts, writes: S3Writes) -> None:
    """Make the planned changes, in an order that never leaves the bucket less protected."""
    bucket = storage.bucket
    kinds = {c.kind for c in plan.changes}

    def write(name: str, **kwargs: Any) -> None:
        writes.calls.append(name)
        try:
            getattr(client, name)(Bucket=bucket, **kwargs)
        except errors() as error:
            raise failure(f"{name} on {bucket}", error) from error

    if "create" in kinds:
        create: dict[str, Any] = {}
        if storage.region and storage.region not in ("us-east-1", "auto"):
            create["CreateBucketConfiguration"] = {"LocationConstraint": storage.region}
        if storage.object_lock.mode != "off":
            create["ObjectLockEnabledForBucket"] = True
        write("create_bucket", **create)
    if "public_access" in kinds:
        write("put_public_access_block", PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    if "versioning" in kinds:
        write("put_bucket_versioning", VersioningConfiguration={"Status": "Enabled"})
    if "encryption" in kinds:
        write("put_bucket_encryption",
              ServerSideEncryptionConfiguration=desired_encryption(storage))
    if "object_lock" in kinds:
        write("put_object_lock_configuration", ObjectLockConfiguration=desired_object_lock(storage))
    if "lifecycle" in kinds:
        others = [r for r in facts.lifecycle_rules if r.get("ID") != LIFECYCLE_RULE_ID]
        write("put_bucket_lifecycle_configuration", LifecycleConfiguration={
            "Rules": [*others, desired_lifecycle_rule(storage)]})
    if "policy" in kinds:
        policy = bucket_policy(storage, ui)
        write("put_bucket_policy", Policy=json.dumps(policy, separators=(",", ":")))


def verify_bucket(client: S3Client, storage: Storage, ui: bool) -> None:
    """Read every setting back and plan again: the bucket is done when nothing is left."""
    facts = gather_bucket(client, storage.bucket)
    again = plan_bucket(storage, ui, facts)
    if again.problem:
        raise S3Error(f"S3: bucket {storage.bucket}: {again.problem}")
    if again.changes:
        left = "; ".join(c.summary for c in again.changes)
        raise S3Error(f"S3: bucket {storage.bucket}: read back after writing, still differs: "
                      f"{left}")
    if facts.policy is not None and normalize_policy(facts.policy) != normalize_policy(
            bucket_policy(storage, ui)):
        raise S3Error(f"S3: bucket {storage.bucket}: the policy read back differs")
