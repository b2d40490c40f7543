"""`status` and `verify` alarm when a managed rule's recorder tag has no online device.

Tailscale SSH then runs those sessions unrecorded even under enforceRecorder (reference section
6), while every host may look fine: the servers are enrolled, the policy holds the rule. Before
this check, status said all was well (exit 0) and verify's canaries could not tell either.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_flow_bootstrap import INVENTORY, Db1, run
from tests.unit.test_flow_servers import DEVICES, write_inventory
from tests.unit.test_flow_verify import DEVICES as VERIFY_DEVICES
from tests.unit.test_flow_verify import Api, Host, Tailnet, context_for, inventory_at
from tsops.checks import Check, Status, recorders_online_check
from tsops.cli.status import print_status
from tsops.errors import ExitCode
from tsops.events import Recorded
from tsops.flows import bootstrap as flow
from tsops.flows.status import gather_status
from tsops.flows.verify import verify

# The rule records to tag:recorder (not enforced, so that writing it needs no healthy
# recorder); the recorders run elsewhere: this inventory does not deploy them.
RECORDING = INVENTORY.replace("    enforce_recorder: false\n",
                              "    enforce_recorder: false\n    recorder: tag:recorder\n")


def offline(devices: list) -> list:  # type: ignore[type-arg]
    """The same devices with every recorder disconnected from the control plane."""
    return [replace(d, connected_to_control=False) if "tag:recorder" in d.tags else d
            for d in devices]


def test_status_alarms_when_the_recorder_tag_has_no_online_device(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert RECORDING != INVENTORY
    path = write_inventory(tmp_path, RECORDING)
    db1 = Db1()
    with run(path, {"db1": db1.host}, Api(DEVICES), Recorded(answer=True)) as context:
        flow.apply(context, flow.plan(context, with_policy=False))
    with run(path, {"db1": db1.host}, Api(DEVICES)) as context:
        clean = gather_status(context)
    assert clean.exit_code == ExitCode.OK, clean.as_dict()
    assert clean.coverage is not None
    assert [c.name for c in clean.coverage.checks] == ["recorders-online", "coverage"]

    with run(path, {"db1": db1.host}, Api(offline(DEVICES))) as context:
        alarmed = gather_status(context)
    assert all(h.state == "ok" for h in alarmed.hosts)
    assert alarmed.policy is not None and alarmed.policy.check.state == "ok"
    assert alarmed.exit_code == ExitCode.DRIFT
    data = alarmed.as_dict()
    assert data["coverage"]["checks"][0] == {
        "name": "recorders-online", "state": "drift",
        "expected": "an online device with tag:recorder",
        "actual": "no online device with tag:recorder: Tailscale SSH runs the sessions of "
                  "those rules unrecorded, even with enforceRecorder"}
    json.dumps(data)
    print_status(alarmed, symbols=False)
    out = capsys.readouterr().out
    assert ("recorders-online: drift: expected an online device with tag:recorder; found no "
            "online device with tag:recorder") in out
    assert out.rstrip().endswith("; policy ok; coverage drift.")


def test_status_with_limit_still_checks_the_recorder_tag(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, RECORDING)
    db1 = Db1()
    db1.ssh = True
    with run(path, {"db1": db1.host}, Api(offline(DEVICES)), limits=("db1",)) as context:
        status = gather_status(context)
    assert status.policy is None
    assert status.coverage is not None
    assert [(c.name, c.state) for c in status.coverage.checks] == [
        ("recorders-online", "drift")]
    assert status.exit_code == ExitCode.DRIFT


def test_the_check_names_only_the_tags_missing() -> None:
    check = recorders_online_check({"tag:a", "tag:b"}, {"tag:a"})
    assert check.state == "drift" and check.actual.startswith("no online device with tag:b:")
    assert recorders_online_check({"tag:a"}, {"tag:a"}) == Check(
        "recorders-online", "ok", "an online device with tag:a", "online")
    assert Status((), coverage=None).exit_code == ExitCode.OK


def test_verify_alarms_when_the_recorder_tag_has_no_online_device(tmp_path: Path) -> None:
    # The fake tailnet still "records" the canaries: only the device list tells the gap.
    tailnet = Tailnet(VERIFY_DEVICES)
    recorder = Host("rec1", prefix={"for d in ": tailnet.found})
    api = Api(offline(VERIFY_DEVICES))
    with context_for(inventory_at(tmp_path), {"rec1": recorder}, api) as context:
        report = verify(context, None, timeout=30, session=tailnet)
    assert [r.state for r in report.results] == ["recorded", "recorded"]
    assert report.recorders_offline == ("tag:recorder",)
    assert report.exit_code == ExitCode.DRIFT
    assert report.alarms() == [
        "no online device carries tag:recorder: Tailscale SSH runs the sessions of the rules "
        "recording to it unrecorded, even with enforceRecorder"]
    data = report.as_dict()
    assert data["recorders_offline"] == ["tag:recorder"] and data["state"] == "not-recorded"

    online = Api(VERIFY_DEVICES)
    with context_for(inventory_at(tmp_path), {"rec1": recorder}, online) as context:
        fine = verify(context, None, timeout=30, session=Tailnet(VERIFY_DEVICES))
    assert fine.recorders_offline == ()
