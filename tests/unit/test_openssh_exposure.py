"""OpenSSH exposure: the inventory field, the probe's parser, the assessment, the rendered files
(golden, in tests/golden/openssh/) and the guarded change with fakes that refuse anything not
scripted: confirmed over a new connection, refused by `sshd -t`, and reverted by the host.

Regenerate the golden files after an intended change with TSOPS_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.test_flow_bootstrap import run
from tests.unit.test_flow_servers import DEVICES, SSH_ON, write_inventory
from tests.unit.test_flow_verify import Api, Host
from tsops.checks import HostStatus, Status, openssh_check
from tsops.cli.status import print_status
from tsops.errors import ExitCode
from tsops.flows import bootstrap as flow
from tsops.inventory.load import load_inventory
from tsops.inventory.model import OpenSSH
from tsops.remote import HostUnreachable, RunResult
from tsops.servers import exposure, phase
from tsops.servers.exposure import (
    DROPIN,
    ConfigListen,
    Listener,
    SshdFacts,
    assess,
    parse_sshd,
    render_dropin,
)
from tsops.servers.facts import PROBE, sections

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "openssh"
RESTRICT = OpenSSH(mode="restrict", listen=("10.0.0.5", "127.0.0.1:2222"), revert_after="90s")
OFF = OpenSSH(mode="off")
KEEP = OpenSSH()
TOKEN = "0123456789ab"
RENDERERS: dict[str, Callable[[], str]] = {
    "dropin-restrict.conf": lambda: render_dropin(RESTRICT) or "",
    "dropin-off.conf": lambda: render_dropin(OFF) or "",
    "apply-restrict.sh": lambda: exposure.apply_script(TOKEN, RESTRICT),
    "apply-off.sh": lambda: exposure.apply_script(TOKEN, OFF),
    "apply-keep.sh": lambda: exposure.apply_script(TOKEN, KEEP),
    "revert.sh": lambda: exposure.revert_script(TOKEN),
    "disarm.sh": lambda: exposure.disarm_script(TOKEN),
    "outcome.sh": lambda: exposure.outcome_script(TOKEN),
}
WILDCARD = (Listener("0.0.0.0", 22), Listener("::", 22))  # noqa: S104 (sockets read, not bound)
DEFAULT = SshdFacts(listeners=WILDCARD, service_active="active", service_enabled="enabled",
                    socket_active="inactive", socket_enabled="disabled")


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_rendering_matches_golden_file(name: str) -> None:
    rendered = RENDERERS[name]()
    golden = GOLDEN / name
    if os.environ.get("TSOPS_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


@pytest.mark.parametrize("name", sorted(n for n in RENDERERS if n.endswith(".sh")))
def test_script_is_valid_shell(name: str) -> None:
    subprocess.run(["sh", "-n"], input=RENDERERS[name](), text=True, check=True)


def test_no_golden_file_is_orphaned() -> None:
    assert {p.name for p in GOLDEN.iterdir()} == set(RENDERERS)


def test_keep_has_no_drop_in() -> None:
    assert render_dropin(KEEP) is None


def test_the_probe_reads_sshd_in_its_single_round_trip() -> None:
    for section in ("sshd_sockets", "sshd_units", "sshd_dropin", "sshd_config_listen",
                    "sshd_ports", "sshd_revert", "sshd_include"):
        assert f"section {section}" in PROBE
    assert PROBE.rstrip().endswith("section end")


def test_parse_sshd_reads_listeners_units_drop_in_and_foreign_lines() -> None:
    output = "\n".join([
        "@@tsops:sshd_sockets", "ss",
        'LISTEN 0 128 10.0.0.5:22 0.0.0.0:* users:(("sshd",pid=9,fd=3))',
        'LISTEN 0 128 [::1]:2222 [::]:* users:(("sshd",pid=9,fd=4))',
        'LISTEN 0 128 *:22 *:* users:(("sshd",pid=9,fd=5))',
        "@@tsops:sshd_units", "ssh.service active enabled", "ssh.socket",
        "@@tsops:sshd_dropin", "present", "# header", "ListenAddress 10.0.0.5",
        "@@tsops:sshd_config_listen",
        "/etc/ssh/sshd_config.d/site.conf:3:ListenAddress 192.0.2.1:22",
        f"{DROPIN}:2:ListenAddress 10.0.0.5",
        "@@tsops:sshd_ports", "port 22", "port 2222",
        "@@tsops:sshd_revert", "abc active",
        "@@tsops:sshd_include", "yes",
        "@@tsops:end",
    ])
    sshd = parse_sshd(sections(output))
    assert sshd.listeners == (Listener("10.0.0.5", 22), Listener("::", 22),
                              Listener("::1", 2222))
    assert (sshd.service_active, sshd.service_enabled) == ("active", "enabled")
    assert (sshd.socket_active, sshd.socket_enabled) == ("", "")
    assert sshd.dropin == "# header\nListenAddress 10.0.0.5"
    assert sshd.config_listen == (
        ConfigListen("/etc/ssh/sshd_config.d/site.conf", 3, "192.0.2.1:22"),)
    assert sshd.ports == (22, 2222)
    assert sshd.armed == (("abc", "active"),)
    assert sshd.includes_dropins is True


def test_without_ss_the_listeners_are_unknown() -> None:
    sshd = parse_sshd(sections("@@tsops:sshd_sockets\n@@tsops:end\n"))
    assert sshd.listeners is None
    assert assess(KEEP, sshd).matches
    assert "`ss` is not installed" in (assess(RESTRICT, sshd).problem or "")


def test_keep_reports_each_listener_as_an_unrecorded_path_and_changes_nothing() -> None:
    found = assess(KEEP, DEFAULT)
    assert found.matches and found.change is None
    assert found.unrecorded == (
        "OpenSSH reachable on all IPv4 addresses (0.0.0.0:22): unrecorded path",
        "OpenSSH reachable on all IPv6 addresses ([::]:22): unrecorded path")
    check = openssh_check(found)
    assert (check.state, check.expected) == ("ok", "keep (not managed by tsops)")


def test_keep_takes_back_a_drop_in_tsops_wrote() -> None:
    restricted = SshdFacts(**{**DEFAULT.__dict__, "dropin": render_dropin(RESTRICT)})
    assert assess(KEEP, restricted).change == (
        f"remove tsops's sshd drop-in {DROPIN} and restart sshd")
    stopped = SshdFacts(**{**DEFAULT.__dict__, "listeners": (), "service_active": "inactive",
                           "dropin": (render_dropin(OFF) or "").rstrip("\n")})
    assert assess(KEEP, stopped).change == (
        f"remove tsops's sshd drop-in {DROPIN} and enable and start ssh.service")


def test_restrict_plans_a_change_until_sshd_listens_only_where_asked() -> None:
    found = assess(RESTRICT, DEFAULT)
    assert found.change is not None and found.change.startswith(
        "restrict sshd to 10.0.0.5, 127.0.0.1:2222")
    assert found.wanted == ("10.0.0.5:22", "127.0.0.1:2222")
    assert openssh_check(found).state == "drift"
    done = SshdFacts(
        listeners=(Listener("10.0.0.5", 22), Listener("127.0.0.1", 2222)),
        service_active="active", service_enabled="enabled",
        dropin=(render_dropin(RESTRICT) or "").rstrip("\n"))
    assert assess(RESTRICT, done).matches
    # The drop-in is right but sshd was not restarted: still a change.
    stale = SshdFacts(**{**done.__dict__, "listeners": WILDCARD})
    assert assess(RESTRICT, stale).change is not None


def test_restrict_with_a_port_less_address_uses_every_configured_port() -> None:
    both_ports = SshdFacts(**{**DEFAULT.__dict__, "ports": (22, 2200)})
    wanted = assess(OpenSSH(mode="restrict", listen=("::1",)), both_ports).wanted
    assert wanted == ("[::1]:22", "[::1]:2200")


def test_restrict_refuses_when_another_file_adds_a_listen_address() -> None:
    foreign = SshdFacts(**{**DEFAULT.__dict__, "config_listen": (
        ConfigListen("/etc/ssh/sshd_config", 14, "192.0.2.1"),)})
    problem = assess(RESTRICT, foreign).problem or ""
    assert problem.startswith("/etc/ssh/sshd_config:14 has `ListenAddress 192.0.2.1`")
    # The same address on another port is not what restrict asked either.
    other_port = SshdFacts(**{**DEFAULT.__dict__, "config_listen": (
        ConfigListen("/etc/ssh/sshd_config.d/lab.conf", 1, "127.0.0.1:22"),)})
    assert assess(RESTRICT, other_port).problem is not None
    listed = SshdFacts(**{**DEFAULT.__dict__, "config_listen": (
        ConfigListen("/etc/ssh/sshd_config.d/lab.conf", 1, "10.0.0.5:22"),)})
    assert assess(RESTRICT, listed).problem is None


def test_restrict_refuses_an_sshd_config_without_the_drop_in_directory() -> None:
    output = "@@tsops:sshd_sockets\nss\n@@tsops:sshd_include\nno\n@@tsops:end\n"
    sshd = parse_sshd(sections(output))
    assert sshd.includes_dropins is False
    assert "has no `Include /etc/ssh/sshd_config.d/*.conf`" in (
        assess(RESTRICT, sshd).problem or "")
    assert assess(KEEP, sshd).matches


def test_restrict_refuses_a_socket_activated_sshd() -> None:
    socket = SshdFacts(**{**DEFAULT.__dict__, "socket_active": "active"})
    assert "socket-activated" in (assess(RESTRICT, socket).problem or "")


def test_off_matches_only_when_sshd_is_stopped_and_disabled() -> None:
    assert assess(OFF, DEFAULT).change is not None
    off = SshdFacts(listeners=(), service_active="inactive", service_enabled="disabled",
                    socket_active="inactive", socket_enabled="disabled",
                    dropin=(render_dropin(OFF) or "").rstrip("\n"))
    assert assess(OFF, off).matches
    assert openssh_check(assess(OFF, off)).expected == "sshd stopped and disabled"


def test_an_armed_revert_blocks_any_change() -> None:
    armed = SshdFacts(**{**DEFAULT.__dict__, "armed": (("feed", "active"),)})
    assert "still armed" in (assess(KEEP, armed).problem or "")
    stale = SshdFacts(**{**DEFAULT.__dict__, "armed": (("feed", "inactive"),)})
    assert "revert timer is gone" in (assess(RESTRICT, stale).problem or "")


INVENTORY = """\
version: 1
tailnet:
  name: example.com
  credentials: {api_token: {env: TS_API_TOKEN}}
tailscale:
  install: {method: preinstalled}
connection: {tailnet_identity: ops@example.com}
servers:
  tags: [tag:server]
  openssh: {mode: restrict, listen: [10.0.0.5], revert_after: 30s}
  hosts:
    db1: {tags: [tag:db]}
  groups:
    web:
      via: tailnet-once-enrolled     # `off` needs a way in other than OpenSSH
      openssh: {mode: off}
      hosts:
        web1:
        web2: {openssh: {mode: keep}}
ssh_rules:
  - name: tsops
    src: [ops@example.com]
    dst: [tag:server]
    users: [root]
    enforce_recorder: false
"""


def test_the_setting_is_inherited_whole_from_servers_group_and_host(tmp_path: Path) -> None:
    inventory = load_inventory(write_inventory(tmp_path, INVENTORY))
    modes = {t.name: t.openssh for t in inventory.servers}
    assert modes["db1"] == OpenSSH(mode="restrict", listen=("10.0.0.5",), revert_after="30s")
    assert modes["db1"].revert_seconds == 30
    assert modes["web1"] == OFF and modes["web2"] == KEEP


def test_the_dead_man_window_has_bounds() -> None:
    with pytest.raises(ValueError, match="10s to 1h"):
        OpenSSH(mode="off", revert_after="5s")
    with pytest.raises(ValueError, match="10s to 1h"):
        OpenSSH(mode="off", revert_after="2h")


ONE_HOST = """\
version: 1
tailnet:
  name: example.com
  credentials: {api_token: {env: TS_API_TOKEN}}
tailscale:
  install: {method: preinstalled}
servers:
  tags: [tag:server]
  hosts:
    db1:
      tags: [tag:db]
      openssh: {mode: restrict, listen: [10.0.0.5, 127.0.0.1], revert_after: 20s}
"""
SSHD_DEFAULT = """\
@@tsops:sshd_sockets
ss
LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=9,fd=3))
@@tsops:sshd_units
ssh.service active enabled
ssh.socket inactive disabled
@@tsops:sshd_ports
port 22
@@tsops:end
"""
SSHD_RESTRICTED = """\
@@tsops:sshd_sockets
ss
LISTEN 0 128 10.0.0.5:22 0.0.0.0:* users:(("sshd",pid=9,fd=3))
LISTEN 0 128 127.0.0.1:22 0.0.0.0:* users:(("sshd",pid=9,fd=4))
@@tsops:sshd_units
ssh.service active enabled
ssh.socket inactive disabled
@@tsops:sshd_dropin
present
# Written by tsops (openssh mode restrict); tsops replaces it: see docs/openssh.md.
ListenAddress 10.0.0.5
ListenAddress 127.0.0.1
@@tsops:sshd_ports
port 22
@@tsops:end
"""
APPLY = "set -eu\numask 077\nmkdir -p /var/lib/tsops/openssh\n"
DISARM = "set -u\nif mv "
OUTCOME = "set -u\nif [ -e "
REVERTED = "removed the tsops drop-in (there was none before), restarted ssh.service\n"


class Db1:
    """db1 behind connections that each count their own round trips; they share its state."""

    def __init__(self, reachable: list[bool], disarm: RunResult | None = None,
                 apply: RunResult | Exception | None = None,
                 outcome: RunResult | None = None) -> None:
        self.restricted = False
        self.reachable = reachable  # one entry per connection opened, in order
        self.disarm = disarm or RunResult(0, "disarmed\n", "")
        self.apply = apply or RunResult(0, "armed\n", "")
        self.outcome = outcome or RunResult(4, REVERTED, "")
        self.connections: list[Host] = []

    def probe(self, script: str) -> RunResult:
        body = SSHD_RESTRICTED if self.restricted else SSHD_DEFAULT
        return RunResult(0, SSH_ON.replace("@@tsops:end", body), "")

    def applied(self, script: str) -> RunResult:
        assert "--on-active=20s" in script and "ListenAddress 127.0.0.1" in script
        if isinstance(self.apply, Exception):
            raise self.apply
        self.restricted = self.apply.ok
        return self.apply

    def connect(self) -> Host:
        up = self.reachable[len(self.connections)] if len(self.reachable) > len(
            self.connections) else True
        down = HostUnreachable("db1", "connection refused")
        host = Host("db1", {PROBE: self.probe if up else down}, {
            APPLY: self.applied if up else down,
            DISARM: self.disarm if up else down,
            OUTCOME: self.outcome if up else down,
            "/bin/sh /var/lib/tsops/openssh/": RunResult(4, REVERTED, "") if up else down,
        })
        self.connections.append(host)
        return host


def bootstrap(tmp_path: Path, db1: Db1) -> flow.BootstrapReport:
    path = write_inventory(tmp_path, ONE_HOST)
    with run(path, {}, Api(DEVICES)) as context:
        context.connect = lambda target: db1.connect()
        return flow.apply(context, flow.plan(context, with_policy=False))


def test_restrict_is_confirmed_over_a_new_connection_and_a_rerun_changes_nothing(
        tmp_path: Path) -> None:
    db1 = Db1(reachable=[True, True])
    report = bootstrap(tmp_path, db1)
    assert report.exit_code == ExitCode.OK
    (result,) = report.hosts
    assert (result.outcome, result.round_trips) == ("changed", 4)
    assert result.done == ["restrict sshd to 10.0.0.5, 127.0.0.1 (drop-in "
                           f"{DROPIN}, checked with sshd -t, then sshd restarted)"]
    first, second = db1.connections
    assert [s[:10] for s in first.ran] == [PROBE[:10], APPLY[:10]] and first.closed
    assert [s[:10] for s in second.ran] == [DISARM[:10], PROBE[:10]]
    token = first.ran[1].split("--unit=tsops-openssh-revert-")[1].split()[0]
    assert f"/var/lib/tsops/openssh/{token}.armed" in second.ran[0]

    again = bootstrap(tmp_path, db1)
    assert [(r.outcome, r.round_trips) for r in again.hosts] == [("unchanged", 1)]
    assert len(db1.connections) == 3 and db1.connections[2].ran == [PROBE]


def test_a_change_that_cuts_tsops_off_waits_for_the_host_to_revert(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(phase, "sleep", waits.append)
    db1 = Db1(reachable=[True, False, False, True])
    report = bootstrap(tmp_path, db1)
    assert report.exit_code == ExitCode.FAILED
    (result,) = report.hosts
    assert result.outcome == "failed"
    assert result.reason == (
        "OpenSSH restrict cut tsops off (a new connection failed: connection refused); the "
        f"host reverted it by itself and is reachable again: {REVERTED.strip()}")
    # It waited out the 20 s window before looking again, then retried until the host answered.
    assert waits[0] > 20 and waits[1:] == [phase.REACH_RETRY]
    assert len(db1.connections) == 4 and db1.connections[3].ran[0].startswith(OUTCOME)


def test_a_host_still_unreachable_after_the_window_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 100000, 50))
    monkeypatch.setattr(phase, "sleep", lambda seconds: None)
    monkeypatch.setattr(phase, "monotonic", lambda: float(next(clock)))
    db1 = Db1(reachable=[True] + [False] * 100)
    (result,) = bootstrap(tmp_path, db1).hosts
    assert result.outcome == "failed"
    assert result.reason.startswith("OpenSSH restrict cut tsops off")
    assert "still unreachable 120s after its dead-man window" in result.reason


def test_a_drop_in_that_sshd_refuses_is_taken_back(tmp_path: Path) -> None:
    db1 = Db1(reachable=[True], apply=RunResult(
        5, "", "sshd -t refused the new drop-in, which was removed: line 2: Bad address\n"))
    (result,) = bootstrap(tmp_path, db1).hosts
    assert result.outcome == "failed"
    assert result.reason == ("sshd -t refused the new drop-in, which was removed: line 2: "
                             "Bad address")
    assert len(db1.connections) == 1  # no confirmation: nothing was changed


def test_a_revert_that_came_first_fails_the_host(tmp_path: Path) -> None:
    db1 = Db1(reachable=[True, True], disarm=RunResult(4, REVERTED, ""))
    (result,) = bootstrap(tmp_path, db1).hosts
    assert result.outcome == "failed"
    assert "reverted by the host's dead-man timer before tsops could confirm it" in result.reason
    assert REVERTED.strip() in result.reason


@pytest.mark.parametrize(("apply", "outcome", "reason"), [
    (HostUnreachable("db1", "connection reset"), None,
     "the connection was lost while applying OpenSSH restrict (connection reset); the host "
     f"reverted it by itself and is reachable again: {REVERTED.strip()}"),
    (RunResult(1, "", "Job for ssh.service failed.\n"), None,
     "applying OpenSSH restrict failed (exit 1: Job for ssh.service failed.); the host "
     f"reverted it by itself and is reachable again: {REVERTED.strip()}"),
    (HostUnreachable("db1", "connection reset"),
     RunResult(3, "no change was armed: nothing was changed\n", ""),
     "the connection was lost while applying OpenSSH restrict (connection reset); no change "
     "was armed: nothing was changed"),
    (None, RunResult(0, "armed\n", ""),
     "OpenSSH restrict cut tsops off (a new connection failed: connection refused); its "
     f"dead-man timer had not fired, tsops reverted it: {REVERTED.strip()}"),
])
def test_every_unconfirmed_change_ends_in_one_line_saying_what_became_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apply: RunResult | Exception | None,
        outcome: RunResult | None, reason: str) -> None:
    monkeypatch.setattr(phase, "sleep", lambda seconds: None)
    reachable = [True, False, True] if apply is None else [True, True]
    db1 = Db1(reachable=reachable, apply=apply, outcome=outcome)
    (result,) = bootstrap(tmp_path, db1).hosts
    assert (result.outcome, result.reason) == ("failed", reason)
    assert "\n" not in result.reason


def test_status_prints_every_unrecorded_path_and_whether_restrict_matches(
        capsys: pytest.CaptureFixture[str]) -> None:
    kept = assess(KEEP, DEFAULT)
    restricted = SshdFacts(
        listeners=(Listener("10.0.0.5", 22), Listener("127.0.0.1", 2222)),
        service_active="active", service_enabled="enabled",
        dropin=(render_dropin(RESTRICT) or "").rstrip("\n"))
    matching = assess(RESTRICT, restricted)
    pending = assess(OFF, DEFAULT)
    hosts = tuple(HostStatus(name, "server", (openssh_check(found),), exposure=found)
                  for name, found in (("web1", kept), ("db1", matching), ("db2", pending)))
    print_status(Status(hosts), symbols=False)
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith(("web1:", "db1:", "db2:"))] == [
        "db2: openssh: expected sshd stopped and disabled; found listening on all IPv4 "
        "addresses (0.0.0.0:22), all IPv6 addresses ([::]:22)",
        "web1: OpenSSH reachable on all IPv4 addresses (0.0.0.0:22): unrecorded path",
        "web1: OpenSSH reachable on all IPv6 addresses ([::]:22): unrecorded path",
        "db1: OpenSSH reachable on 10.0.0.5:22: unrecorded path",
        "db1: OpenSSH reachable on 127.0.0.1:2222: unrecorded path",
        "db1: openssh restrict: matches",
        "db2: OpenSSH reachable on all IPv4 addresses (0.0.0.0:22): unrecorded path",
        "db2: OpenSSH reachable on all IPv6 addresses ([::]:22): unrecorded path",
        "db2: openssh off: planned: stop and disable sshd (ssh.service and ssh.socket); "
        "Tailscale SSH stays the only way in",
    ]
    data = Status(hosts).as_dict()
    assert data["state"] == "drift"
    assert data["hosts"][1]["openssh"] == {
        "mode": "restrict", "listening": ["10.0.0.5:22", "127.0.0.1:2222"],
        "wanted": ["10.0.0.5:22", "127.0.0.1:2222"], "matches": True, "change": None,
        "problem": None, "unrecorded": ["OpenSSH reachable on 10.0.0.5:22: unrecorded path",
                                        "OpenSSH reachable on 127.0.0.1:2222: unrecorded path"]}
