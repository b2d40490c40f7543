"""The plan, bootstrap and status flows with fakes that refuse anything not scripted.

One server, db1, as the captured fact probe shows it (enrolled with its tags, Tailscale SSH off),
and a policy file in the operator's repository; no recorders (their phase has its own tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_flow_servers import DEVICES, ENROLLED, SSH_ON, write_inventory
from tests.unit.test_flow_verify import Api, Host
from tsops.context import RunContext
from tsops.errors import ExitCode
from tsops.events import Recorded
from tsops.flows import bootstrap as flow
from tsops.flows.status import gather_status
from tsops.inventory.load import Target, load_inventory
from tsops.remote import HostUnreachable, RunResult
from tsops.servers.facts import PROBE
from tsops.servers.scripts import enable_ssh

INVENTORY = """\
version: 1
tailnet:
  name: example.com
  credentials: {api_token: {env: TS_API_TOKEN}}
tailscale:
  install: {method: preinstalled}
servers:
  tags: [tag:server]
  hosts:
    db1: {tags: [tag:db]}
ssh_rules:
  - name: servers
    src: [autogroup:member]
    dst: [tag:server]
    users: [root]
    enforce_recorder: false
policy:
  source: file
  file: policy.hujson
  state_dir: state
"""


class Db1:
    """db1: Tailscale SSH off until `tailscale set --ssh` runs, then on."""

    def __init__(self) -> None:
        self.ssh = False
        self.host = Host("db1", {PROBE: lambda script: RunResult(
            0, SSH_ON if self.ssh else ENROLLED, ""), enable_ssh(): self.turn_on})

    def turn_on(self, script: str) -> RunResult:
        self.ssh = True
        return RunResult(0, "", "")


def run(path: Path, hosts: dict[str, Host], api: Api, events: Recorded | None = None,
        limits: tuple[str, ...] = ()) -> RunContext:
    inventory = load_inventory(path)
    chosen = tuple(t for t in inventory.servers if not limits or t.name in limits)
    context = RunContext(inventory, chosen, events or Recorded(), limited=bool(limits))

    def connect(target: Target) -> Host:
        assert target.name in hosts, f"no SSH connection to {target.name} was expected"
        return hosts[target.name]

    context.connect = connect
    context.api_factory = lambda context: api  # type: ignore[assignment,return-value]
    return context


def test_a_plan_probes_each_server_once_and_changes_nothing(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY)
    db1, api, events = Db1(), Api(DEVICES), Recorded()
    with run(path, {"db1": db1.host}, api, events) as context:
        planned = flow.plan(context)
    assert [s.kind for s in planned.hosts[0].steps] == ["ssh"]
    assert planned.policy is not None and planned.policy.changed
    assert planned.recorders is None and not planned.problem
    assert planned.exit_code(detailed=True) == ExitCode.DRIFT
    assert planned.exit_code(detailed=False) == ExitCode.OK
    assert db1.host.ran == [PROBE] and db1.host.closed
    assert (tmp_path / "policy.hujson").read_text() == "{}\n"
    assert "confirm" not in [kind for kind, _ in events.lines]


def test_bootstrap_applies_servers_then_the_policy_and_a_rerun_changes_nothing(
        tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY)
    db1, api, events = Db1(), Api(DEVICES), Recorded(answer=True)
    with run(path, {"db1": db1.host}, api, events) as context:
        report = flow.apply(context, flow.plan(context, with_policy=False))
    assert report.exit_code == ExitCode.OK
    assert [(r.name, r.outcome, r.done) for r in report.hosts] == [
        ("db1", "changed", ["turn Tailscale SSH on (tailscale set --ssh)"])]
    assert report.policy is not None and report.policy.changed and report.policy.error is None
    assert db1.host.ran == [PROBE, enable_ssh(), PROBE]
    policy = (tmp_path / "policy.hujson").read_text()
    assert '"tag:server"' in policy
    kinds = [kind for kind, _ in events.lines]
    assert kinds.index("progress") < kinds.index("confirm")  # servers first, the policy last
    assert report.as_dict()["hosts"][0]["outcome"] == "changed"

    db1.host.ran.clear()
    with run(path, {"db1": db1.host}, api) as context:
        again = flow.plan(context)
        rerun = flow.apply(context, again)
    assert again.converged and not again.pending
    assert [r.outcome for r in rerun.hosts] == ["unchanged"]
    assert rerun.policy is not None and not rerun.policy.changed
    assert db1.host.ran == [PROBE] and (tmp_path / "policy.hujson").read_text() == policy


def test_an_unreachable_server_cannot_be_planned_and_is_exit_1(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY)
    db1 = Host("db1", {PROBE: HostUnreachable("db1", "connection refused")})
    with run(path, {"db1": db1}, Api(DEVICES)) as context:
        planned = flow.plan(context)
        report = flow.apply(context, planned)
    assert planned.problem and planned.exit_code(detailed=False) == ExitCode.FAILED
    # Its only server could not be planned: bootstrap stops before asking (nothing_plannable).
    assert planned.nothing_plannable
    assert [(r.outcome, r.reason) for r in report.hosts] == [("failed", "connection refused")]
    assert report.exit_code == ExitCode.FAILED


def test_one_plannable_server_is_enough_to_go_on(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY)
    db1 = Db1()
    with run(path, {"db1": db1.host}, Api(DEVICES)) as context:
        planned = flow.plan(context)
    assert not planned.nothing_plannable and planned.pending


def test_with_limit_the_policy_is_left_alone(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY)
    db1 = Db1()
    with run(path, {"db1": db1.host}, Api(DEVICES), limits=("db1",)) as context:
        planned = flow.plan(context)
        report = flow.apply(context, planned)
    assert planned.policy is None and report.policy is None
    assert (tmp_path / "policy.hujson").read_text() == "{}\n"


def test_status_reads_only_and_reports_drift_then_clean(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY)
    db1, api = Db1(), Api(DEVICES)
    with run(path, {"db1": db1.host}, api) as context:
        drifted = gather_status(context)
    assert drifted.exit_code == ExitCode.DRIFT
    assert {c.name: c.state for c in drifted.hosts[0].checks}["ssh"] == "drift"
    assert drifted.policy is not None and drifted.policy.check.state == "drift"
    assert db1.host.ran == [PROBE] and api.deleted == []
    assert (tmp_path / "policy.hujson").read_text() == "{}\n"

    with run(path, {"db1": db1.host}, api, Recorded(answer=True)) as context:
        flow.apply(context, flow.plan(context, with_policy=False))
    db1.host.ran.clear()
    db1.host.round_trips = 0
    with run(path, {"db1": db1.host}, api) as context:
        clean = gather_status(context)
    assert clean.exit_code == ExitCode.OK and clean.state == "ok"
    assert clean.as_dict()["hosts"][0]["round_trips"] == 1 and db1.host.ran == [PROBE]


def test_verbose_plan_shows_the_exact_script_each_step_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tsops.cli.bootstrap import _print_plans

    path = write_inventory(tmp_path, INVENTORY)
    db1 = Db1()
    with run(path, {"db1": db1.host}, Api(DEVICES)) as context:
        planned = flow.plan(context)
        _print_plans(planned, "table", context.inventory)
        shown = capsys.readouterr().out
        _print_plans(planned, "table")
        plain = capsys.readouterr().out
        report = flow.apply(context, planned)
    assert [r.outcome for r in report.hosts] == ["changed"]
    # What -v printed under the step is, line for line, what apply ran on the host.
    script = enable_ssh()
    assert "  + turn Tailscale SSH on (tailscale set --ssh)" in shown
    assert "script (as root):" in shown
    printed = [line.split("| ", 1)[1] for line in shown.splitlines() if "  | " in line]
    assert printed == script.rstrip("\n").splitlines()
    assert script in db1.host.ran
    assert "script (as root)" not in plain


def test_a_recorder_environment_file_is_shown_with_its_secrets_redacted() -> None:
    from tsops.cli.recorder import _redacted

    env = ("AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=s3cr3t\n"
           "TS_AUTHKEY_FILE=/run/tsrecorder/authkey\nAWS_REGION=eu-central-1\n")
    assert _redacted(env) == ["AWS_ACCESS_KEY_ID=<redacted>", "AWS_SECRET_ACCESS_KEY=<redacted>",
                              "TS_AUTHKEY_FILE=<redacted>", "AWS_REGION=eu-central-1"]
