"""`tsops audit log` and `tsops audit timeline` against the control simulator on loopback: the
window, the filters, the actors, the policy diff told from tsops's history, sessions merged in,
ECS lines, and the one-line refusals (bad window, missing scope)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from ruamel.yaml import YAML

from tests.sim.control import ControlServer
from tests.unit.conftest import Run
from tsops.audit.events import Actor, AuditEvent, Target, window
from tsops.audit.policy import attribute
from tsops.errors import UsageError
from tsops.policy.store import History, Snapshot
from tsops.tailscale_api import TailscaleApi

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "tests" / "data" / "json_schemas"
TOKEN_VARIABLE = "TSOPS_TEST_AUDIT_TOKEN"
POLICY = """{
  "tagOwners": {"tag:server": []},
  "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server:22"]}],
}
"""
TSOPS_POLICY = POLICY.replace('"tag:server": []', '"tag:server": [], "tag:recorder": []')
BOB_POLICY = TSOPS_POLICY.replace('"tag:recorder": []', '"tag:recorder": [], "tag:db": []')

@pytest.fixture
def control() -> Iterator[ControlServer]:
    with ControlServer() as server:
        server.seed_policy(POLICY)
        yield server


def inventory(path: Path, control: ControlServer, extra: dict[str, Any] | None = None) -> Path:
    document: dict[str, Any] = {
        "version": 1,
        "tailnet": {"name": control.tailnet, "api_url": control.url, "allow_plain_http": True,
                    "credentials": {"api_token": {"env": TOKEN_VARIABLE}}},
        "policy": {"source": "api", "state_dir": str(path.parent / "policy-state")},
        **(extra or {}),
    }
    with path.open("w") as out:
        YAML().dump(document, out)
    return path


def tsops_write(control: ControlServer, token: str, state: Path, text: str) -> None:
    """A policy write as tsops makes one: If-Match, then kept in the history."""
    api = TailscaleApi(control.url, "-", token=token)
    try:
        before = api.get_policy()
        after = api.set_policy(text, before.etag)
    finally:
        api.close()
    History(state).add(Snapshot(before.text, before.etag), Snapshot(after.text, after.etag),
                       "test")


def enroll(control: ControlServer, hostname: str) -> str:
    """A node enrolled with a tagged key of the admin; its node ID."""
    key = control.create_auth_key(["tag:server"])
    body = {"authKey": key.secret, "machineKey": f"mkey:{hostname}", "hostname": hostname,
            "advertiseTags": ["tag:server"]}
    with httpx.Client(base_url=control.url) as http:
        answer = http.post("/sim/v1/register", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["node"]["nodeId"])


def cast(folder: Path, node: str, started: datetime.datetime, user: str, command: str) -> None:
    header = {"version": 2, "width": 80, "height": 24, "timestamp": int(started.timestamp()),
              "command": command, "srcNode": "laptop.example.ts.net", "srcNodeID": "nLAPTOP",
              "srcNodeUser": user, "sshUser": "root", "localUser": "root",
              "connectionID": f"{node}-{int(started.timestamp())}"}
    path = folder / node / f"{started.strftime('%Y-%m-%dT%H:%M:%SZ')}-{user}.cast"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(header) + "\n" + '[0.5,"o","hello\\r\\n"]\n')


def valid(name: str, document: Any) -> Any:
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text())).validate(
        document)
    return document


def test_the_log_names_each_actor_and_the_other_persons_diff(
    control: ControlServer, tsops: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = control.create_api_token()
    monkeypatch.setenv(TOKEN_VARIABLE, token)
    path = inventory(tmp_path / "inventory.yaml", control)
    tsops_write(control, token, tmp_path / "policy-state", TSOPS_POLICY)
    bob = TailscaleApi(control.url, "-", token=control.create_api_token(user="bob@example.com"))
    bob.set_policy(BOB_POLICY, bob.get_policy().etag)
    bob.close()

    code, out, err = tsops("audit", "log", str(path), "--since", "1h", "-o", "json")
    assert code == 0, err
    report = valid("audit-log", json.loads(out))
    events = report["events"]
    assert [(e["kind"], e["actor"]["login_name"]) for e in events] == [
        ("policy", "admin@example.com"), ("policy", "bob@example.com")]
    mine, bobs = (e["policy_change"] for e in events)
    assert mine["tsops_write"] == 1 and '+  "tagOwners": {"tag:server": [], "tag:recorder"' in (
        mine["diff"])
    assert bobs["tsops_write"] is None
    assert bobs["source"] == "tsops's policy history and the policy file now"
    assert '+  "tagOwners": {"tag:server": [], "tag:recorder": [], "tag:db": []},' in (
        bobs["diff"])
    changed = [line for line in bobs["diff"].splitlines() if line[:1] in "+-"
               and line[:3] not in ("+++", "---")]
    assert len(changed) == 2  # one line out, one line in: exactly bob's edit

    code, out, _ = tsops("audit", "log", str(path), "--actor", "bob")
    assert code == 0
    lines = out.splitlines()
    assert "bob@example.com" in lines[0] and "UPDATE" in lines[0]
    assert any(line.startswith("    +") and "tag:db" in line for line in lines)
    assert lines[-1].startswith("1 event(s) from ")
    code, out, _ = tsops("audit", "log", str(path), "--action", "enrolment", "-o", "json")
    assert json.loads(out)["events"] == []


def test_the_timeline_merges_changes_and_sessions_in_order(
    control: ControlServer, tsops: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = control.create_api_token()
    monkeypatch.setenv(TOKEN_VARIABLE, token)
    path = inventory(tmp_path / "inventory.yaml", control)
    tsops_write(control, token, tmp_path / "policy-state", TSOPS_POLICY)
    web = enroll(control, "web1")
    db = enroll(control, "db1")
    now = datetime.datetime.now(datetime.UTC)
    recordings = tmp_path / "recordings"
    cast(recordings, web, now - datetime.timedelta(minutes=30), "alice@example.com", "uptime")
    # Tomorrow: inside a window that ends in 2100, outside one that ends now.
    cast(recordings, db, now + datetime.timedelta(days=1), "carol@example.com", "psql")
    device = next(d for d in control.devices() if d.hostname == "db1")
    admin = TailscaleApi(control.url, "-", token=token)
    admin.set_device_tags(device.id, ("tag:server", "tag:recorder"))
    admin.delete_device(device.id)
    admin.close()

    code, out, err = tsops("audit", "timeline", str(path), "--recordings", str(recordings),
                           "--until", "2100-01-01", "-o", "json")
    assert code == 0, err
    report = valid("audit-timeline", json.loads(out))
    kinds = [(e["kind"], e["target"], e["actor"]) for e in report["entries"]]
    assert kinds == [
        ("session", "web1", "alice@example.com"),
        ("policy", "tailnet example.com", "admin@example.com"),
        ("enrolment", "web1", "admin@example.com"),
        ("enrolment", "db1", "admin@example.com"),
        ("tags", "db1", "admin@example.com"),
        ("removal", "db1", "admin@example.com"),
        ("session", "db1", "carol@example.com"),
    ]
    times = [e["time"] for e in report["entries"]]
    assert times == sorted(times)
    assert report["entries"][4]["summary"] == "tags tag:server -> tag:server tag:recorder"

    code, out, _ = tsops("audit", "timeline", str(path), "--recordings", str(recordings),
                         "--server", "web1", "-o", "json")
    assert [(e["kind"], e["target"]) for e in json.loads(out)["entries"]] == [
        ("session", "web1"), ("policy", "tailnet example.com"), ("enrolment", "web1")]
    code, out, _ = tsops("audit", "timeline", str(path), "--recordings", str(recordings),
                         "--user", "alice@example.com", "-o", "json")
    assert [e["kind"] for e in json.loads(out)["entries"]] == ["session"]

    code, out, _ = tsops("audit", "timeline", str(path), "--recordings", str(recordings),
                         "--until", "2100-01-01", "-o", "ecs")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["event"]["action"] for e in lines] == [
        "ssh-session-recorded", "policy-file-changed", "device-enrolled", "device-enrolled",
        "device-tags-changed", "device-removed", "ssh-session-recorded"]
    assert all(e["ecs"]["version"] == "8.11.0" for e in lines)
    assert lines[1]["tsops"]["diff_source"] == "tsops write 1"
    assert lines[5]["host"]["hostname"] == "db1"

    code, out, _ = tsops("audit", "timeline", str(path), "--recordings", str(recordings))
    assert code == 0
    rows = out.splitlines()
    assert "session" in rows[0] and "alice@example.com" in rows[0] and "ssh root: uptime" in (
        rows[0])
    assert rows[-1].startswith("6 entries for the whole tailnet from ")  # not tomorrow's


def test_bad_windows_and_a_missing_scope_are_one_line_refusals(
    control: ControlServer, tsops: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, control.create_api_token(["policy_file", "devices:core"]))
    path = inventory(tmp_path / "inventory.yaml", control)
    before = len(control.requests())
    code, out, err = tsops("audit", "log", str(path), "--since", "1h", "--until", "2h")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "is before --since 1h" in err
    assert len(control.requests()) == before  # nothing remote touched
    code, _, err = tsops("audit", "timeline", str(path), "--since", "yesterday")
    assert code == 2 and "--since 'yesterday': expected an ISO 8601" in err

    code, out, err = tsops("audit", "log", str(path))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "lacks the logs:configuration:read scope (the API answered 403)" in err
    code, out, _ = tsops("audit", "timeline", str(path), "-o", "json")
    assert code == 2 and json.loads(out)["error"]["kind"] == "bad-input"


# Pure: the window and the attribution of diffs.


def event(moment: datetime.datetime, who: str) -> AuditEvent:
    return AuditEvent(moment, "g", "API", Actor("1", "USER", who, who),
                      Target("example.com", "example.com", "TAILNET", "ACL"), "CONFIG", "UPDATE")


def test_a_window_must_end_after_it_starts() -> None:
    now = datetime.datetime(2026, 12, 2, 12, tzinfo=datetime.UTC)
    chosen = window("2026-12-01", None, now=now)
    assert (chosen.start.day, chosen.end) == (1, now)
    assert window(None, None, now=now).start == now - datetime.timedelta(days=7)
    with pytest.raises(UsageError, match="is before --since"):
        window("1h", "2h", now=now)


def test_two_foreign_edits_between_versions_get_no_single_diff(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.add(Snapshot("a\n", "1"), Snapshot("b\n", "2"), "test")
    [record] = history.records()
    written = datetime.datetime.strptime(record.written_at, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
    later = written + datetime.timedelta(minutes=1)
    events = [event(written, "tsops"), event(later, "bob"),
              event(later + datetime.timedelta(seconds=5), "eve")]
    changes = attribute(events, [record], "d\n")
    assert changes[0].tsops_write == 1 and changes[0].diff is not None
    assert changes[1].diff is None and changes[2].diff is None
    assert "2 changes between two versions" in changes[1].source
    one = attribute(events[:2], [record], "c\n")
    assert one[1].diff is not None and "-b\n+c\n" in one[1].diff
    # Without the policy as it is now, the edit after tsops's last write has no diff.
    assert 1 not in attribute(events[:2], [record], None)


# Log streaming: planned, applied once, unchanged on rerun, drift and repair, secrets never out.

HEC = "hec-secret-value-1"
S3_KEY_ID = "AKIDLABSTREAM0001"
S3_SECRET = "s3-secret-value-1"


def streaming_inventory(path: Path, control: ControlServer) -> Path:
    return inventory(path, control, {"log_streaming": {
        "configuration": {"destination": "splunk",
                          "url": "https://siem.example.com/services/collector",
                          "token": {"env": "TSOPS_TEST_HEC"}},
        "network": {"destination": "s3", "s3_bucket": "flow-logs", "s3_region": "eu-west-1",
                    "s3_authentication": "accesskey", "compression": "gzip",
                    "s3_access_key_id": {"env": "TSOPS_TEST_S3_ID"},
                    "s3_secret_access_key": {"env": "TSOPS_TEST_S3_SECRET"}},
    }})


def puts(control: ControlServer, since: int) -> list[str]:
    return [r.path for r in control.requests()[since:] if r.method == "PUT"]


def test_log_streaming_is_applied_once_then_drift_is_reported_and_repaired(
    control: ControlServer, tsops: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, control.create_api_token())
    monkeypatch.setenv("TSOPS_TEST_HEC", HEC)
    monkeypatch.setenv("TSOPS_TEST_S3_ID", S3_KEY_ID)
    monkeypatch.setenv("TSOPS_TEST_S3_SECRET", S3_SECRET)
    path = streaming_inventory(tmp_path / "inventory.yaml", control)

    code, out, err = tsops("plan", "--changes-exit-code", str(path))
    assert code == 3, out + err
    assert "log streaming configuration: create splunk https://siem.example.com/services/" \
           "collector\n  API PUT /tailnet/-/logging/configuration/stream\n" in out
    assert "log streaming network: create s3 s3://flow-logs" in out
    assert puts(control, 0) == []

    code, out, err = tsops("bootstrap", "--yes", "-o", "json", str(path))
    assert code == 0, out + err
    report = json.loads(out)
    assert [s["outcome"] for s in report["log_streaming"]["streams"]] == ["created", "created"]
    stored = control.logging.stream("configuration")
    assert stored is not None and stored["token"] == HEC
    network = control.logging.stream("network")
    assert network is not None and (network["s3AccessKeyId"], network["s3SecretAccessKey"],
                                    network["compressionFormat"]) == (S3_KEY_ID, S3_SECRET, "gzip")
    record = (tmp_path / "policy-state" / "log-streaming.json")
    assert record.stat().st_mode & 0o077 == 0 and HEC not in record.read_text()

    # The rerun writes nothing; plan and status agree.
    before = len(control.requests())
    code, out, err = tsops("bootstrap", "--yes", "-o", "json", str(path))
    assert code == 0, out + err
    assert [s["outcome"] for s in json.loads(out)["log_streaming"]["streams"]] == [
        "unchanged", "unchanged"]
    assert puts(control, before) == []
    assert tsops("plan", "--changes-exit-code", str(path))[0] == 0
    code, out, err = tsops("status", "-o", "json", str(path))
    assert code == 0, out + err
    streams = {s["log_type"]: s for s in json.loads(out)["log_streaming"]}
    assert streams["configuration"]["state"] == "ok"
    assert streams["configuration"]["publishing"]["state"] == "ok"

    # Changed by hand: status reports drift, plan shows the field, bootstrap repairs it.
    admin = httpx.Client(base_url=control.api_url, headers={
        "Authorization": f"Bearer {control.create_api_token()}"})
    admin.put("/tailnet/-/logging/configuration/stream", json={
        "destinationType": "splunk", "url": "https://elsewhere.example.com", "token": "x"})
    admin.close()
    code, out, err = tsops("status", str(path))
    assert code == 3, out + err
    assert ('log-streaming-configuration: drift: expected configuration logs streamed to splunk '
            'https://siem.example.com/services/collector; found url: "https://elsewhere.example.'
            'com" -> "https://siem.example.com/services/collector"') in out
    monkeypatch.setenv("TSOPS_TEST_S3_SECRET", "s3-secret-value-2")  # rotated
    code, out, err = tsops("plan", str(path))
    assert "log streaming network: update s3 s3://flow-logs (s3SecretAccessKey: changed)" in out
    before = len(control.requests())
    code, out, err = tsops("bootstrap", "--yes", str(path))
    assert code == 0, out + err
    assert "log streaming configuration: updated" in out
    assert sorted(puts(control, before)) == ["/api/v2/tailnet/example.com/logging/"
                                             "configuration/stream",
                                             "/api/v2/tailnet/example.com/logging/network/stream"]
    assert tsops("status", str(path))[0] == 0

    # A stream that cannot publish is drift too.
    control.logging.set_stream_error("configuration", "403 from the collector")
    code, out, err = tsops("status", str(path))
    assert code == 3 and "last error: 403 from the collector" in out
    for text in (out, err):
        assert HEC not in text and S3_SECRET not in text and S3_KEY_ID not in text


def test_log_streaming_without_the_scope_is_one_line(
    control: ControlServer, tsops: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, control.create_api_token(["policy_file", "devices:core"]))
    monkeypatch.setenv("TSOPS_TEST_HEC", HEC)
    monkeypatch.setenv("TSOPS_TEST_S3_ID", S3_KEY_ID)
    monkeypatch.setenv("TSOPS_TEST_S3_SECRET", S3_SECRET)
    path = streaming_inventory(tmp_path / "inventory.yaml", control)
    code, _, err = tsops("plan", str(path))
    assert code == 1
    assert ("log streaming: the credential lacks the log_streaming scope (the API answered "
            "403)") in err
    code, _, err = tsops("bootstrap", "--yes", str(path))
    assert code == 1 and "lacks the log_streaming scope" in err and puts(control, 0) == []


@pytest.mark.parametrize(("stream", "expected"), [
    ({"destination": "syslog", "url": "https://x.example", "token": {"env": "T"}},
     "log_streaming.configuration.destination: expected 'splunk', 'elastic', 'panther', "
     "'cribl', 'datadog', 'axiom' or 's3', got 'syslog'"),
    ({"destination": "datadog", "url": "https://x.example", "token": "dd-api-key"},
     "log_streaming.configuration.token: a secret must not be written in the inventory"),
    ({"destination": "s3", "s3_bucket": "b", "s3_region": "eu-west-1",
      "s3_authentication": "rolearn", "s3_role_arn": "arn:aws:iam::1:role/r"},
     "log_streaming.configuration: destination s3 needs s3_external_id"),
])
def test_bad_log_streaming_is_refused_with_file_line_and_field(
    control: ControlServer, tsops: Run, tmp_path: Path, stream: dict[str, Any], expected: str
) -> None:
    path = inventory(tmp_path / "inventory.yaml", control, {
        "log_streaming": {"configuration": stream}})
    code, out, err = tsops("plan", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}:") and expected in err
    assert control.requests() == []


def test_the_api_client_reads_flow_logs_and_streams_as_the_api_answers(
    control: ControlServer,
) -> None:
    api = TailscaleApi(control.url, "-", token=control.create_api_token())
    try:
        assert api.get_log_stream("network") is None
        assert api.log_stream_status("network") is None
        control.logging.add_flow_log({"nodeId": "nWEB1", "virtualTraffic": [
            {"proto": 6, "src": "100.64.0.1:50000", "dst": "100.64.0.2:22", "txBytes": 10}]})
        now = datetime.datetime.now(datetime.UTC)
        hour = datetime.timedelta(hours=1)
        [entry] = api.network_log(now - hour, now + hour)
        assert entry["nodeId"] == "nWEB1"
        assert api.network_log(now + hour, now + 2 * hour) == []
        api.set_log_stream("network", {"destinationType": "axiom", "url": "https://a.example",
                                       "token": "axiom-value"})
        shown = api.get_log_stream("network")
        assert shown is not None and "token" not in shown and shown["destinationType"] == "axiom"
        status = api.log_stream_status("network")
        assert status is not None and status["lastError"] == ""
        api.delete_log_stream("network")
        api.delete_log_stream("network")  # already gone: fine
        assert api.get_log_stream("network") is None
        with pytest.raises(ValueError, match="time zone"):
            api.configuration_log(datetime.datetime(2026, 1, 1), now)
    finally:
        api.close()


def test_the_timeline_is_a_page_of_recordings_serve(
    control: ControlServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recordings serve --inventory` shows the same timeline, its sessions linked to the
    player and the policy diff inert; without an inventory the page says what it needs."""
    import warnings

    from tsops.cli.serve import _timeline
    from tsops.recordings.store import LocalStore
    from tsops.review.app import Review, create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    token = control.create_api_token()
    monkeypatch.setenv(TOKEN_VARIABLE, token)
    path = inventory(tmp_path / "inventory.yaml", control)
    tsops_write(control, token, tmp_path / "policy-state",
                TSOPS_POLICY.replace('"tagOwners"', '// <b>x</b>\n  "tagOwners"'))
    web = enroll(control, "web1")
    recordings = tmp_path / "recordings"
    cast(recordings, web, datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5),
         "alice@example.com", "uptime")

    def client(review: Review) -> TestClient:
        served = TestClient(create_app(review, "t0ken", cookie="c"), follow_redirects=False)
        assert served.get("/?token=t0ken").status_code == 303
        return served

    served = client(Review.of(LocalStore(recordings), refresh=0, timeline=_timeline(path)))
    page = served.get("/timeline")
    assert page.status_code == 200, page.text
    assert 'id="nav-timeline"' in page.text
    kinds = [line.split('"')[3] for line in page.text.splitlines()
             if line.startswith('<tr class="entry" data-kind=')]
    assert kinds == ["session", "policy", "enrolment"]  # in time order: the session came first
    session_id = f"{web}/" + next((recordings / web).iterdir()).name.removesuffix(".cast")
    from urllib.parse import quote

    assert f'<a class="session" href="/r/{quote(session_id)}">' in page.text
    assert "&lt;b&gt;x&lt;/b&gt;" in page.text and "<b>x</b>" not in page.text
    assert served.get("/timeline?user=alice@example.com").text.count('class="entry"') == 1
    refused = served.get("/timeline?since=2026-01-02&until=2026-01-01")
    assert refused.status_code == 400 and "must end after it starts" in refused.text

    plain = client(Review.of(LocalStore(recordings), refresh=0))
    assert 'id="nav-timeline"' not in plain.get("/").text
    missing = plain.get("/timeline")
    assert missing.status_code == 404 and "--inventory" in missing.text
