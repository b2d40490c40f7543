"""Coverage gaps through plan and bootstrap (flows with fakes), and how the CLI shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_flow_bootstrap import Db1, run
from tests.unit.test_flow_servers import DEVICES, ENROLLED, SSH_ON, write_inventory
from tests.unit.test_flow_verify import Api
from tests.unit.test_recorder_presence import RECORDING
from tsops.cli.bootstrap import _print_plans, _print_results
from tsops.errors import ExitCode
from tsops.events import Recorded
from tsops.flows import bootstrap as flow
from tsops.remote import RunResult
from tsops.servers.facts import PROBE
from tsops.servers.scripts import enable_ssh

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


def test_an_openssh_change_waits_for_the_policy_and_is_not_made_when_it_was_refused(
        tmp_path: Path) -> None:
    # Bootstrap closes OpenSSH only after the policy step: when tsops manages a server over
    # Tailscale SSH next, the rule that lets it in must be written first. Refused: not made.
    path = write_inventory(tmp_path, RECORDING.replace(
        "servers:\n", "servers:\n  openssh: {mode: restrict, listen: [127.0.0.1]}\n", 1))
    (tmp_path / "policy.hujson").write_text(SHADOWED)
    db1 = Db1()
    # sshd listening on every address, as the Debian capture shows it.
    debian = (Path(__file__).resolve().parents[1] / "data" / "facts" / "debian12-fresh.txt")
    sshd = debian.read_text().split("@@tsops:sshd", 1)[1].split("@@tsops:end", 1)[0]
    db1.host.script[PROBE] = lambda script: RunResult(0, SSH_ON.replace(
        "@@tsops:end", "@@tsops:sshd" + sshd + "@@tsops:end") if db1.ssh else ENROLLED.replace(
        "@@tsops:end", "@@tsops:sshd" + sshd + "@@tsops:end"), "")
    with run(path, {"db1": db1.host}, Api(DEVICES), Recorded(answer=True)) as context:
        planned = flow.plan(context)
        assert "openssh" in [s.kind for s in planned.hosts[0].steps]
        report = flow.apply(context, planned)
    assert report.policy is not None and report.policy.refused
    (host,) = report.hosts
    assert host.outcome == "failed"
    assert "not done, because the policy file was not written" in host.reason
    changes = [script for script in db1.host.ran if script != PROBE]
    assert changes == [enable_ssh()]  # Tailscale SSH turned on; sshd untouched
