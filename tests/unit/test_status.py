"""Status is pure: plans in, checks out; each pending step fails the check it belongs to."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.test_plan import CONVERGED, DESIRED, DEVICE, FRESH, PREFS, STATUS, TARGET
from tests.unit.test_recorder_host import CONVERGED as RECORDER_PROBE
from tests.unit.test_recorder_host import plan as recorder_plan
from tests.unit.test_recorder_render import BINARY, LOCAL
from tsops.checks import (
    Check,
    HostStatus,
    Status,
    policy_error,
    policy_status,
    recorder_status,
    server_status,
    storage_check,
    worst,
)
from tsops.cli.status import print_status
from tsops.errors import ExitCode
from tsops.policy.plan import PolicyPlan
from tsops.recorders.bucket import BucketChange, BucketPlan
from tsops.recorders.host import RecorderFacts, RecorderHostPlan, parse_probe, sha256
from tsops.recorders.render import render_unit
from tsops.servers.facts import HostFacts
from tsops.servers.plan import HostPlan, plan_host
from tsops.tailscale_api import Device

RECORDER = Device(id="2001", node_id="nREC1CNTRL", name="rec1.tail1.ts.net", hostname="rec1",
                  tags=("tag:recorder",), addresses=("100.64.0.9",), authorized=True,
                  connected_to_control=True)


def states(host: HostStatus) -> dict[str, str]:
    """check name -> state."""
    return {c.name: c.state for c in host.checks}


def server(facts: HostFacts = CONVERGED, devices: tuple[Device, ...] = (DEVICE,)) -> HostStatus:
    """The status of host1 with these facts."""
    return server_status(plan_host(TARGET, DESIRED, facts, list(devices)), round_trips=1)


def test_a_converged_server_passes_every_check() -> None:
    host = server()
    assert states(host) == {"reachable": "ok", "version": "ok", "enrolled": "ok", "tags": "ok",
                            "ssh": "ok", "openssh": "ok"}
    assert (host.state, host.reason, host.round_trips) == ("ok", None, 1)
    assert host.check("version") == Check("version", "ok", "1.78.3", "1.78.3")


@pytest.mark.parametrize(("facts", "devices", "failing"), [
    (replace(CONVERGED, prefs=replace(PREFS, run_ssh=False)), (DEVICE,), {"ssh"}),
    (CONVERGED, (replace(DEVICE, tags=("tag:server",)),), {"tags"}),
    (replace(CONVERGED, tailscale_version="1.76.0"), (DEVICE,), {"version"}),
    (replace(CONVERGED, apt_source=None), (DEVICE,), {"version"}),
    (replace(CONVERGED, tailscaled_active=False), (DEVICE,), {"enrolled"}),
    (replace(CONVERGED, prefs=replace(PREFS, hostname="old")), (DEVICE,), {"enrolled"}),
])
def test_each_step_kind_fails_its_own_check(
    facts: HostFacts, devices: tuple[Device, ...], failing: set[str]
) -> None:
    host = server(facts, devices)
    assert {name for name, state in states(host).items() if state != "ok"} == failing
    assert host.state == "drift" and host.reason is None


def test_a_missing_canary_account_is_ssh_drift() -> None:
    # Every step kind maps to a check (a missing entry would crash status).
    host = server_status(plan_host(TARGET, replace(DESIRED, canary_user="tsops-canary"),
                                   CONVERGED, [DEVICE]), round_trips=1)
    assert {name for name, state in states(host).items() if state != "ok"} == {"ssh"}
    assert host.state == "drift"


def test_the_tags_check_shows_expected_and_actual() -> None:
    host = server(CONVERGED, (replace(DEVICE, tags=("tag:server",)),))
    assert host.check("tags") == Check("tags", "drift", "tag:db tag:server", "tag:server")


def test_a_logged_out_server_is_not_enrolled_and_its_tags_and_ssh_are_unknown() -> None:
    host = server(replace(CONVERGED, status=replace(STATUS, backend_state="NeedsLogin")))
    assert states(host) == {"reachable": "ok", "version": "ok", "enrolled": "drift",
                            "tags": "unknown", "ssh": "unknown", "openssh": "ok"}
    enrolled = host.check("enrolled")
    assert enrolled is not None and enrolled.actual.startswith("NeedsLogin on ")


def test_a_fresh_host_fails_version_and_enrolment() -> None:
    host = server(FRESH, ())
    assert states(host)["version"] == "drift" and states(host)["enrolled"] == "drift"
    assert host.check("version") == Check("version", "drift", "1.78.3", "not installed")


def test_an_unreachable_server_is_an_error_with_its_reason() -> None:
    host = server_status(HostPlan(target=TARGET, desired=DESIRED, problem="connection refused"))
    assert host.state == "error" and host.reason == "connection refused"
    assert states(host) == {"reachable": "error", "version": "unknown", "enrolled": "unknown",
                            "tags": "unknown", "ssh": "unknown"}


def test_a_reached_but_unplannable_server_is_an_error_and_claims_nothing() -> None:
    facts = replace(CONVERGED, status=replace(STATUS, tailnet="other.example"))
    host = server(facts)
    assert host.state == "error" and host.reason is not None and "other.example" in host.reason
    assert states(host)["reachable"] == "ok"
    assert {states(host)[c] for c in ("version", "enrolled", "tags", "ssh")} == {"unknown"}


def recorder(facts: RecorderFacts, device: Device | None = RECORDER, **kwargs: object) -> (
        HostStatus):
    """The status of rec1 (binary runtime, S3 unless a spec is given)."""
    api_down = bool(kwargs.pop("api_down", False))
    plan: RecorderHostPlan = recorder_plan(facts, **kwargs)
    bucket = Check("storage", "ok", "bucket settings", "match")
    return recorder_status(plan, device, "tag:recorder", bucket, 10, round_trips=1,
                           api_down=api_down)


def test_a_converged_recorder_passes_every_check() -> None:
    host = recorder(parse_probe(RECORDER_PROBE))
    assert states(host) == {"reachable": "ok", "unit": "ok", "tailnet": "ok", "files": "ok",
                            "destination": "ok"}


def test_a_stopped_recorder_fails_only_its_unit_check() -> None:
    host = recorder(replace(parse_probe(RECORDER_PROBE), active="inactive"))
    assert {n for n, s in states(host).items() if s != "ok"} == {"unit"}
    assert host.check("unit") == Check("unit", "drift", "active, enabled", "inactive, enabled")


def test_a_changed_unit_file_fails_files_not_the_unit_state() -> None:
    host = recorder(replace(parse_probe(RECORDER_PROBE), unit_sha256="0" * 64))
    assert {n for n, s in states(host).items() if s != "ok"} == {"files"}
    files = host.check("files")
    assert files is not None and "/etc/systemd/system/tsrecorder.service" in files.actual


def test_a_recorder_offline_or_missing_in_the_api_fails_tailnet() -> None:
    facts = parse_probe(RECORDER_PROBE)
    offline = recorder(facts, replace(RECORDER, connected_to_control=False))
    assert offline.check("tailnet") == Check("tailnet", "drift", "online with tag:recorder",
                                             "registered with tag:recorder, offline")
    missing = recorder(facts, None, registered=False)
    assert {n for n, s in states(missing).items() if s != "ok"} == {"tailnet"}


def test_a_local_destination_checks_owner_and_free_space() -> None:
    spec = replace(BINARY, storage=LOCAL)
    base = replace(parse_probe(RECORDER_PROBE + "dst=998:700\nfree_kb=20971520\n"),
                   unit_sha256=sha256(render_unit(spec)))
    assert states(recorder(base, spec=spec))["destination"] == "ok"
    low = recorder(replace(base, free_kb=1048576), spec=spec)
    assert low.check("destination") == Check(
        "destination", "drift",
        "/srv/recordings owned by tsrecorder, mode 0700, at least 10 GiB free",
        "owner:mode 998:700, 1.0 GiB free")
    wrong_owner = recorder(replace(base, destination_owner="0:755"), spec=spec)
    assert states(wrong_owner)["destination"] == "drift"


def test_an_s3_recorder_destination_follows_the_bucket() -> None:
    plan: RecorderHostPlan = recorder_plan(parse_probe(RECORDER_PROBE))
    bucket = storage_check(BucketPlan("recordings", changes=(
        BucketChange("policy", "replace the bucket policy"),)))
    assert bucket == Check("storage", "drift",
                           "bucket recordings: settings and bucket policy as the inventory says",
                           "to change: replace the bucket policy")
    host = recorder_status(plan, RECORDER, "tag:recorder", bucket, 10)
    assert states(host)["destination"] == "drift"
    assert storage_check(BucketPlan("recordings", problem="S3: AccessDenied")) == Check(
        "storage", "error",
        "bucket recordings: settings and bucket policy as the inventory says",
        "S3: AccessDenied")
    assert storage_check(None) is None


def policy_plan(**kwargs: object) -> PolicyPlan:
    """A policy plan; unchanged unless `after` differs."""
    fields: dict[str, object] = {
        "before": "{}", "after": "{}", "splices": (), "added_tags": (), "added_rules": (),
        "changed_rules": (), "removed_rules": (), "warnings": (),
        "enforcing": ()}
    fields.update(kwargs)
    return PolicyPlan(**fields)  # type: ignore[arg-type]


def test_policy_matches_or_names_the_rule_that_differs() -> None:
    clean = policy_status(policy_plan(), ("servers-recorded",), "")
    assert clean.check.state == "ok"
    edited = policy_status(policy_plan(after="{ }", changed_rules=("servers-recorded",)),
                           ("servers-recorded",), "-a\n+b\n")
    assert edited.check == Check(
        "policy", "drift", "managed rules servers-recorded present and enforced as the "
        "inventory says", "differs: servers-recorded")
    assert edited.diff == "-a\n+b\n"
    deleted = policy_status(policy_plan(after="{ }", added_rules=("servers-recorded",)),
                            ("servers-recorded",), "")
    assert deleted.check.actual == "missing: servers-recorded"
    assert policy_error("HTTP 403").check.state == "error"


def test_not_checked_is_never_worse_than_ok() -> None:
    assert worst(["unknown", "ok"]) == "ok" and worst([]) == "ok"
    assert worst(["unknown", "drift", "ok"]) == "drift"


def test_exit_codes_follow_the_worst_state() -> None:
    ok = server()
    drift = server(CONVERGED, (replace(DEVICE, tags=("tag:server",)),))
    down = server_status(HostPlan(target=TARGET, desired=DESIRED, problem="timed out"))
    assert Status((ok,)).exit_code == ExitCode.OK
    assert Status((ok, drift)).exit_code == ExitCode.DRIFT
    assert Status((drift, down)).exit_code == ExitCode.FAILED
    policy = policy_status(policy_plan(after="x", changed_rules=("r",)), ("r",), "")
    assert Status((ok,), policy=policy).exit_code == ExitCode.DRIFT
    assert Status((ok,), problems=("recorders: no binary",)).exit_code == ExitCode.FAILED


def test_the_table_uses_words_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    drift = server(CONVERGED, (replace(DEVICE, tags=("tag:server",)),))
    stopped = recorder(replace(parse_probe(RECORDER_PROBE), active="failed"))
    policy = policy_status(policy_plan(), ("servers-recorded",), "")
    print_status(Status((drift, stopped), policy=policy), symbols=False)
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("host1", "rec1"))}
    assert rows["host1"] == ["host1", "server", "ok", "ok", "ok", "drift", "ok"]
    assert rows["rec1"] == ["rec1", "recorder", "ok", "drift", "ok", "ok", "ok"]
    assert "host1: tags: expected tag:db tag:server; found tag:server" in out
    assert "rec1: unit: expected active, enabled; found failed, enabled" in out
    assert "policy: ok (managed rules servers-recorded" in out
    assert out.rstrip().endswith("2 host(s): 0 ok, 2 drift, 0 error; policy ok.")


def test_json_has_every_check_with_expected_and_actual() -> None:
    down = server_status(HostPlan(target=TARGET, desired=DESIRED, problem="timed out"), 1)
    data = Status((down,), policy=policy_error("HTTP 403")).as_dict()
    assert data["state"] == "error"
    assert data["hosts"][0]["reason"] == "timed out" and data["hosts"][0]["round_trips"] == 1
    assert data["hosts"][0]["checks"][0] == {
        "name": "reachable", "state": "error", "expected": "one probe answers",
        "actual": "timed out"}
    assert data["policy"] == {"name": "policy", "state": "error",
                              "expected": "the policy file readable", "actual": "HTTP 403",
                              "diff": ""}
    assert data["storage"] is None
