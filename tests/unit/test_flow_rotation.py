"""The rotation flow with fakes: recorder hosts that answer only the commands scripted for
them, a tailnet, a bucket in memory, and Recorded events instead of a terminal.

A plan or a refused rotation changes nothing, a failed canary leaves every recorder and the
inventory as they were, the destination in use resumes a recorded migration, and
--delete-source never deletes at the destination in use.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from tests.unit.test_recorder_host import HostForHealth
from tsops.context import RunContext
from tsops.errors import ExitCode, UsageError
from tsops.events import Declined, Recorded
from tsops.flows import rotation as flow
from tsops.inventory.load import load_inventory
from tsops.inventory.model import Storage
from tsops.remote import RunResult
from tsops.rotation.migrate import MigrationRecord, listing_script, state_dir
from tsops.rotation.target import RotateOptions
from tsops.tailscale_api import Device

INVENTORY = """\
version: 1
tailnet:
  name: example.com
  api_url: https://127.0.0.1:9
  credentials:
    api_token: {{env: TS_API_KEY}}
servers:
  hosts:
    web1: {{address: 127.0.0.1, port: 9}}
recorders:
  tag: tag:recorder
  binary_path: /usr/local/bin/tsrecorder
  hosts:
    rec1: {{address: 127.0.0.1, port: 9}}
# Where the auditors look.
storage:
  destination: {destination}  # see the runbook
{extra}
ssh_rules:
  - name: servers
    src: [autogroup:member]
    dst: [tag:server]
    users: [root]
"""
OLD = "/srv/recordings"
NEW = "/srv/recordings-2027"
BUCKET = "s3://acme-2027"
S3_EXTRA = "  region: us-east-1"

MODIFIED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)  # S3 lists every object with it


def recording(number: int) -> tuple[str, bytes]:
    return (f"nNODE{number}/2026-01-01T00:00:0{number}.cast",
            b'{"version": 2}\n' + b'[0.5, "o", "x"]\n' * (number + 1))


class Recorder(HostForHealth):
    """rec1: answers the probe (running, local destination), the write check as scripted,
    and reads and deletes of its recordings; any other command fails the test."""

    def __init__(self, canary_ok: bool = True, recordings: dict[str, bytes] | None = None,
                 directory: str = OLD) -> None:
        super().__init__("active", canary_ok,
                         "sh: /srv/recordings-2027/.tsops-canary: Permission denied")
        self.recordings = dict(recordings or {})
        self.directory = directory

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        answer = self._storage(script)
        if answer is None:
            return super().run(script, stdin=stdin, privileged=privileged)
        self.round_trips += 1
        self.scripts.append(script)
        return answer

    def _storage(self, script: str) -> RunResult | None:
        """The new directory, and reads and deletes of the recordings."""
        if "install -d -m 0700" in script and "systemctl" not in script:
            return RunResult(0, "", "")
        if script == listing_script(self.directory):
            return RunResult(0, "".join(
                f"S {len(data)} {key}\n" for key, data in sorted(self.recordings.items()))
                + "".join(f"H {hashlib.sha256(data).hexdigest()}  ./{key}\n"
                          for key, data in sorted(self.recordings.items())), "")
        if script.startswith(f"set -e\ncd {self.directory}\nfor f in "):
            keys = shlex.split(script.split("for f in ")[1].split("; do")[0])
            return RunResult(0, "".join(
                f"{key}\n{base64.b64encode(self.recordings[key]).decode()}\n" for key in keys),
                "")
        if script.startswith(f"cd {self.directory} && rm -f -- "):
            for key in shlex.split(script.split(" -- ")[1]):
                del self.recordings[key]
            return RunResult(0, "", "")
        return None

    def changed_anything(self) -> bool:
        """Whether any command other than a read ran."""
        return any(not s.startswith("set -u\nh()") and s != listing_script(self.directory)
                   and not s.startswith("set -e\ncd ") for s in self.scripts)


class Tailnet:
    """rec1 online with its tag; minting a key fails the test."""

    def list_devices(self) -> list[Device]:
        return [Device(id="d1", node_id="n1", name="rec1.example.ts.net", hostname="rec1",
                       tags=("tag:recorder",), addresses=("100.64.0.9",), authorized=True,
                       connected_to_control=True)]

    def create_auth_key(self, *args: object) -> None:
        raise AssertionError("no key may be minted")

    def close(self) -> None:
        """Nothing to close."""


class Body:
    """A GetObject body."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self.data), size):
            yield self.data[start:start + size]

    def close(self) -> None:
        """Nothing to close."""


class Bucket:
    """One bucket in memory with the S3 calls the migration makes; any other call fails."""

    def __init__(self, name: str, objects: dict[str, bytes] | None = None) -> None:
        self.name = name
        self.objects = dict(objects or {})
        self.puts: list[str] = []

    def get_paginator(self, operation: str) -> Bucket:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str = "") -> Iterator[dict[str, Any]]:
        assert Bucket == self.name
        yield {"Contents": [{"Key": k, "Size": len(v), "LastModified": MODIFIED}
                            for k, v in sorted(self.objects.items())]}

    def put_object(self, Bucket: str, Key: str, Body: Any, ContentMD5: str,
                   ContentType: str) -> None:
        assert Bucket == self.name
        self.objects[Key] = Body.read()
        self.puts.append(Key)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        assert Bucket == self.name
        return {"Body": Body(self.objects[Key])}


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rotation records kept below the test's own folder."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def inventory(tmp_path: Path, destination: str, extra: str = "") -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.format(destination=destination, extra=extra))
    return path


def run(path: Path, host: Recorder, events: Recorded,
        buckets: dict[str, Bucket] | None = None) -> RunContext:
    """A run over the fakes; an S3 client for a bucket not given fails the test."""
    found = buckets or {}

    def s3(storage: Storage, keys: tuple[str, str] | None) -> Any:
        assert storage.bucket in found, f"unexpected S3 client for {storage.destination}"
        return found[storage.bucket]

    return RunContext(load_inventory(path), events=events, connect=lambda target: host,
                      api_factory=lambda context: cast(Any, Tailnet()), s3_factory=s3)


def planned(tmp_path: Path, context: RunContext, to: str = NEW) -> flow.RotationPlan:
    """prepare and plan, with the edited inventory written as the CLI writes it."""
    edit = flow.prepare(context, RotateOptions(to=to))
    assert isinstance(edit, flow.StorageEdit)
    written = tmp_path / ".inventory.yaml.tsops-test.tmp"
    written.write_text(edit.after)
    edited = replace(load_inventory(written), path=context.inventory.path)
    return flow.plan(context, edit, edited, written)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_plan_reads_and_changes_nothing(tmp_path: Path, state: Path) -> None:
    path = inventory(tmp_path, OLD)
    host, events = Recorder(), Recorded(answer=True)
    with run(path, host, events) as context:
        edit = flow.prepare(context, RotateOptions(to=NEW))
        assert isinstance(edit, flow.StorageEdit)
        assert edit.after == edit.before.replace(f"destination: {OLD}  #",
                                                 f"destination: {NEW}  #")
        before = files(tmp_path)
        plan = planned(tmp_path, context)
    assert (plan.problem, plan.exit_code, plan.old_destination, plan.destination) == (
        None, ExitCode.OK, OLD, NEW)
    assert plan.switch.active == ["rec1"] and plan.enforced and plan.sessions == "refused"
    assert [h.target.name for h in plan.switch.hosts] == ["rec1"]
    assert plan.source is None and plan.listed == []
    assert len(host.scripts) == 1 and not host.changed_anything()  # one probe (new storage)
    after = files(tmp_path)
    after.pop(".inventory.yaml.tsops-test.tmp")
    before.pop(".inventory.yaml.tsops-test.tmp", None)
    assert after == before  # the inventory as it was, no record, no other file
    assert not state.exists()
    assert events.of("confirm") == [] and events.of("step") == []


def test_without_rules_that_enforce_recording_the_gap_goes_unrecorded(tmp_path: Path) -> None:
    path = inventory(tmp_path, OLD)
    path.write_text(path.read_text().split("ssh_rules:")[0])
    with run(path, Recorder(), Recorded()) as context:
        plan = planned(tmp_path, context)
    assert (plan.enforced, plan.sessions, plan.single) == (False, "unrecorded", False)


@pytest.mark.parametrize(("answer", "error", "message"), [
    (False, Declined, "nothing was changed"),
    (None, UsageError, "the rotation needs confirmation (sessions will be refused during the "
                       "restart, see above) and there is no terminal to ask on: rerun with "
                       "--yes to apply"),
])
def test_a_rotation_not_confirmed_changes_nothing(
        tmp_path: Path, state: Path, answer: bool | None, error: type[Exception],
        message: str) -> None:
    path = inventory(tmp_path, OLD)
    text = path.read_bytes()
    host, events = Recorder(), Recorded(answer=answer)
    with run(path, host, events) as context:
        plan = planned(tmp_path, context)
        with pytest.raises(error) as raised:
            flow.switch(context, plan)
    assert getattr(raised.value, "message", "") == message
    assert events.of("confirm") == [f"Rotate the recordings of {path} to {NEW}?"]
    assert path.read_bytes() == text and plan.written.exists()
    assert not host.changed_anything() and not state.exists()
    assert events.of("step") == []


def test_a_failed_canary_changes_no_recorder_and_not_the_inventory(
        tmp_path: Path, state: Path) -> None:
    path = inventory(tmp_path, OLD)
    text = path.read_bytes()
    host, events = Recorder(canary_ok=False), Recorded(answer=True)
    with run(path, host, events) as context:
        report = flow.switch(context, planned(tmp_path, context))
    assert report.exit_code == ExitCode.FAILED and report.switched == []
    assert report.stopped == (
        "rotation stopped before any recorder was changed: rec1: /srv/recordings-2027 is not "
        "writable by tsrecorder: sh: /srv/recordings-2027/.tsops-canary: Permission denied. "
        "The recorders still write to /srv/recordings; the inventory is unchanged")
    assert path.read_bytes() == text
    assert report.record is None and not state.exists()
    kinds = ["probe" if s.startswith("set -u\nh()") else "canary" if "setpriv" in s
             else "new directory" if s.endswith(f"install -d -m 0700 {NEW}\nchown tsrecorder:"
                                                f"tsrecorder {NEW}\nchmod 0700 {NEW}\n")
             else s for s in host.scripts]
    assert kinds == ["probe", "new directory", "canary"]  # no unit, no restart
    assert events.of("step") == []


def test_a_plan_that_cannot_switch_is_refused_before_asking(tmp_path: Path) -> None:
    path = inventory(tmp_path, OLD)
    host, events = Recorder(), Recorded(answer=True)
    host.run = lambda script, **kwargs: RunResult(255, "", "ssh: connection refused")  # type: ignore[method-assign]
    with run(path, host, events) as context:
        plan = planned(tmp_path, context)
        assert plan.problem is not None and plan.problem.startswith("cannot rotate: recorder ")
        assert plan.problem.endswith("; nothing was changed")
        assert plan.exit_code == ExitCode.FAILED
        with pytest.raises(Exception, match="cannot rotate"):
            flow.switch(context, plan)
    assert events.of("confirm") == []


def test_the_destination_in_use_without_a_record_is_nothing_to_do(tmp_path: Path) -> None:
    path = inventory(tmp_path, BUCKET, S3_EXTRA)
    host = Recorder()
    with run(path, host, Recorded()) as context:
        there = flow.prepare(context, RotateOptions(to=BUCKET + "/", migrate=True))
        current = context.inventory.model.storage
        assert current is not None and there == flow.AlreadyThere(path, current, True)
        assert isinstance(there, flow.AlreadyThere)
        resume = flow.plan_resume(context, there)
        assert (resume.record, resume.source) == (None, None)
        with pytest.raises(UsageError, match=r"^--region: s3://acme-2027 is already the "
                           "destination; a rotation cannot change its settings"):
            flow.prepare(context, RotateOptions(to=BUCKET, region="eu-west-1"))
    assert host.scripts == []


def test_the_destination_in_use_resumes_a_recorded_migration(tmp_path: Path,
                                                             state: Path) -> None:
    path = inventory(tmp_path, BUCKET, S3_EXTRA)
    source = dict(recording(n) for n in range(1, 4))
    first, data = recording(1)
    record = MigrationRecord.create(state_dir(), path, Storage(destination=OLD), ("rec1",),
                                    BUCKET)
    record.add(first, hashlib.sha256(data).hexdigest(), len(data))
    host, bucket = Recorder(recordings=source), Bucket("acme-2027", {first: data})
    events = Recorded(answer=False)
    with run(path, host, events, {"acme-2027": bucket}) as context:
        there = flow.prepare(context, RotateOptions(to=BUCKET, migrate=True))
        assert isinstance(there, flow.AlreadyThere)
        resume = flow.plan_resume(context, there)
        assert resume.record is not None and resume.record.path == record.path
        assert resume.source is not None and resume.source.description == f"{OLD} on rec1"
        assert list(resume.record.verified) == [first]
        with pytest.raises(Declined):
            flow.resume(context, resume, workers=2)
        assert bucket.puts == [] and host.scripts == []
        events.answer = True
        report = flow.resume(context, resume, workers=2)
    assert events.of("confirm") == [f"Copy the missing recordings to {BUCKET}?"] * 2
    assert (report.total, report.copied, report.present, report.failed) == (3, 2, 1, [])
    assert report.exit_code == ExitCode.OK
    assert bucket.objects == source and sorted(bucket.puts) == sorted(set(source) - {first})
    assert events.of("step") == [f"migration: 3 recording(s) at {OLD} on rec1, 1 verified "
                                 "before, 2 to copy or check"]
    assert not host.changed_anything()
    assert set(MigrationRecord.read(record.path).verified) == set(source)


def test_delete_source_refuses_the_destination_in_use(tmp_path: Path) -> None:
    path = inventory(tmp_path, BUCKET, S3_EXTRA)
    host = Recorder()
    with run(path, host, Recorded(answer=True)) as context:
        for old in (BUCKET, BUCKET + "/"):
            with pytest.raises(UsageError) as refused:
                flow.plan_delete_source(context, old, workers=2)
            assert refused.value.message == (f"--delete-source {old}: that is the destination "
                                             "in use; nothing was deleted")
        with pytest.raises(UsageError, match="no rotation from /srv/other is recorded for"):
            flow.plan_delete_source(context, "/srv/other", workers=2)
    assert host.scripts == []  # no S3 client either: the fake would have failed


def test_delete_source_deletes_only_what_the_bucket_holds(tmp_path: Path) -> None:
    path = inventory(tmp_path, BUCKET, S3_EXTRA)
    source = dict(recording(n) for n in range(1, 4))
    missing = recording(3)[0]
    MigrationRecord.create(state_dir(), path, Storage(destination=OLD), ("rec1",), BUCKET)
    host = Recorder(recordings=source)
    bucket = Bucket("acme-2027", {k: v for k, v in source.items() if k != missing})
    events = Recorded(answer=True)
    with run(path, host, events, {"acme-2027": bucket}) as context:
        plan = flow.plan_delete_source(context, OLD + "/", workers=2)
        assert sorted(i.key for i in plan.plan.verified) == sorted(set(source) - {missing})
        assert plan.plan.kept == [(missing, "missing at the current destination")]
        assert host.recordings == source  # planning deletes nothing
        report = flow.delete_source(context, plan)
    assert (report.deleted, report.kept, report.failed, report.exit_code) == (
        2, 1, [], ExitCode.OK)
    assert report.source == f"{OLD} on rec1"
    assert host.recordings == {missing: source[missing]}
    assert bucket.objects == {k: v for k, v in source.items() if k != missing}
    assert events.of("confirm") == [f"Delete 2 recording(s) from {OLD} on rec1?"]


# The CLI renders the flow's reports: exact stdout and stderr (the lab tests check the rest).

@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs the CLI opens get the fakes put here (host, buckets) instead of SSH, API and S3."""
    given: dict[str, Any] = {"host": Recorder(), "buckets": {}}

    def open_run(path: Path, limits: Any = (), *, events: Any,
                 concurrency: int = 32) -> RunContext:
        context = run(path, given["host"], Recorded(), given["buckets"])
        context.events = events
        return context

    monkeypatch.setattr(RunContext, "open", open_run)
    return given


def test_the_cli_prints_the_plan_of_a_dry_run(tmp_path: Path, fakes: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tsops.cli.rotate import run_rotate

    path = inventory(tmp_path, OLD)
    text = path.read_bytes()
    code = run_rotate(path, RotateOptions(to=NEW), dry_run=True, yes=False, no_input=True,
                      workers=2)
    out = capsys.readouterr()
    assert code == ExitCode.OK and path.read_bytes() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml"]
    assert out.out == f"""\
--- {path} (current)
+++ {path} (after the rotation)
@@ -14,7 +14,7 @@
     rec1: {{address: 127.0.0.1, port: 9}}
 # Where the auditors look.
 storage:
-  destination: /srv/recordings  # see the runbook
+  destination: /srv/recordings-2027  # see the runbook
{' '}
 ssh_rules:
   - name: servers
rotate: /srv/recordings -> /srv/recordings-2027
storage /srv/recordings-2027: created on each recorder host (owner the service user, mode 0700)
canary: a write with the recorder's own credentials, read back, before any recorder is touched
recorder rec1 (1 of 1, then verified: unit active, online, canary):
  + write /etc/systemd/system/tsrecorder.service
  + enable and restart tsrecorder.service
inventory: storage block rewritten once every recorder is switched
dry run: nothing was changed
"""
    assert out.err == (
        "warning: only 1 recorder accepts sessions now and ssh rules enforce recording: while "
        "it restarts (a few seconds, measured and reported), new sessions are refused and "
        "sessions being recorded are ended\n")


def test_the_cli_prints_a_resumed_migration(tmp_path: Path, fakes: dict[str, Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tsops.cli.rotate import run_rotate

    path = inventory(tmp_path, BUCKET, S3_EXTRA)
    source = dict(recording(n) for n in range(1, 4))
    record = MigrationRecord.create(state_dir(), path, Storage(destination=OLD), ("rec1",),
                                    BUCKET)
    fakes["host"] = Recorder(recordings=source)
    fakes["buckets"] = {"acme-2027": Bucket("acme-2027")}
    code = run_rotate(path, RotateOptions(to=BUCKET, migrate=True), dry_run=False, yes=True,
                      no_input=True, workers=2)
    out = capsys.readouterr()
    assert code == ExitCode.OK and fakes["buckets"]["acme-2027"].objects == source
    assert re.sub(r"in [0-9.]+ s$", "in N s", out.out, flags=re.M) == f"""\
nothing to do: {path} already records to s3://acme-2027
migration: resume copying from /srv/recordings on rec1 to s3://acme-2027 (0 verified before, \
kept in {record.path})
migration /srv/recordings on rec1 -> s3://acme-2027: 3 recording(s), 189 B: 3 copied (189 B), \
0 already present, 0 failed, in N s
every recording of /srv/recordings on rec1 is at s3://acme-2027 with the same SHA-256; the \
source was not changed
"""
    assert out.err == ("migration: 3 recording(s) at /srv/recordings on rec1, 0 verified before, "
                       "3 to copy or check\n")
