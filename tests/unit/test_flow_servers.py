"""The add-server and remove-server flows with fakes that refuse anything not scripted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_flow_verify import DESTINATION, Api, Host, Tailnet, device
from tsops.cli import servers as cli
from tsops.context import RunContext
from tsops.errors import ExitCode, UsageError
from tsops.events import Recorded
from tsops.flows import servers as flow
from tsops.flows.servers import LOGOUT, UNINSTALL, InventoryChange, StepResult
from tsops.inventory.edit import NewHost
from tsops.inventory.load import LoadedInventory, Target, load_inventory
from tsops.policy.apply import plan_for
from tsops.recorders.host import status_script
from tsops.remote import HostUnreachable, RunResult
from tsops.servers.facts import NODE_STATUS, PROBE
from tsops.servers.scripts import enable_ssh
from tsops.tailnet_ssh import SessionResult
from tsops.tailscale_api import Device

DATA = Path(__file__).resolve().parents[1] / "data" / "facts"
STATUS = NODE_STATUS.command
INVENTORY = f"""\
version: 1
tailnet:
  name: example.com
  credentials: {{api_token: {{env: TS_API_TOKEN}}}}
tailscale:
  install: {{method: preinstalled}}
servers:
  tags: [tag:server]
  hosts:
    web1: {{tags: [tag:web]}}
recorders:
  hosts: {{rec1: }}
storage:
  destination: {DESTINATION}
ssh_rules:
  - name: servers
    src: [autogroup:member]
    dst: [tag:server]
    users: [root]
policy:
  source: file
  file: policy.hujson
  state_dir: state
"""
DB1 = NewHost("db1", tags=("tag:db",))
# db1 as the captured probe shows it: enrolled in example.com with tag:server and tag:db.
ENROLLED = (DATA / "rocky9-enrolled.txt").read_text()
SSH_ON = ENROLLED.replace('"RunSSH": false', '"RunSSH": true')
DB1_DEVICE = Device(id="id-db1", node_id="nABC123CNTRL", name="db1.tail1.ts.net",
                    hostname="db1", tags=("tag:server", "tag:db"),
                    addresses=("100.64.0.7", "fd7a:115c:a1e0::7"), authorized=True,
                    connected_to_control=True)
DEVICES = [device("web1", "100.64.0.1", ("tag:server", "tag:web")), DB1_DEVICE,
           device("rec1", "100.64.0.9", ("tag:recorder",))]


def write_inventory(tmp_path: Path, text: str = INVENTORY) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    (tmp_path / "policy.hujson").write_text("{}\n")
    return path


def own_policy(inventory: LoadedInventory) -> str:
    """Make the policy file exactly what `inventory` wants; its text."""
    path = inventory.local_path("policy.hujson")
    text = plan_for(inventory, "{}\n", str(path)).after
    path.write_text(text)
    return text


def run_for(change: InventoryChange | LoadedInventory, hosts: dict[str, Host], api: Api,
            events: Recorded | None = None) -> RunContext:
    """The flow's run (one server) over fake SSH connections and a fake API."""
    events = events or Recorded()
    if isinstance(change, InventoryChange):
        context = flow.open_run(change, events)
    else:
        context = RunContext(change, change.servers[:1], events, limited=True)

    def connect(target: Target) -> Host:
        if target.name not in hosts:
            raise AssertionError(f"no SSH connection to {target.name} was expected")
        return hosts[target.name]

    context.connect = connect
    context.api_factory = lambda context: api  # type: ignore[assignment,return-value]
    return context


def healthy_recorder(name: str) -> Host:
    """A recorder host (local destination) that passes the health gate: its unit is active
    and the canary file written as its user reads back."""
    def write_check(script: str) -> RunResult:
        token = re.search(r"printf %s (\w+)", script)
        assert token is not None
        return RunResult(0, token.group(1), "")

    return Host(name, {status_script(): RunResult(0, "active\n", "")},
                prefix={"set -eu\nsetpriv ": write_check})


def no_session(address: str, user: str, command: str, timeout: float) -> SessionResult:
    raise AssertionError("no canary session was expected")


def leftovers(tmp_path: Path) -> list[str]:
    """Files beside the inventory that a flow may have left (temporary copies)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


def test_an_add_dry_run_only_probes_the_host_and_changes_nothing(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    before = path.read_bytes()
    db1, api = Host("db1", {PROBE: RunResult(0, SSH_ON, "")}), Api(DEVICES)
    with flow.adding(path, DB1) as change:
        policy = own_policy(change.inventory)
        with run_for(change, {"db1": db1}, api) as context:
            planned = flow.plan_add(context, change)
            planned.policy = flow.preview_policy(context)
    assert planned.host.converged and planned.warnings == ()
    assert planned.policy is not None and not planned.policy.changed
    assert db1.ran == [PROBE] and api.deleted == [] and db1.closed
    assert path.read_bytes() == before and (tmp_path / "policy.hujson").read_text() == policy
    assert leftovers(tmp_path) == []


def test_added_then_proved_recorded_by_a_canary(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    tailnet = Tailnet(DEVICES)
    db1 = Host("db1", {PROBE: RunResult(0, SSH_ON, "")})
    rec1 = Host("rec1", prefix={"for d in ": tailnet.found})
    events = Recorded()
    with flow.adding(path, DB1) as change:
        own_policy(change.inventory)
        with run_for(change, {"db1": db1, "rec1": rec1}, Api(DEVICES), events) as context:
            planned = flow.plan_add(context, change)
            planned.policy = flow.preview_policy(context)
            report = flow.apply_add(context, planned, session=tailnet)
    assert path.read_text() == change.after and "    db1:\n" in change.after
    assert report.enrollment.outcome == "unchanged" and report.policy_error is None
    assert report.proof is not None and report.proof.state == "recorded"
    assert report.proof.key == "nABC123CNTRL/2026-12-01T00:00:00Z.cast"
    assert report.exit_code == ExitCode.OK
    assert events.of("info") == [f"{path}: db1 added"]
    assert events.of("step") == ["db1: canary session as root@100.64.0.7"]
    assert db1.ran == [PROBE] and tailnet.sessions == [("db1", "root")]
    assert leftovers(tmp_path) == []


def test_the_policy_is_written_before_enrollment_without_asking_again(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    own_policy(load_inventory(path))  # tag:db is not owned yet: the policy must change
    probes = [SSH_ON.replace('"RunSSH": true', '"RunSSH": false'), SSH_ON]
    db1 = Host("db1", {PROBE: lambda script: RunResult(0, probes.pop(0), ""),
                       enable_ssh(): RunResult(0, "", "")})
    rec1 = healthy_recorder("rec1")
    events = Recorded(answer=None)  # any question asked would fail: nobody is there
    with flow.adding(path, DB1) as change, \
            run_for(change, {"db1": db1, "rec1": rec1}, Api(DEVICES), events) as context:
        planned = flow.plan_add(context, change)
        planned.policy = flow.preview_policy(context)
        assert planned.policy is not None and planned.policy.changed
        assert "tag:db" in planned.policy.diff
        report = flow.apply_add(context, planned, canary=False, session=no_session)
    assert report.policy_error is None and report.enrollment.outcome == "changed"
    assert report.proof is None and report.exit_code == ExitCode.OK
    assert '"tag:db"' in (tmp_path / "policy.hujson").read_text()
    assert db1.ran == [PROBE, enable_ssh(), PROBE]
    # The enforcing rule is written only after the recorder passed the health gate: unit
    # active, online, and its destination written as the recorder's user on its host.
    assert rec1.ran[0] == status_script() and "setpriv" in rec1.ran[1]
    assert ("info", f"recorder rec1: verified: {DESTINATION} writable") in events.lines
    kinds = [kind for kind, _ in events.lines]
    written = next(i for i, (kind, text) in enumerate(events.lines)
                   if kind == "info" and text.startswith(f"{tmp_path / 'policy.hujson'}: written"))
    assert "confirm" not in kinds
    assert kinds.index("progress") < kinds.index("info") < written
    assert [text for kind, text in events.lines[written:] if kind == "progress"] == [
        "db1: turn Tailscale SSH on (tailscale set --ssh)", "db1: verifying", "db1: changed"]
    assert events.of("warning")[-1] == (
        f"db1: --skip-canary: nothing proved that its sessions are recorded; `tsops verify "
        f"{path} --limit db1` does")


def test_a_coverage_gap_is_shown_refused_with_exit_3_and_written_only_when_allowed(
        tmp_path: Path) -> None:
    # A hand-written rule ahead of tsops's takes db1's root sessions without a recorder.
    shadowed = ('{\n  "ssh": [\n    {"action": "accept", "src": ["autogroup:member"], '
                '"dst": ["tag:db"], "users": ["root"]},\n  ],\n}\n')
    text = INVENTORY.replace("    users: [root]\n", "    users: [root]\n"
                             "    recorder: tag:recorder\n    enforce_recorder: false\n")
    policy = tmp_path / "policy.hujson"
    for allowed in (False, True):
        path = write_inventory(tmp_path, text)
        policy.write_text(shadowed)
        db1 = Host("db1", {PROBE: RunResult(0, SSH_ON, "")})
        with flow.adding(path, DB1) as change, \
                run_for(change, {"db1": db1}, Api(DEVICES)) as context:
            planned = flow.plan_add(context, change)
            planned.policy = flow.preview_policy(context)
            assert planned.policy is not None
            assert next(gap.line() for gap in planned.policy.gaps).startswith(
                "coverage gap: db1: ssh[0] (line 3)")
            report = flow.apply_add(context, planned, allow_gaps=allowed, canary=False,
                                    session=no_session)
        if not allowed:
            assert report.policy_refused and report.exit_code == ExitCode.DRIFT
            assert report.policy_error is not None and "ssh[0]" in report.policy_error
            assert policy.read_text() == shadowed
        else:
            assert not report.policy_refused and report.policy_error is None
            assert report.exit_code == ExitCode.OK
            assert "tsops: servers" in policy.read_text()


def test_a_failed_enrollment_keeps_the_host_in_the_inventory_and_is_exit_1(
        tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    db1 = Host("db1", {PROBE: RunResult(0, ENROLLED, ""),
                       enable_ssh(): RunResult(1, "", "tailscale: permission denied\n")})
    with flow.adding(path, DB1) as change:
        own_policy(change.inventory)
        with run_for(change, {"db1": db1}, Api(DEVICES)) as context:
            planned = flow.plan_add(context, change)
            planned.policy = flow.preview_policy(context)
            report = flow.apply_add(context, planned, session=no_session)
    assert report.enrollment.outcome == "failed"
    assert report.enrollment.reason == ("turn Tailscale SSH on (tailscale set --ssh) failed "
                                        "(exit 1): tailscale: permission denied")
    assert report.proof is None and report.exit_code == ExitCode.FAILED
    assert "    db1:\n" in path.read_text()


def test_an_unreachable_new_host_cannot_be_planned_and_fails_enrollment(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    db1 = Host("db1", {PROBE: HostUnreachable("db1", "connection refused")})
    with flow.adding(path, DB1) as change:
        own_policy(change.inventory)
        with run_for(change, {"db1": db1}, Api(DEVICES)) as context:
            planned = flow.plan_add(context, change)
            planned.policy = flow.preview_policy(context)
            report = flow.apply_add(context, planned, session=no_session)
    assert planned.host.problem == "connection refused"
    assert (report.enrollment.outcome, report.exit_code) == ("failed", ExitCode.FAILED)


def test_an_uncovered_host_and_an_unmanaged_policy_are_warned_about(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, INVENTORY.replace("dst: [tag:server]", "dst: [tag:web]"))
    with flow.adding(path, DB1) as change, \
            run_for(change, {"db1": Host("db1", {PROBE: RunResult(0, SSH_ON, "")})},
                    Api(DEVICES)) as context:
        assert flow.plan_add(context, change).warnings == (
            "db1: no ssh_rules rule has one of its tags (tag:server, tag:db) in dst: its "
            "sessions are not covered by a rule tsops manages; add its tag to a rule's dst",)
    path = write_inventory(tmp_path, INVENTORY.split("ssh_rules:")[0])
    with flow.adding(path, DB1) as change, \
            run_for(change, {"db1": Host("db1", {PROBE: RunResult(0, SSH_ON, "")})},
                    Api(DEVICES)) as context:
        planned = flow.plan_add(context, change)
        assert "the inventory has no ssh_rules" in planned.warnings[0]
        assert flow.preview_policy(context) is None


def test_add_server_asks_before_changing_and_nobody_to_ask_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_inventory(tmp_path)
    with flow.adding(path, DB1) as change:
        own_policy(change.inventory)
    before = path.read_bytes()
    db1, api = Host("db1", {PROBE: RunResult(0, SSH_ON, "")}), Api(DEVICES)
    monkeypatch.setattr("tsops.context.connect_api", lambda context: api)
    monkeypatch.setattr("tsops.context.ssh_connector", lambda inventory: lambda target: db1)
    with pytest.raises(UsageError, match="no terminal to confirm them: rerun with --yes"):
        cli.run_add_server(path, DB1, dry_run=False, yes=False, no_input=True,
                           allow_unverified=False)
    assert path.read_bytes() == before and db1.ran == [PROBE] and leftovers(tmp_path) == []
    out = capsys.readouterr().out
    assert out.startswith(f"--- {path} (current)\n+++ {path} (edited)\n")
    assert "\n+    db1:\n+      tags: [tag:db]\n" in out
    assert out.splitlines()[-2:] == ["db1: no change", "policy file: no change"]


def test_add_server_of_a_host_enrolled_already_reports_it_unchanged_then_proved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A regression: a converged (or unreachable) new host once ended in an internal error.
    path = write_inventory(tmp_path)
    with flow.adding(path, DB1) as change:
        own_policy(change.inventory)
    tailnet = Tailnet(DEVICES)
    hosts = {"db1": Host("db1", {PROBE: RunResult(0, SSH_ON, "")}),
             "rec1": Host("rec1", prefix={"for d in ": tailnet.found})}
    monkeypatch.setattr("tsops.context.connect_api", lambda context: Api(DEVICES))
    monkeypatch.setattr("tsops.context.ssh_connector",
                        lambda inventory: lambda target: hosts[target.name])
    monkeypatch.setattr("tsops.tailnet_ssh.run_command", tailnet)
    code = cli.run_add_server(path, DB1, dry_run=False, yes=True, no_input=True,
                              allow_unverified=False)
    out, err = capsys.readouterr()
    assert code == ExitCode.OK and path.read_text() == change.after
    lines = out.splitlines()
    assert lines[-4:-1] == ["policy file: no change", f"{path}: db1 added",
                            "db1: unchanged, enrolled with its tags and Tailscale SSH on"]
    assert lines[-1].startswith("db1: recorded: a canary session as root landed at "
                                "nABC123CNTRL/2026-12-01T00:00:00Z.cast after ")
    assert err == "db1: canary session as root@100.64.0.7\n"


def test_remove_with_an_unreachable_host_is_partial_and_exit_1(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    web1 = Host("web1", {STATUS: HostUnreachable("web1", "connection refused")})
    api = Api(DEVICES)
    with flow.removing(path, "web1") as change, run_for(change, {"web1": web1}, api) as context:
        planned = flow.plan_remove(context, change, logout=True)
        assert (planned.device, planned.unreachable) == (DEVICES[0], "connection refused")
        report = flow.apply_remove(context, planned)
    assert report.steps == [StepResult("tailscale logout", "unreachable: connection refused"),
                            StepResult("delete device id-web1"),
                            StepResult(f"remove web1 from {path}")]
    assert report.partial and report.exit_code == ExitCode.FAILED
    assert web1.ran == [STATUS] and api.deleted == ["id-web1"]
    assert path.read_text() == change.after
    assert [t.name for t in load_inventory(path).servers] == []
    assert leftovers(tmp_path) == []


def test_a_remove_plan_reads_only_and_finds_the_device_by_node_id(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    before = path.read_bytes()
    # Two devices are named web1; the host's own status names the right one.
    stale = device("web1", "100.64.0.3")
    web1 = Host("web1", {STATUS: RunResult(0, '{"BackendState": "Running", "Self": {"ID": '
                                               '"nWEB1CNTRL", "HostName": "web1"}}', "")})
    current = Device("id-web1-new", "nNEWCNTRL", "web1-1.tail1.ts.net", "web1",
                     ("tag:server", "tag:web"), ("100.64.0.4",), True)
    api = Api([stale, current])
    with flow.removing(path, "web1") as change, run_for(change, {"web1": web1}, api) as context:
        planned = flow.plan_remove(context, change, uninstall=True)
    assert planned.device == stale and planned.problem is None and planned.unreachable is None
    assert web1.ran == [STATUS] and api.deleted == [] and path.read_bytes() == before
    assert leftovers(tmp_path) == []

    web1 = Host("web1", {STATUS: RunResult(0, "", ""), UNINSTALL: RunResult(0, "", "")})
    with flow.removing(path, "web1") as change, run_for(change, {"web1": web1}, api) as context:
        planned = flow.plan_remove(context, change, uninstall=True)
        # The host did not tell its node ID and two devices have its name: none is guessed.
        assert planned.device is None and planned.problem is not None
        assert "2 devices are named web1 (id-web1, id-web1-new)" in planned.problem
        report = flow.apply_remove(context, planned)
    assert web1.ran == [STATUS, UNINSTALL] and api.deleted == []
    assert report.steps[0] == StepResult("uninstall tailscale")
    assert report.steps[1] == StepResult("delete the device", planned.problem)
    assert report.exit_code == ExitCode.FAILED and path.read_text() == change.after


def test_a_logout_that_fails_on_the_host_names_its_exit_and_last_line(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    web1 = Host("web1", {STATUS: RunResult(0, "", ""),
                         LOGOUT: RunResult(1, "", "first\nlogout: not logged in\n")})
    api = Api(DEVICES)
    with flow.removing(path, "web1") as change, run_for(change, {"web1": web1}, api) as context:
        report = flow.apply_remove(context, flow.plan_remove(context, change, logout=True))
    assert report.steps[0] == StepResult("tailscale logout", "exit 1: logout: not logged in")
    assert api.deleted == ["id-web1"] and report.exit_code == ExitCode.FAILED


@pytest.mark.parametrize(("name", "message"), [
    ("nothere", "nothere: not a server of this inventory"),
    ("rec1", "rec1: a recorder, not a server")])
def test_removing_what_is_not_a_server_is_refused_before_anything(
        tmp_path: Path, name: str, message: str) -> None:
    path = write_inventory(tmp_path)
    with pytest.raises(UsageError, match=message), flow.removing(path, name):
        raise AssertionError("no change may be prepared")
    assert leftovers(tmp_path) == []


def test_a_remove_never_deletes_a_twin_of_another_node_id(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    # The host says it is node nGONECNTRL, already gone from the tailnet; the device left of
    # the same name is a stale twin (or another machine): it is not the host's, never deleted.
    twin = device("web1", "100.64.0.3")
    web1 = Host("web1", {STATUS: RunResult(0, '{"BackendState": "Running", "Self": {"ID": '
                                               '"nGONECNTRL", "HostName": "web1"}}', "")})
    api = Api([twin])
    with flow.removing(path, "web1") as change, run_for(change, {"web1": web1}, api) as context:
        planned = flow.plan_remove(context, change)
        assert (planned.device, planned.problem) == (None, None)
        report = flow.apply_remove(context, planned)
    assert api.deleted == []
    assert report.steps == [StepResult(f"remove web1 from {path}")]
