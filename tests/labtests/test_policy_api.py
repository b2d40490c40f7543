"""`tsops policy` against the control-plane simulator on loopback (no lab hosts needed).

The simulator validates like the real API (syntax, references, the policy's own tests) and
answers 412 to a stale If-Match, so these tests show the write path end to end: retry on a
concurrent edit, refusal by the validator, the lockout guard, a second apply that posts nothing,
edits made outside tsops shown before applying, rollback, and the file source.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sim.control import ControlServer
from tests.sim.control.conftest import register_body
from tsops.events import Recorded
from tsops.inventory.load import load_inventory
from tsops.policy import hujson
from tsops.policy.apply import apply_policy
from tsops.tailscale_api import PolicyValidation, TailscaleApi

DATA = Path(__file__).resolve().parents[1] / "data" / "policies"
SEED = (DATA / "17-tests-and-sshtests.hujson").read_text()
TOKEN_VAR = "TSOPS_TEST_API_TOKEN"

INVENTORY = """\
version: 1
tailnet:
  name: example.com
  api_url: {api_url}
  allow_plain_http: true
  credentials:
    api_token: {{env: {token_var}}}
servers:
  tags: [tag:server]
  hosts:
    web1: {{address: 192.0.2.11, tags: [tag:web]}}
recorders:
  tag: tag:recorder
  hosts:
    rec1: {{address: 192.0.2.30}}
storage:
  destination: /var/lib/tsrecorder
policy:
  state_dir: state
{policy}
ssh_rules:
  - name: sre-to-servers
    src: [{src}]
    dst: [tag:server]
    users: [autogroup:nonroot, root]
    action: check
    check_period: 12h
"""


@pytest.fixture
def control() -> Iterator[ControlServer]:
    """A control simulator holding a realistic commented policy."""
    with ControlServer(host="127.0.0.1", port=0) as server:
        server.seed_policy(SEED)
        yield server


@pytest.fixture
def token(control: ControlServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An API token, exported where the inventory says it is."""
    value = control.create_api_token()
    monkeypatch.setenv(TOKEN_VAR, value)
    return value


def write_inventory(folder: Path, control: ControlServer, *, src: str = "group:sre",
                    policy: str = "  managed_rules: first") -> Path:
    """An inventory for the simulator's tailnet, its policy state kept under folder/state.

    The seed's hand-written rule (group:sre to tag:web as deploy, unrecorded) would take
    sessions the managed rule records: by default tsops puts its rule ahead of it (tsops's
    coverage check refuses the patch otherwise: tests/labtests/test_policy_coverage.py).
    """
    path = folder / "inventory.yaml"
    path.write_text(INVENTORY.format(api_url=control.url, token_var=TOKEN_VAR, src=src,
                                     policy=policy))
    return path


# The inventory's recorder (192.0.2.30) is never reachable here, so it can never pass the
# health gate: tests about the policy API's mechanics write with the override, and the gate's
# own refusals are tested below (an online device alone is not a healthy recorder).
UNVERIFIED = "--allow-unverified-recorder"


def recorder_online(control: ControlServer) -> None:
    """Register a device carrying tag:recorder (it stays online for 15 simulated seconds)."""
    key = control.create_auth_key(["tag:recorder"])
    response = httpx.post(f"{control.url}/sim/v1/register", timeout=5,
                          json=register_body(key.secret, hostname="rec1",
                                             advertiseTags=["tag:recorder"]))
    response.raise_for_status()


def tsops(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator does (the token comes from the environment)."""
    return subprocess.run([sys.executable, "-m", "tsops", *args], capture_output=True,
                          text=True, check=False, env=dict(os.environ), timeout=60)


def added_lines(diff: str) -> str:
    """The lines a unified diff adds."""
    return "\n".join(line for line in diff.splitlines() if line.startswith("+"))


def policy_posts(control: ControlServer) -> list[int]:
    """The statuses of every write to the policy file so far (recorded before answering)."""
    return [r.status for r in control.requests()
            if r.method == "POST" and r.path.endswith("/acl")]


def test_apply_writes_once_and_a_second_apply_posts_nothing(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    recorder_online(control)
    inventory = write_inventory(tmp_path, control)
    first = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert first.returncode == 0, first.stderr
    assert "tsops: sre-to-servers" in added_lines(first.stdout)
    assert policy_posts(control) == [200]
    text = control.policy().text
    assert "tsops: sre-to-servers" in text
    assert "// The policy's own tests must still pass after the patch." in text
    assert (tmp_path / "state" / "0001.json").is_file()
    assert (tmp_path / "state" / "0001.before.hujson").read_text() == SEED

    second = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert second.returncode == 0, second.stderr
    assert "already up to date" in second.stdout
    assert policy_posts(control) == [200]
    assert control.policy().text == text

    diff = tsops("policy", "diff", str(inventory), "--changes-exit-code")
    assert diff.returncode == 0
    assert "policy: no changes" in diff.stdout


def test_diff_shows_the_change_and_exits_3(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    inventory = write_inventory(tmp_path, control)
    result = tsops("policy", "diff", str(inventory), "--changes-exit-code")
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("--- tailnet example.com policy file (current)")
    assert '"enforceRecorder": true' in added_lines(result.stdout)
    assert policy_posts(control) == []


class RacingApi(TailscaleApi):
    """An API client during whose first validate someone else saves an edit."""

    def __init__(self, control: ControlServer, token: str) -> None:
        super().__init__(control.url, "-", token=token)
        self.control = control
        self.raced = False

    def validate_policy(self, text: str) -> PolicyValidation:
        """Validate, and the first time let another admin save an edit meanwhile."""
        if not self.raced:
            self.raced = True
            current = self.control.policy().text
            self.control.seed_policy(current.replace(
                '"group:sre": ["alice@example.com"]',
                '"group:sre": ["alice@example.com", "dave@example.com"] /* added by dave */'))
        return super().validate_policy(text)


def test_a_concurrent_edit_gives_412_then_a_retry_keeps_it(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    inventory = load_inventory(write_inventory(tmp_path, control))
    api = RacingApi(control, token)
    try:
        result = apply_policy(inventory, api, Recorded(answer=True),
                              healthy_recorder_tags={"tag:recorder"}, allow_unverified=False)
    finally:
        api.close()
    assert result.changed and result.attempts == 2
    assert policy_posts(control) == [412, 200]
    text = control.policy().text
    assert '"dave@example.com"] /* added by dave */' in text
    assert "tsops: sre-to-servers" in text
    assert result.etag == control.policy().etag


def test_a_candidate_the_api_rejects_writes_nothing(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    recorder_online(control)
    inventory = write_inventory(tmp_path, control, src="group:nobody")
    result = tsops("policy", "apply", str(inventory), "--yes", "--allow-coverage-gaps",
                   UNVERIFIED)
    assert result.returncode == 1
    assert "rejected the patched policy, nothing was written" in result.stderr
    assert "group:nobody" in result.stderr
    assert policy_posts(control) == []
    assert control.policy().text == SEED
    assert not (tmp_path / "state").exists()


SCIM_WARNING = "group:eng@example.com: group not yet synced from the identity provider"


def test_validate_warnings_are_shown_and_the_policy_is_written(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    # A tailnet whose policy draws warnings (e.g. SCIM-synced groups) must still be patchable.
    recorder_online(control)
    control.set_policy_warnings([SCIM_WARNING])
    inventory = write_inventory(tmp_path, control)
    result = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert result.returncode == 0, result.stderr
    assert ("warning: tailnet example.com policy file: the Tailscale API warns (writing "
            f"anyway): {SCIM_WARNING}\n") in result.stderr
    assert "rejected" not in result.stderr
    assert policy_posts(control) == [200]
    assert "tsops: sre-to-servers" in control.policy().text
    assert (tmp_path / "state" / "0001.json").is_file()


def test_a_policy_write_that_fails_after_landing_is_recognised_not_repeated(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    # The server commits the write, then answers 503: the retry (same If-Match) gets 412, and
    # reading back shows tsops's own text, so the write counts as done, once, and is kept.
    recorder_online(control)
    control.inject_failure("POST", "/api/v2/tailnet/[^/]+/acl", 503, retry_after="0",
                           after_handling=True)
    inventory = write_inventory(tmp_path, control)
    result = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert result.returncode == 0, result.stderr
    assert policy_posts(control) == [503, 412]
    versions = control.policy_versions()
    assert sum("tsops: sre-to-servers" in v.text for v in versions) == 1
    assert (tmp_path / "state" / "0001.json").is_file()
    assert not (tmp_path / "state" / "0002.json").exists()
    assert "written (version" in result.stdout


def test_a_rate_limited_validate_is_retried(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    recorder_online(control)
    control.inject_failure("POST", "/api/v2/tailnet/[^/]+/acl/validate", 429, retry_after="0",
                           times=2)
    inventory = write_inventory(tmp_path, control)
    result = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert result.returncode == 0, result.stderr
    assert [r.status for r in control.requests() if r.path.endswith("/acl/validate")] == [
        429, 429, 200]
    assert policy_posts(control) == [200]


def test_enforcement_without_a_healthy_recorder_is_refused(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    inventory = write_inventory(tmp_path, control)
    refused = tsops("policy", "apply", str(inventory), "--yes")
    assert refused.returncode == 1
    assert "refusing to write enforceRecorder: true" in refused.stderr
    assert "rule 'sre-to-servers' records to tag:recorder" in refused.stderr
    assert policy_posts(control) == []
    assert control.policy().text == SEED

    forced = tsops("policy", "apply", str(inventory), "--yes", "--allow-unverified-recorder")
    assert forced.returncode == 0, forced.stderr
    assert "warning: writing enforceRecorder: true although" in forced.stderr
    assert policy_posts(control) == [200]


def test_an_online_recorder_device_alone_is_not_healthy(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    # The device is online, but the recorder host cannot be reached to prove it writes its
    # destination: the health gate does not pass, nothing is written.
    recorder_online(control)
    inventory = write_inventory(tmp_path, control)
    # The recorder's address: loopback's discard port, where nothing answers SSH.
    inventory.write_text(inventory.read_text().replace(
        "rec1: {address: 192.0.2.30}", "rec1: {address: 127.0.0.1, port: 9}"))
    result = tsops("policy", "apply", str(inventory), "--yes")
    assert result.returncode == 1
    assert "warning: recorder rec1: NOT healthy: " in result.stderr
    assert "refusing to write enforceRecorder: true" in result.stderr
    assert policy_posts(control) == []


def test_an_offline_recorder_is_not_healthy(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    recorder_online(control)
    control.advance_clock(60)
    result = tsops("policy", "apply", str(write_inventory(tmp_path, control)), "--yes")
    assert result.returncode == 1
    assert "refusing" in result.stderr


def test_edits_outside_tsops_are_shown_then_rollback_restores(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    recorder_online(control)
    inventory = write_inventory(tmp_path, control)
    assert tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED).returncode == 0
    patched = control.policy().text
    edited = patched.replace('"tests": [', '// reviewed by erin\n\t"tests": [')
    control.seed_policy(edited)

    shown = tsops("policy", "diff", str(inventory))
    assert "policy: no changes" in shown.stdout
    again = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert again.returncode == 0, again.stderr
    assert "changed outside tsops since its last write" in again.stdout
    assert "+\t// reviewed by erin\n" in again.stdout
    assert policy_posts(control) == [200]

    listed = tsops("policy", "rollback", str(inventory), "--list")
    assert listed.stdout.split()[0:2] == ["1", listed.stdout.split()[1]]
    assert "apply" in listed.stdout

    rolled = tsops("policy", "rollback", str(inventory), "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert "changed outside tsops" in rolled.stdout
    assert control.policy().text == SEED
    assert policy_posts(control) == [200, 200]
    assert (tmp_path / "state" / "0002.json").is_file()


def test_file_source_is_edited_in_place_and_validated(
    control: ControlServer, token: str, tmp_path: Path
) -> None:
    recorder_online(control)
    policy_file = tmp_path / "repo" / "policy.hujson"
    policy_file.parent.mkdir()
    policy_file.write_bytes((DATA / "05-crlf.hujson").read_bytes())
    inventory = write_inventory(tmp_path, control,
                                policy="  source: file\n  file: repo/policy.hujson")
    result = tsops("policy", "apply", str(inventory), "--yes", UNVERIFIED)
    assert result.returncode == 0, result.stderr
    after = policy_file.read_bytes().decode()
    assert "tsops: sre-to-servers" in after
    assert "\n" not in after.replace("\r\n", "")
    assert after.startswith((DATA / "05-crlf.hujson").read_bytes().decode()[:60])
    assert policy_posts(control) == []
    assert [r.path for r in control.requests() if r.path.endswith("/validate")]
    assert hujson.loads(after)["ssh"][-1]["enforceRecorder"] is True
    assert "already up to date" in tsops("policy", "apply", str(inventory), "--yes",
                                         UNVERIFIED).stdout
