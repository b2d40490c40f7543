"""Coverage gaps through plan and bootstrap (flows with fakes), and how the CLI shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_flow_bootstrap import Db1, run
from tests.unit.test_flow_servers import DEVICES, write_inventory
from tests.unit.test_flow_verify import Api
from tests.unit.test_recorder_presence import RECORDING
from tsops.cli.bootstrap import _print_plans, _print_results
from tsops.errors import ExitCode
from tsops.events import Recorded
from tsops.flows import bootstrap as flow

SHADOWED = """{
  "ssh": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]},
  ],
}
"""
LINE = ("coverage gap: db1: ssh[0] (line 3): src [autogroup:member] dst [tag:server] users "
        "[root] matches first for any member as root: no recorder; ahead of tsops rule "
        "'servers'")


def test_plan_shows_the_gaps_and_bootstrap_refuses_the_policy_with_exit_3(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_inventory(tmp_path, RECORDING)
    policy = tmp_path / "policy.hujson"
    policy.write_text(SHADOWED)
    db1 = Db1()
    with run(path, {"db1": db1.host}, Api(DEVICES), Recorded(answer=True)) as context:
        planned = flow.plan(context)
        report = flow.apply(context, planned)
    assert planned.policy is not None
    assert [g.line() for g in planned.policy.gaps] == [LINE]
    assert planned.as_dict()["policy"]["coverage_gaps"][0]["message"] == LINE
    _print_plans(planned, "table")
    assert f"warning: {LINE}" in capsys.readouterr().err.splitlines()

    assert [r.outcome for r in report.hosts] == ["changed"]
    assert report.policy is not None and report.policy.refused
    assert report.exit_code == ExitCode.DRIFT
    assert policy.read_text() == SHADOWED
    assert report.as_dict()["policy"]["coverage_gaps"][0]["line"] == 3
    _print_results(report, "table")
    err = capsys.readouterr().err
    assert "policy file: not written: refusing to write" in err
    assert LINE in err.splitlines()

    with run(path, {"db1": db1.host}, Api(DEVICES), Recorded(answer=True)) as context:
        forced = flow.apply(context, flow.plan(context), allow_gaps=True)
    assert forced.exit_code == ExitCode.OK
    assert forced.policy is not None and forced.policy.changed and not forced.policy.refused
    assert [g.line() for g in forced.policy.gaps] == [LINE]
    assert "tsops: servers" in policy.read_text()
