"""Recorder host planning (pure), and the phase deploys nothing unless storage is ready."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_recorder_render import BINARY, LOCAL
from tsops.context import RunContext
from tsops.inventory.load import Target, load_inventory
from tsops.inventory.model import Storage
from tsops.recorders.host import (
    RecorderFacts,
    RecorderProbeError,
    check_renderable,
    parse_probe,
    plan_recorder_host,
    prepare_script,
    probe,
    sha256,
)
from tsops.recorders.phase import RecorderPhase
from tsops.recorders.render import RenderError, render_env, render_unit
from tsops.remote import RunResult
from tsops.tailscale_api import Device

TARGET = Target(name="rec1", role="recorder", group=None, address="rec1", tags=("tag:recorder",),
                user="root", port=22, identity_file=None, sudo=False, jump_host=None, line=1)
UNIT = render_unit(BINARY)
ENV = "# env\n"
CONVERGED = f"""\
unit={sha256(UNIT)}
env={sha256(ENV)}
env_mode=600:0
binary={"b" * 64}
uid=998
statedir=998:700
state=1
active=active
enabled=enabled
engine=0
"""


def plan(facts: RecorderFacts, **kwargs: Any) -> Any:
    """Plan rec1 with the default spec."""
    options: dict[str, Any] = {"binary_sha256": "b" * 64, "registered": True, "min_free_gb": 10}
    options.update(kwargs)
    spec = options.pop("spec", BINARY)
    return plan_recorder_host(TARGET, spec, facts, render_unit(spec), ENV, **options)


def test_a_converged_host_has_no_step() -> None:
    result = plan(parse_probe(CONVERGED))
    assert (result.steps, result.problem, result.needs_key) == ((), None, False)


def test_a_fresh_host_gets_everything_and_a_key() -> None:
    fresh = parse_probe("unit=-\nenv=-\nenv_mode=-\nbinary=-\nuid=-\nstatedir=-\nstate=0\n"
                        "active=inactive\nenabled=not-found\n")
    result = plan(fresh, registered=False)
    assert [s.kind for s in result.steps] == [
        "binary", "user", "statedir", "env", "unit", "authkey", "start"]
    assert result.steps[-1].summary == "enable and start tsrecorder.service"
    assert result.needs_key


def test_a_changed_unit_is_rewritten_and_restarted_without_a_new_key() -> None:
    facts = replace(parse_probe(CONVERGED), unit_sha256="0" * 64)
    result = plan(facts)
    assert [s.summary for s in result.steps] == [
        "write /etc/systemd/system/tsrecorder.service", "enable and restart tsrecorder.service"]


def test_an_env_file_readable_by_others_is_rewritten() -> None:
    facts = replace(parse_probe(CONVERGED), env_mode="644:0")
    assert [s.kind for s in plan(facts).steps] == ["env", "start"]


def test_a_deleted_device_needs_a_new_key() -> None:
    assert [s.kind for s in plan(parse_probe(CONVERGED), registered=False).steps] == [
        "authkey", "start"]


def test_no_binary_and_none_to_upload_is_a_problem() -> None:
    facts = replace(parse_probe(CONVERGED), binary_sha256=None)
    result = plan(facts, binary_sha256=None)
    assert result.problem is not None and "recorders.binary" in result.problem


def test_container_statedir_belongs_to_the_image_user() -> None:
    spec = replace(BINARY, runtime="container")
    facts = replace(parse_probe(CONVERGED), engine=True, unit_sha256=sha256(render_unit(spec)))
    assert [s.summary for s in plan(facts, spec=spec).steps] == [
        "statedir /var/lib/tsrecorder owned by 65532, mode 0700",
        "enable and restart tsrecorder.service"]
    missing = plan(replace(facts, engine=False), spec=spec)
    assert missing.problem == "docker is not installed (runtime: container)"


def test_local_destination_owner_and_free_space_warning() -> None:
    spec = replace(BINARY, storage=LOCAL)
    facts = replace(parse_probe(CONVERGED + "dst=0:755\nfree_kb=1048576\n"),
                    unit_sha256=sha256(render_unit(spec)))
    result = plan(facts, spec=spec)
    assert [s.kind for s in result.steps] == ["destination", "start"]
    assert result.warnings == (
        "only 1024 MiB free for /srv/recordings (threshold 10 GiB): a full disk blocks "
        "every recorded session",)
    assert "df -Pk" in probe(spec) and "df -Pk" not in probe(BINARY)


def test_a_truncated_probe_is_an_error() -> None:
    with pytest.raises(RecorderProbeError, match="printed no active"):
        parse_probe("unit=-\nenv=-\nenv_mode=-\nbinary=-\nuid=-\nstatedir=-\nstate=0\n")


class ScriptedRemote:
    """A host that answers the probe and refuses any other command (a hole fails loudly)."""

    def __init__(self, probe_output: str) -> None:
        self.probe_output = probe_output
        self.name = "rec1"
        self.round_trips = 0
        self.scripts: list[str] = []

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        self.round_trips += 1
        self.scripts.append(script)
        if script.startswith("set -u\nh()"):
            return RunResult(0, self.probe_output, "")
        raise AssertionError(f"unexpected command: {script[:80]}")

    def put(self, local: Path, remote: str) -> None:
        raise AssertionError("unexpected upload")

    def close(self) -> None:
        """Nothing to close."""


class FakeApi:
    """The API calls the phase makes while planning; any key minting fails the test."""

    def list_devices(self) -> list[Device]:
        return []

    def create_auth_key(self, *args: object) -> None:
        raise AssertionError("no key may be minted when storage failed")


def test_failed_storage_deploys_no_recorder(tmp_path: Path) -> None:
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(
        "version: 1\ntailnet:\n  credentials: {api_token: {env: T}}\n"
        "recorders:\n  hosts:\n    rec1:\n"
        "storage:\n  destination: s3://acme-recordings\n  region: us-east-1\n")
    inventory = load_inventory(inventory_path)
    remote = ScriptedRemote(CONVERGED.replace("state=1", "state=0"))

    def unreachable(storage: Storage, keys: tuple[str, str] | None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                            aws_access_key_id="x", aws_secret_access_key="y",
                            config=Config(connect_timeout=1, retries={"max_attempts": 1}))

    context = RunContext(inventory, connect=lambda target: remote, s3_factory=unreachable,
                         api_factory=lambda context: FakeApi())  # type: ignore[arg-type,return-value]
    phase = RecorderPhase(context)
    plans = phase.plan()
    assert plans.bucket is not None and plans.bucket.problem is not None
    assert "cannot reach S3" in plans.bucket.problem
    result = phase.apply(plans)
    assert result.storage.outcome == "failed"
    assert [(h.outcome, h.healthy) for h in result.hosts] == [("skipped", False)]
    assert result.healthy_tags == frozenset() and result.failed
    assert len(remote.scripts) == 1  # the probe only


class HostForHealth:
    """A converged recorder host with a local destination; answers the probe, status, canary."""

    def __init__(self, active: str, canary_ok: bool,
                 denied: str = "Permission denied", last_log: str = "") -> None:
        self.active = active
        self.last_log = last_log  # the recorder's last log line (journal)
        self.canary_ok = canary_ok
        self.denied = denied  # what the write check prints when it fails
        self.name = "rec1"
        self.round_trips = 0
        self.scripts: list[str] = []

    def run(self, script: str, *, stdin: str | None = None,
            privileged: bool = True) -> RunResult:
        self.round_trips += 1
        self.scripts.append(script)
        if script.startswith("set -u\nh()"):
            spec = replace(BINARY, storage=LOCAL, login_server=None)
            return RunResult(0, CONVERGED.replace(sha256(UNIT), sha256(render_unit(spec)))
                             .replace(sha256(ENV), sha256(HEALTH_ENV))
                             .replace("active=active", f"active={self.active}")
                             + "dst=998:700\nfree_kb=999999999\n", "")
        if script.startswith("journalctl -u tsrecorder.service _TRANSPORT=stdout "):
            return RunResult(0, self.last_log, "")
        if "setpriv" in script:
            token = script.split("printf %s ")[1].split(" ")[0].strip("'\"")
            return (RunResult(0, token, "") if self.canary_ok
                    else RunResult(1, "", self.denied))
        raise AssertionError(f"unexpected command: {script[:80]}")

    def put(self, local: Path, remote: str) -> None:
        raise AssertionError("unexpected upload")

    def close(self) -> None:
        """Nothing to close."""


class ApiForHealth:
    """A tailnet where rec1 is listed with its tag, online or not."""

    def __init__(self, online: bool) -> None:
        self.online = online

    def list_devices(self) -> list[Device]:
        return [Device(id="d1", node_id="n1", name="rec1.example.ts.net", hostname="rec1",
                       tags=("tag:recorder",), addresses=("100.64.0.9",), authorized=True,
                       connected_to_control=self.online)]


HEALTH_ENV = render_env(None, None)


def health_run(tmp_path: Path, host: HostForHealth, api: ApiForHealth) -> Any:
    """Plan and apply a converged local-destination inventory; return the phase result."""
    path = tmp_path / "inventory.yaml"
    path.write_text("version: 1\ntailnet:\n  credentials: {api_token: {env: T}}\n"
                    "recorders:\n  binary_path: /usr/local/bin/tsrecorder\n  hosts:\n    rec1:\n"
                    "storage:\n  destination: /srv/recordings\n")
    context = RunContext(load_inventory(path), connect=lambda target: host,
                         api_factory=lambda context: api)  # type: ignore[arg-type,return-value]
    phase = RecorderPhase(context, online_timeout=0)
    plans = phase.plan()
    assert plans.converged, plans
    return phase.apply(plans)


def test_a_converged_healthy_recorder_passes_the_gate(tmp_path: Path) -> None:
    result = health_run(tmp_path, HostForHealth("active", True), ApiForHealth(True))
    (host,) = result.hosts
    assert (host.outcome, host.healthy) == ("unchanged", True)
    assert host.checks == {"unit": "active", "tailnet": "online as rec1.example.ts.net with "
                           "tag:recorder", "destination": "/srv/recordings writable"}
    assert result.healthy_tags == frozenset({"tag:recorder"})


@pytest.mark.parametrize(("host", "api", "reason"), [
    (HostForHealth("active", True), ApiForHealth(False),
     "the recorder did not come online with tag:recorder"),
    (HostForHealth("active", False), ApiForHealth(True),
     "health: /srv/recordings is not writable by tsrecorder: Permission denied"),
])
def test_an_unhealthy_recorder_fails_the_gate(
    tmp_path: Path, host: HostForHealth, api: ApiForHealth, reason: str
) -> None:
    result = health_run(tmp_path, host, api)
    (failed,) = result.hosts
    assert (failed.outcome, failed.healthy) == ("failed", False)
    assert failed.reason.startswith(reason)
    assert result.healthy_tags == frozenset() and result.failed


def test_a_recorder_that_does_not_come_online_is_reported_with_its_last_log_line(
    tmp_path: Path
) -> None:
    host = HostForHealth("active", True, last_log="tsrecorder: bucket 'b': AccessDenied\n")
    (failed,) = health_run(tmp_path, host, ApiForHealth(False)).hosts
    assert failed.reason.startswith("the recorder did not come online with tag:recorder")
    assert failed.reason.endswith("; its last log line: tsrecorder: bucket 'b': AccessDenied")
    assert failed.verification == "failed"


def test_a_destination_inside_the_statedir_is_not_taken_for_state() -> None:
    nested = replace(BINARY, storage=Storage.model_validate(
        {"destination": "/var/lib/tsrecorder/recordings"}))
    assert "ls -A /var/lib/tsrecorder 2>/dev/null | grep -vx recordings | head" in probe(nested)
    assert "grep -vx" not in probe(BINARY) and "grep -vx" not in probe(replace(
        BINARY, storage=LOCAL))


def test_the_probe_runs_hostile_paths_as_data(tmp_path: Path) -> None:
    """The read-only probe, run by a real shell: a path's `$(...)`, `;` and quotes do nothing."""
    pwned = tmp_path / "pwned"
    hostile = f"{tmp_path}/a b'; touch {pwned}; '$(touch {pwned})`touch {pwned}`"
    spec = replace(BINARY, statedir=hostile, binary_path=hostile + "bin",
                   service_user=f"x$(touch {pwned})", storage=Storage.model_construct(
                       **{**LOCAL.__dict__, "destination": hostile + "/dst"}))
    result = subprocess.run(["/bin/sh", "-c", probe(spec)], capture_output=True, text=True,
                            check=False, timeout=60, cwd=tmp_path)
    assert not pwned.exists(), result.stderr
    facts = parse_probe(result.stdout)
    assert (facts.statedir_owner, facts.binary_sha256, facts.user_uid) == (None, None, None)


def test_prepare_script_passes_each_path_as_one_word() -> None:
    hostile = "/srv/rec ordings; rm -rf / $(id) 'q'"
    spec = replace(BINARY, statedir=hostile + "-state", storage=Storage.model_construct(
        **{**LOCAL.__dict__, "destination": hostile}))
    script = prepare_script(spec, {"statedir", "destination", "user"}, None)
    words = [shlex.split(line) for line in script.splitlines()]
    assert ["install", "-d", "-m", "0700", "-o", "tsrecorder", "-g", "tsrecorder",
            hostile + "-state"] in words
    assert ["chown", "tsrecorder:tsrecorder", hostile] in words


def test_a_value_the_unit_cannot_carry_is_refused_naming_the_inventory(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("version: 1\ntailnet:\n  credentials: {api_token: {env: T}}\n"
                    "recorders:\n  hosts:\n    rec1:\n"
                    "storage:\n  destination: /srv/recordings\n")
    inventory = load_inventory(path)
    model = inventory.model.model_copy(update={"storage": Storage.model_construct(
        **{**LOCAL.__dict__, "destination": "/srv/x\nExecStartPre=+/bin/sh"})})
    check_renderable(inventory)  # the inventory as loaded renders
    with pytest.raises(RenderError) as refused:
        check_renderable(replace(inventory, model=model))
    assert refused.value.message == (
        f"{path}: storage.destination: holds the control character U+000A, which the "
        "recorder's systemd unit cannot carry safely")
    assert refused.value.exit_code == 2


class ApiWithStaleTwin(ApiForHealth):
    """rec1 online, listed after an older offline rec1 with the same tag (a stale twin)."""

    def list_devices(self) -> list[Device]:
        stale = Device(id="d0", node_id="n0", name="rec1.example.ts.net", hostname="rec1",
                       tags=("tag:recorder",), addresses=("100.64.0.8",), authorized=True,
                       connected_to_control=False, last_seen="2026-11-01T00:00:00Z")
        current = Device(id="d1", node_id="n1", name="rec1-1.example.ts.net", hostname="rec1",
                         tags=("tag:recorder",), addresses=("100.64.0.9",), authorized=True,
                         connected_to_control=self.online, last_seen="2026-12-01T00:00:00Z")
        return [stale, current]


def test_a_stale_offline_twin_never_hides_the_online_recorder(tmp_path: Path) -> None:
    result = health_run(tmp_path, HostForHealth("active", True), ApiWithStaleTwin(True))
    (host,) = result.hosts
    assert (host.outcome, host.healthy) == ("unchanged", True)
    assert host.checks["tailnet"] == "online as rec1-1.example.ts.net with tag:recorder"
    (failed,) = health_run(tmp_path, HostForHealth("active", True),
                           ApiWithStaleTwin(False)).hosts
    assert failed.reason.startswith("the recorder did not come online with tag:recorder")
