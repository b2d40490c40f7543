"""rotate-storage's pure parts: options (exit 2, nothing remote), the storage edit (golden
files), the switch's put-back on failure, and the migration's bookkeeping with fakes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from tsops.errors import ExitCode, TsopsError, UsageError
from tsops.inventory.edit import set_storage
from tsops.inventory.load import load_inventory
from tsops.inventory.model import Storage
from tsops.recorders.phase import RecorderPhase
from tsops.rotation.migrate import (
    Fetched,
    MigrationRecord,
    SourceObject,
    migrate,
    parse_listing,
    parse_read,
    read_script,
    spool,
)
from tsops.rotation.switch import RotationStopped, switch_all
from tsops.rotation.target import RotateOptions, check_options, settings_differ, storage_changes

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "rotate_storage"


def storage_of(name: str) -> Storage:
    storage = load_inventory(GOLDEN / name).model.storage
    assert storage is not None
    return storage


# The inventories point every host and the API at 127.0.0.1:9 (discard, closed): anything
# remote would fail with exit 1, so exit 2 also proves nothing remote was tried.
BAD_INPUT = [
    ("s3.yaml", ["--to", "bucket-b"], "--to 'bucket-b': expected s3://BUCKET or an absolute"),
    ("s3.yaml", ["--to", "s3://Bad_Bucket"], "--to s3://Bad_Bucket: invalid bucket name"),
    ("s3.yaml", ["--to", "s3://bucket-b/prefix"], "tsrecorder has no key prefix option"),
    ("local.yaml", ["--to", "s3://bucket-b"],
     "--to s3://bucket-b: the current destination /var/lib/tsrecorder/recordings is a local "
     "directory, so there are no S3 settings to reuse; give --region REGION"),
    ("s3.yaml", ["--to", "s3://bucket-b", "--endpoint", "http://minio:9000"],
     "--endpoint http://minio:9000: plain http://"),
    ("s3.yaml", ["--to", "s3://bucket-b", "--access-key-env", "K"],
     "--access-key-env/--access-key-keyring and --secret-key-env/--secret-key-keyring go "
     "together"),
    ("s3.yaml", ["--to", "s3://bucket-b", "--access-key-env", "pasted-key/x",
                 "--secret-key-env", "S"], "--access-key-env 'pasted-key/x': "
                                           "expected the NAME of an environment variable"),
    ("s3.yaml", ["--to", "/srv/recordings", "--migrate"], "--migrate: copying recordings into"),
    ("s3.yaml", ["--to", "/srv/recordings", "--region", "eu-west-1"],
     "--region: only used with an s3:// --to"),
    ("s3.yaml", ["--to", "s3://bucket-b", "--object-lock", "governance"],
     "--object-lock governance: give --retention-days N"),
    ("s3.yaml", ["--to", "s3://acme-recordings-2025", "--region", "eu-west-1"],
     "--region: s3://acme-recordings-2025 is already the destination"),
    ("missing.yaml", ["--to", "s3://bucket-b"], "missing.yaml: cannot read the inventory"),
]


@pytest.mark.parametrize(("inventory", "args", "message"), BAD_INPUT,
                         ids=[" ".join(c[1]) for c in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(inventory: str, args: list[str], message: str,
                                         tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tsops", "rotate-storage", str(GOLDEN / inventory), *args,
         "--yes", "--no-input"], capture_output=True, text=True, check=False, cwd=REPO,
        env={**os.environ, "TS_API_KEY": "x", "XDG_STATE_HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert not any(tmp_path.iterdir())


def test_an_invalid_inventory_names_file_line_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "inventory.yaml"
    broken.write_text((GOLDEN / "s3.yaml").read_text().replace("mode: compliance",
                                                              "mode: compliant"))
    result = subprocess.run(
        [sys.executable, "-m", "tsops", "rotate-storage", str(broken), "--to", "s3://b-2"],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert f"{broken}:24:11: storage.object_lock.mode: expected 'compliance'" in result.stderr


def options(**kwargs: Any) -> RotateOptions:
    return RotateOptions(**{"to": "s3://bucket-b", **kwargs})


def test_s3_to_s3_reuses_the_connection_credentials_and_lock() -> None:
    assert storage_changes(storage_of("s3.yaml"), options()) == {"destination": "s3://bucket-b"}


def test_new_connection_settings_replace_the_old_ones_as_a_set() -> None:
    changes = storage_changes(storage_of("s3.yaml"), options(
        endpoint="https://minio.internal:9000/", access_key_env="K", secret_key_keyring="t/s"))
    assert changes == {
        "destination": "s3://bucket-b", "endpoint": "https://minio.internal:9000",
        "region": None, "allow_plain_http": None,
        "credentials": {"access_key_id": {"env": "K"}, "secret_access_key": {"keyring": "t/s"}}}


def test_local_to_s3_and_s3_to_local() -> None:
    local, s3 = storage_of("local.yaml"), storage_of("s3.yaml")
    check_options(local, options(region="eu-west-1", object_lock="compliance",
                                 retention_days=365))
    assert storage_changes(local, options(region="eu-west-1", object_lock="compliance",
                                          retention_days=365)) == {
        "destination": "s3://bucket-b", "endpoint": None, "region": "eu-west-1",
        "allow_plain_http": None, "object_lock": {"mode": "compliance", "retention_days": 365}}
    to_local = storage_changes(s3, RotateOptions(to="/srv/recordings"))
    assert to_local["destination"] == "/srv/recordings"
    assert to_local["credentials"] is None and to_local["object_lock"] is None


def test_the_same_destination_with_the_same_settings_is_nothing_to_do() -> None:
    s3 = storage_of("s3.yaml")
    same = options(to="s3://acme-recordings-2025", region="eu-central-1",
                   access_key_env="REC_KEY_ID", secret_key_keyring="tsops/rec-secret")
    assert settings_differ(s3, same) == []
    assert settings_differ(s3, options(to="s3://acme-recordings-2025",
                                       secret_key_env="OTHER", access_key_env="K")) == [
        "--access-key-*/--secret-key-*"]


GOLDEN_EDITS: list[tuple[str, str, RotateOptions]] = [
    ("s3.yaml", "s3-to-bucket-b.yaml", options()),
    ("s3.yaml", "s3-to-minio.yaml", options(endpoint="https://minio.internal:9000",
                                            access_key_env="MINIO_KEY",
                                            secret_key_env="MINIO_SECRET")),
    ("s3.yaml", "s3-to-local.yaml", RotateOptions(to="/srv/recordings")),
    ("local.yaml", "local-to-s3.yaml", options(region="eu-west-1", access_key_env="REC_KEY",
                                               secret_key_keyring="tsops/rec-secret",
                                               object_lock="governance", retention_days=30)),
]


@pytest.mark.parametrize(("source", "expected", "request_"), GOLDEN_EDITS,
                         ids=[c[1] for c in GOLDEN_EDITS])
def test_storage_edit_matches_golden(source: str, expected: str, request_: RotateOptions,
                                     tmp_path: Path) -> None:
    text = (GOLDEN / source).read_text()
    edited = set_storage(text, storage_changes(storage_of(source), request_)).text
    assert edited == (GOLDEN / f"expected-{expected}").read_text()
    candidate = tmp_path / "inventory.yaml"
    candidate.write_text(edited)
    assert load_inventory(candidate).model.storage is not None  # the loader accepts it
    kept = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    if source == "s3.yaml" and expected != "s3-to-local.yaml":
        assert all(line in edited.splitlines() for line in kept)


def test_a_flow_style_storage_block_is_refused() -> None:
    with pytest.raises(UsageError, match="edit the storage section by hand"):
        set_storage("version: 1\nstorage: {destination: /a}\n", {"destination": "/b"})


# The switch: a failure puts every switched recorder back, the failing one first.

@dataclass(frozen=True)
class FakeTarget:
    name: str


@dataclass
class FakeResult:
    healthy: bool
    outcome: str = "changed"
    reason: str = ""
    checks: dict[str, str] = field(default_factory=dict)


@dataclass
class FakePlan:
    target: FakeTarget
    problem: str | None = None


@dataclass
class FakeInventory:
    recorders: tuple[FakeTarget, ...]


@dataclass
class FakePhase:
    """Stands in for a RecorderPhase: records what was deployed where."""

    destination: str
    log: list[str]
    failing: set[str] = field(default_factory=set)
    inventory: FakeInventory = field(default_factory=lambda: FakeInventory(
        (FakeTarget("rec1"), FakeTarget("rec2"), FakeTarget("rec3"))))
    on_progress: Any = None

    @property
    def storage(self) -> Storage:
        return Storage(destination=self.destination)

    def plan_hosts(self, targets: tuple[FakeTarget, ...]) -> list[FakePlan]:
        return [FakePlan(t) for t in targets]

    def apply_host(self, plan: FakePlan, changed_storage: bool) -> FakeResult:
        self.on_progress(plan.target.name, "restarting")
        self.log.append(f"{plan.target.name} -> {self.destination}")
        if plan.target.name in self.failing:
            return FakeResult(False, "failed", "health: tsrecorder.service is failed")
        return FakeResult(True)


def test_a_failed_switch_puts_every_switched_recorder_back() -> None:
    log: list[str] = []
    old = FakePhase("/old", log)
    new = FakePhase("/new", log, failing={"rec2"})
    with pytest.raises(RotationStopped) as stopped:
        switch_all(cast(RecorderPhase, old), cast(RecorderPhase, new), lambda message: None)
    assert log == ["rec1 -> /new", "rec2 -> /new", "rec2 -> /old", "rec1 -> /old"]
    assert stopped.value.exit_code == ExitCode.FAILED
    assert stopped.value.message == (
        "rotation stopped: rec2: health: tsrecorder.service is failed. Back on /old and "
        "verified healthy: rec2, rec1. The inventory is unchanged.")


def test_a_put_back_that_fails_says_how_to_recover() -> None:
    log: list[str] = []
    old = FakePhase("/old", log, failing={"rec1"})
    new = FakePhase("/new", log, failing={"rec2"})
    with pytest.raises(RotationStopped, match=r"NOT verified back on /old: rec1 \(health: "
                       r".*\): run `tsops bootstrap INVENTORY`"):
        switch_all(cast(RecorderPhase, old), cast(RecorderPhase, new), lambda message: None)


def test_switching_all_measures_each_restart() -> None:
    log: list[str] = []
    switched = switch_all(cast(RecorderPhase, FakePhase("/old", log)),
                          cast(RecorderPhase, FakePhase("/new", log)), lambda message: None)
    assert [s.name for s in switched] == ["rec1", "rec2", "rec3"]
    assert all(0 <= s.gap_seconds < 1 for s in switched)
    assert log == ["rec1 -> /new", "rec2 -> /new", "rec3 -> /new"]


# The migration, with an in-memory source and destination.

def recording(number: int) -> tuple[str, bytes]:
    return (f"nNODE{number % 3}/2026-01-01T00:{number // 60:02d}:{number % 60:02d}.cast",
            b'{"version": 2}\n' + b'[0.5, "o", "x"]\n' * (number + 1))


class MemorySource:
    """Recordings in memory; `stop_after` raises KeyboardInterrupt like a Ctrl-C."""

    def __init__(self, data: dict[str, bytes], stop_after: int | None = None) -> None:
        self.data = data
        self.description = "memory"
        self.fetched = 0
        self.stop_after = stop_after
        self.lock = threading.Lock()

    def objects(self) -> list[SourceObject]:
        return [SourceObject(k, len(v), hashlib.sha256(v).hexdigest())
                for k, v in sorted(self.data.items())]

    def batches(self, items: list[SourceObject]) -> list[list[SourceObject]]:
        return [[item] for item in items]

    def fetch(self, batch: list[SourceObject]) -> Iterator[Fetched]:
        for item in batch:
            with self.lock:
                self.fetched += 1
                if self.stop_after is not None and self.fetched > self.stop_after:
                    raise KeyboardInterrupt
            file, sha, md5, size = spool([self.data[item.key]])
            yield Fetched(item, file, sha, md5, size)


class MemoryTarget:
    """A bucket in memory; puts of `refuse` keys fail like an AccessDenied."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.description = "memory-bucket"
        self.puts: list[str] = []
        self.refuse = refuse or set()
        self.lock = threading.Lock()

    def listing(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.objects.items()}

    def put(self, fetched: Fetched) -> None:
        if fetched.item.key in self.refuse:
            raise TsopsError("S3: AccessDenied")
        fetched.file.seek(0)
        with self.lock:
            self.objects[fetched.item.key] = fetched.file.read()
            self.puts.append(fetched.item.key)

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.objects[key]).hexdigest()


def record(tmp_path: Path) -> MigrationRecord:
    return MigrationRecord.create(tmp_path / "state", tmp_path / "inventory.yaml",
                                  Storage(destination="/srv/recordings"), ("rec1",),
                                  "s3://bucket-b")


@pytest.fixture
def source_objects() -> dict[str, bytes]:
    return dict(recording(n) for n in range(40))


def test_migration_copies_verifies_and_counts(source_objects: dict[str, bytes],
                                              tmp_path: Path) -> None:
    source, destination = MemorySource(source_objects), MemoryTarget()
    report = migrate(source, destination, record(tmp_path), workers=4)
    assert (report.total, report.copied, report.present, report.failed) == (40, 40, 0, [])
    assert report.copied_bytes == report.total_bytes == sum(map(len, source_objects.values()))
    assert destination.objects == source_objects
    again = migrate(MemorySource(source_objects), destination, record(tmp_path))
    assert (again.copied, again.present) == (0, 40)
    assert len(destination.puts) == 40


def test_an_interrupted_migration_resumes_with_only_the_missing(
        source_objects: dict[str, bytes], tmp_path: Path) -> None:
    destination = MemoryTarget()
    with pytest.raises(KeyboardInterrupt):
        migrate(MemorySource(source_objects, stop_after=15), destination, record(tmp_path),
                workers=2)
    verified = len(record(tmp_path).verified)
    assert 0 < verified <= 15 and len(destination.puts) == verified
    second = MemorySource(source_objects)
    report = migrate(second, destination, record(tmp_path), workers=4)
    assert (report.copied, report.present, report.failed) == (40 - verified, verified, [])
    assert second.fetched == 40 - verified  # the verified ones are not even read again
    assert destination.objects == source_objects


def test_failures_are_counted_and_retried_on_the_next_run(
        source_objects: dict[str, bytes], tmp_path: Path) -> None:
    refused = {recording(3)[0], recording(7)[0]}
    destination = MemoryTarget(refuse=refused)
    report = migrate(MemorySource(source_objects), destination, record(tmp_path))
    assert report.copied == 38 and sorted(k for k, _ in report.failed) == sorted(refused)
    assert all(reason == "S3: AccessDenied" for _, reason in report.failed)
    destination.refuse = set()
    report = migrate(MemorySource(source_objects), destination, record(tmp_path))
    assert (report.copied, report.present, report.failed) == (2, 38, [])


def test_a_different_object_at_the_destination_is_not_overwritten(
        source_objects: dict[str, bytes], tmp_path: Path) -> None:
    destination = MemoryTarget()
    key = recording(5)[0]
    destination.objects[key] = b"something else"
    identical = recording(6)[0]
    destination.objects[identical] = source_objects[identical]
    report = migrate(MemorySource(source_objects), destination, record(tmp_path))
    assert report.failed == [(key, f"a different {key} is already at memory-bucket; "
                                   "not overwritten")]
    assert (report.copied, report.present) == (38, 1)
    assert destination.objects[key] == b"something else"


def test_the_record_is_private_and_survives_a_torn_line(tmp_path: Path) -> None:
    first = record(tmp_path)
    first.add("nA/1.cast", "a" * 64, 10)
    with first.path.open("a") as out:
        out.write('{"key": "nA/2.cast", "sha')  # killed mid-write
    assert oct(first.path.stat().st_mode & 0o777) == "0o600"
    assert oct(first.path.parent.stat().st_mode & 0o777) == "0o700"
    again = MigrationRecord.find(tmp_path / "state", tmp_path / "inventory.yaml",
                                 "s3://bucket-b")
    assert again is not None and again.verified == {"nA/1.cast": ("a" * 64, 10)}
    assert again.source.destination == "/srv/recordings" and again.source_hosts == ("rec1",)


def test_listing_and_batch_reading_over_ssh_are_parsed() -> None:
    output = ("S 12 nA/2026.cast\nS 3 nB/x.cast\nS 5 notes/readme.txt\n"
              f"H {'a' * 64}  ./nA/2026.cast\nH {'b' * 64}  ./nB/x.cast\n")
    assert parse_listing("rec1", output) == [
        SourceObject("nA/2026.cast", 12, "a" * 64, "rec1"),
        SourceObject("nB/x.cast", 3, "b" * 64, "rec1")]
    assert "base64 -w0 --" in read_script("/srv/rec ordings", ["nA/1.cast"])
    assert "cd '/srv/rec ordings'" in read_script("/srv/rec ordings", ["nA/1.cast"])
    assert parse_read("nA/1.cast\naGVsbG8=\nnA/2.cast\n\n") == {"nA/1.cast": b"hello",
                                                               "nA/2.cast": b""}


class LockClient:
    """Answers GetObjectLockConfiguration like S3 (None: the bucket has no Object Lock)."""

    def __init__(self, mode: str | None) -> None:
        self.mode = mode

    def get_object_lock_configuration(self, Bucket: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        if self.mode is None:
            raise ClientError({"Error": {"Code": "ObjectLockConfigurationNotFoundError"}},
                              "GetObjectLockConfiguration")
        return {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled", "Rule": {
            "DefaultRetention": {"Mode": self.mode, "Days": 30}}}}


def test_deleting_the_source_is_refused_under_compliance_lock() -> None:
    from tsops.rotation.delete import refuse_compliance

    with pytest.raises(UsageError, match="compliance mode: its recordings must be kept"):
        refuse_compliance(cast(Any, LockClient("COMPLIANCE")), "old-bucket")
    refuse_compliance(cast(Any, LockClient("GOVERNANCE")), "old-bucket")
    refuse_compliance(cast(Any, LockClient(None)), "old-bucket")


def test_only_recordings_verified_at_the_destination_are_deleted(
        source_objects: dict[str, bytes]) -> None:
    from tsops.rotation.delete import plan_delete

    destination = MemoryTarget()
    destination.objects = dict(source_objects)
    missing, different = recording(1)[0], recording(2)[0]
    del destination.objects[missing]
    destination.objects[different] = b"tampered"
    plan = plan_delete(MemorySource(source_objects), destination, workers=4)
    assert len(plan.verified) == 38
    assert plan.kept == sorted([(missing, "missing at the current destination"),
                                (different, "different at the current destination")])


class Unreachable:
    """Every call fails as when the S3 endpoint cannot be reached, or refuses with `code`."""

    def __init__(self, code: str | None = None) -> None:
        self.code = code

    def _fail(self, operation: str) -> None:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if self.code is not None:
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, operation)
        raise EndpointConnectionError(endpoint_url="https://s3.example")

    def get_object_lock_configuration(self, Bucket: str) -> None:
        self._fail("GetObjectLockConfiguration")

    def delete_objects(self, Bucket: str, Delete: Any) -> None:
        self._fail("DeleteObjects")


def test_an_unreachable_old_bucket_is_an_error_not_a_crash() -> None:
    from tsops.rotation.delete import refuse_compliance

    with pytest.raises(TsopsError, match=r"^cannot read the Object Lock of s3://old-bucket: "
                       "Could not connect"):
        refuse_compliance(cast(Any, Unreachable()), "old-bucket")


def test_a_refused_delete_is_counted_per_recording(source_objects: dict[str, bytes]) -> None:
    from tsops.rotation.delete import DeletePlan, delete_verified

    plan = DeletePlan(verified=[SourceObject(k, len(v)) for k, v in source_objects.items()])
    failed = delete_verified(cast(Any, MemorySource(source_objects)), plan,
                             lambda: cast(Any, Unreachable("AccessDenied")), "old-bucket")
    assert failed == [(k, "S3: DeleteObjects on s3://old-bucket: access denied: "
                          "s3:DeleteObject for the default credential chain: allow it in that "
                          "identity's IAM policy (and the bucket policy), or use other "
                          "credentials (--profile)") for k in source_objects]


MIB = 1024 * 1024


@pytest.fixture
def moto_s3() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="eu-central-1")
        for bucket, lock in (("old", False), ("new", True)):
            client.create_bucket(
                Bucket=bucket, ObjectLockEnabledForBucket=lock,
                CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        client.put_object_lock_configuration(Bucket="new", ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
        yield client


def large_and_small(client: Any) -> dict[str, bytes]:
    # The threshold stands for S3's 5 GiB single-PUT limit: 12 MiB in 5 MiB parts is 3 parts,
    # as a 12 GiB recording would be in parts of 5 GiB.
    data = {"n1/big.cast": os.urandom(12 * MIB), "n1/small.cast": b'{"version": 2}\n'}
    for key, body in data.items():
        client.put_object(Bucket="old", Key=key, Body=body)
    return data


@pytest.mark.parametrize("server_side", [False, True])
def test_a_recording_above_the_threshold_goes_in_parts_with_sha256_checksums(
        moto_s3: Any, tmp_path: Path, server_side: bool) -> None:
    from tsops.rotation.migrate import BucketTarget, S3Source

    data = large_and_small(moto_s3)
    target = BucketTarget(moto_s3, "new", copy_from="old" if server_side else None,
                          threshold=5 * MIB, chunk=5 * MIB)
    calls: list[str] = []
    moto_s3.meta.events.register("before-call.s3.*",
                                 lambda model, **_: calls.append(model.name))
    report = migrate(S3Source(moto_s3, "old"), target, record(tmp_path), workers=2)
    assert (report.total, report.copied, report.failed) == (2, 2, []), report.failed
    # The small one is one PUT; the big one is copied in S3 or uploaded in parts.
    assert calls.count("PutObject") == 1
    if server_side:
        assert calls.count("UploadPartCopy") == 3 and "UploadPart" not in calls
    else:
        assert calls.count("UploadPart") == 3 and "UploadPartCopy" not in calls
    for key, body in data.items():
        head = moto_s3.head_object(Bucket="new", Key=key, ChecksumMode="ENABLED")
        parts = head["ETag"].strip('"').partition("-")[2]
        assert parts == ("3" if len(body) > 5 * MIB else ""), (key, head["ETag"])
        if parts:
            assert head.get("ChecksumSHA256"), head  # every part carried a SHA-256 checksum
        got = moto_s3.get_object(Bucket="new", Key=key)["Body"].read()
        assert got == body


def test_a_long_migration_says_how_far_it_got(source_objects: dict[str, bytes], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import tsops.rotation.migrate as migration

    monkeypatch.setattr(migration, "PROGRESS_EVERY_S", 0.0)
    said: list[str] = []
    progressed = threading.Event()

    class Gated(MemorySource):
        # Every recording but the first waits until a progress line was said: the run is
        # then still going when the first one is done, whatever the machine's speed.
        def fetch(self, batch: list[SourceObject]) -> Iterator[Fetched]:
            if batch[0].key != min(self.data):
                progressed.wait(timeout=10)
            yield from super().fetch(batch)

    def say(message: str) -> None:
        said.append(message)
        if " done (" in message:
            progressed.set()

    report = migrate(Gated(source_objects), MemoryTarget(), record(tmp_path), workers=2, say=say)
    assert report.copied == 40 and progressed.is_set()
    progress = [line for line in said if " done (" in line]
    assert progress and progress[0].startswith("migration: ") and " of 40 done (" in progress[0]
