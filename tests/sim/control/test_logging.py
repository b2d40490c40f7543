"""The logging API: audit events for every mutating call, the window, log streams' secrets."""

from __future__ import annotations

import datetime
from typing import Any

import httpx

from tests.sim.control import ControlServer
from tests.sim.control.conftest import SERVERS_POLICY, Register, client, oauth_token

WIDE = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
SPLUNK = {"destinationType": "splunk", "url": "https://siem.example/services/collector",
          "token": "splunk-hec-value"}


def events(http: httpx.Client) -> list[dict[str, Any]]:
    response = http.get("/tailnet/-/logging/configuration", params=WIDE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"version", "tailnetId", "logs"}
    return sorted(body["logs"], key=lambda e: str(e["eventTime"]))


def test_every_mutating_call_is_an_audit_event_with_its_actor(
    servers_policy: ControlServer, register: Register
) -> None:
    control = servers_policy
    bob = control.create_api_token(user="bob@example.com")
    with client(control, bob) as http:
        policy = http.get("/tailnet/-/acl")
        assert http.post("/tailnet/-/acl", content=SERVERS_POLICY + "\n",
                         headers={"If-Match": policy.headers["ETag"]}).status_code == 200
        key = http.post("/tailnet/-/keys", json={"capabilities": {"devices": {"create": {
            "tags": ["tag:server"]}}}}).json()
        assert register(key["key"], advertiseTags=["tag:server"]).status_code == 200
        device = http.get("/tailnet/-/devices").json()["devices"][0]
        assert http.post(f"/device/{device['id']}/tags",
                         json={"tags": ["tag:server", "tag:recorder"]}).status_code == 200
        assert http.delete(f"/tailnet/-/keys/{key['id']}").status_code == 200
        assert http.delete(f"/device/{device['id']}").status_code == 200
        found = events(http)
    kinds = [(e["action"], e["target"]["type"], e["target"].get("property"))
             for e in found]
    assert kinds == [("UPDATE", "TAILNET", "ACL"), ("CREATE", "AUTH_KEY", None),
                     ("CREATE", "NODE", None), ("UPDATE", "NODE", "TAGS"),
                     ("DELETE", "AUTH_KEY", None), ("DELETE", "NODE", None)]
    assert {e["actor"]["loginName"] for e in found} == {"bob@example.com"}
    assert found[0]["actor"] == {"id": "1001", "type": "USER", "loginName": "bob@example.com",
                                 "displayName": "Bob"}
    assert (found[3]["old"], found[3]["new"]) == (["tag:server"], ["tag:server", "tag:recorder"])
    assert {"eventGroupID", "origin", "type", "eventTime"} <= set(found[0])
    # A read changes nothing and is not logged.
    assert len(control.logging.events()) == 6


def test_an_oauth_client_is_the_actor_of_its_calls(servers_policy: ControlServer) -> None:
    token = oauth_token(servers_policy, ["auth_keys", "logs:configuration:read"], ["tag:tsops"])
    with client(servers_policy, token) as http:
        assert http.post("/tailnet/-/keys", json={"capabilities": {"devices": {"create": {
            "tags": ["tag:server"]}}}}).status_code == 200
        [event] = events(http)
    assert event["actor"]["type"] == "OAUTH_CLIENT"


def test_the_window_is_required_and_ordered(control: ControlServer, api: httpx.Client) -> None:
    path = "/tailnet/-/logging/configuration"
    assert api.get(path).status_code == 400
    assert api.get(path, params={"start": WIDE["start"]}).status_code == 400
    assert api.get(path, params={"start": "yesterday", "end": WIDE["end"]}).status_code == 400
    backwards = api.get(path, params={"start": WIDE["end"], "end": WIDE["start"]})
    assert backwards.status_code == 400
    assert "end" in backwards.json()["message"]
    api.post("/tailnet/-/acl", content=SERVERS_POLICY)
    now = datetime.datetime.now(datetime.UTC)
    later = {"start": (now + datetime.timedelta(hours=1)).isoformat(),
             "end": (now + datetime.timedelta(hours=2)).isoformat()}
    assert api.get(path, params=later).json()["logs"] == []
    assert len(api.get(path, params=WIDE).json()["logs"]) == 1


def test_without_the_logs_scope_403(control: ControlServer) -> None:
    with client(control, control.create_api_token(["policy_file", "devices:core"])) as http:
        assert http.get("/tailnet/-/logging/configuration", params=WIDE).status_code == 403
        assert http.get("/tailnet/-/logging/configuration/stream").status_code == 403
    with client(control, control.create_api_token(["logs:configuration:read"])) as http:
        assert http.get("/tailnet/-/logging/configuration", params=WIDE).status_code == 200
        assert http.put("/tailnet/-/logging/configuration/stream", json=SPLUNK).status_code == 403


def test_a_stream_reads_back_without_its_secret(control: ControlServer,
                                                api: httpx.Client) -> None:
    path = "/tailnet/-/logging/configuration/stream"
    assert api.get(path).status_code == 404
    assert api.get(path + "/status").status_code == 404
    assert api.put(path, json=SPLUNK).status_code == 200
    shown = api.get(path).json()
    assert shown == {"logType": "configuration", "destinationType": "splunk",
                     "url": SPLUNK["url"], "compressionFormat": "none",
                     "uploadPeriodMinutes": 0}
    stored = control.logging.stream("configuration")
    assert stored is not None and stored["token"] == SPLUNK["token"]
    status = api.get(path + "/status").json()
    assert status["lastError"] == "" and "numEntriesSent" in status
    control.logging.set_stream_error("configuration", "401 from the collector")
    assert api.get(path + "/status").json()["lastError"] == "401 from the collector"
    [event] = [e for e in events(api) if e["target"].get("property") == "LOG_STREAMING"]
    assert "splunk-hec-value" not in str(event)
    assert api.delete(path).status_code == 200
    assert api.delete(path).status_code == 404


def test_stream_configurations_are_checked(api: httpx.Client) -> None:
    path = "/tailnet/-/logging/configuration/stream"
    bad = [
        {**SPLUNK, "destinationType": "syslog"},
        {k: v for k, v in SPLUNK.items() if k != "token"},
        {**SPLUNK, "url": "ftp://x"},
        {**SPLUNK, "colour": "red"},
        {"destinationType": "s3", "s3Bucket": "b", "s3Region": "eu-west-1",
         "s3AuthenticationType": "accesskey", "s3AccessKeyId": "AKIA0"},
        {"destinationType": "s3", "s3Bucket": "b", "s3Region": "eu-west-1",
         "s3AuthenticationType": "rolearn", "s3RoleArn": "arn:aws:iam::1:role/r"},
        {**SPLUNK, "compressionFormat": "lz4"},
    ]
    for body in bad:
        assert api.put(path, json=body).status_code == 400, body
    assert api.put("/tailnet/-/logging/dns/stream", json=SPLUNK).status_code == 400
    s3 = {"destinationType": "s3", "s3Bucket": "b", "s3Region": "eu-west-1",
          "s3AuthenticationType": "rolearn", "s3RoleArn": "arn:aws:iam::1:role/r",
          "s3ExternalId": "ext-1"}
    assert api.put("/tailnet/-/logging/network/stream", json=s3).status_code == 200
    assert api.get("/tailnet/-/logging/network/stream").json()["s3RoleArn"] == s3["s3RoleArn"]
