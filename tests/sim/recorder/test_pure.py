"""Pure parts: the .cast renderer, SSH rule matching, and the recorder's SigV4 signer."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.sim.recorder.cast import (
    OutputChunk,
    SourceNode,
    cast_header,
    render_cast,
    shell_output,
)
from tests.sim.recorder.conftest import ALICE, BOB, CI
from tests.sim.recorder.sshrules import (
    Target,
    UnsupportedSelector,
    evaluate,
    matching_rule,
    target_of,
)
from tests.sim.recorder.tsrecorder.storage import S3Credentials, region_of, sign_v4

STARTED = datetime.datetime(2026, 11, 25, 9, 30, 5, tzinfo=datetime.UTC)


def test_header_of_a_user_session_in_the_ssh_servers_key_order() -> None:
    header = cast_header(source=ALICE, ssh_user="alice", started=STARTED,
                         connection="ssh-conn-20261125T093005-0a1b2c3d4e")

    assert list(header) == ["version", "width", "height", "timestamp", "srcNode", "srcNodeID",
                            "srcNodeUserID", "srcNodeUser", "env", "sshUser", "localUser",
                            "connectionID"]
    assert header["timestamp"] == 1795599005
    assert header["srcNodeUser"] == "alice@example.com"
    assert header["env"] == {"TERM": "xterm-256color"}


def test_header_of_a_tagged_command_session() -> None:
    header = cast_header(source=CI, ssh_user="deploy", local_user="deploy", started=STARTED,
                         command="systemctl restart app", width=0, height=0)

    assert header["command"] == "systemctl restart app"
    assert header["srcNodeTags"] == ["tag:ci"]
    assert "srcNodeUserID" not in header
    assert str(header["connectionID"]).startswith("ssh-conn-20261125T093005-")


def test_a_source_is_tagged_or_owned() -> None:
    with pytest.raises(ValueError, match="either tagged or owned"):
        SourceNode("x.ts.net", "nXCNTRL", tags=("tag:a",), login="a@b.c", user_id=1)


def test_render_cast_encodes_like_go() -> None:
    header = {"version": 2, "srcNode": "a<b>&c"}
    data = render_cast(header, [OutputChunk(0.5, "é\u2028<"), OutputChunk(1.0, "x"),
                                OutputChunk(1e-7, "")])

    assert data == (
        b'{"version":2,"srcNode":"a\\u003cb\\u003e\\u0026c"}\n'
        b'[0.5,"o","\xc3\xa9\\u2028\\u003c"]\n[1,"o","x"]\n[1e-7,"o",""]\n'
    )


def test_render_cast_cut_off_mid_line() -> None:
    full = render_cast({"version": 2}, [OutputChunk(0.5, "hello")])

    cut = render_cast({"version": 2}, [OutputChunk(0.5, "hello")], cut_at=len(full) - 4)

    assert full.startswith(cut)
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.splitlines()[-1])


def test_shell_output_is_timed_output_only() -> None:
    chunks = shell_output("$ ", [("ls", "a\nb\n")])

    assert [c.text for c in chunks] == ["$ ", "l", "s", "\r\n", "a\r\nb\r\n", "$ "]
    assert [c.at for c in chunks] == sorted(c.at for c in chunks)


POLICY: dict[str, Any] = {
    "groups": {"group:ops": ["alice@example.com"]},
    "ssh": [
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"],
         "users": ["localpart:*@example.com"]},
        {"action": "accept", "src": ["group:ops"], "dst": ["tag:db"], "users": ["root"],
         "recorder": ["tag:rec"], "enforceRecorder": True},
        {"action": "check", "src": ["bob@example.com", "tag:ci"], "dst": ["tag:db"],
         "users": ["autogroup:nonroot"], "recorder": ["tag:rec2"]},
    ],
}
DB = Target(("tag:db",), None)


@pytest.mark.parametrize(
    ("source", "target", "user", "rule"),
    [
        (ALICE, Target((), "alice@example.com"), "alice", 0),  # own device, own local part
        (ALICE, Target((), "alice@example.com"), "root", None),
        (BOB, Target((), "alice@example.com"), "bob", None),  # not bob's device
        (ALICE, DB, "root", 1),
        (ALICE, DB, "postgres", None),  # group:ops only gets root
        (BOB, DB, "postgres", 2),
        (BOB, DB, "root", None),
        (CI, DB, "deploy", 2),
    ],
)
def test_matching_rule(source: SourceNode, target: Target, user: str, rule: int | None) -> None:
    found = matching_rule(POLICY, source, target, user)

    assert (found.index if found else None) == rule


def test_rule_fields() -> None:
    found = matching_rule(POLICY, ALICE, DB, "root")

    assert found is not None
    assert (found.recorder, found.enforce_recorder) == ("tag:rec", True)


def test_refusal_says_whether_only_the_user_failed() -> None:
    # The SSH server's two denials: "... as user X" when a rule covered source and node.
    assert evaluate(POLICY, ALICE, DB, "postgres") == (None, True)
    assert evaluate(POLICY, ALICE, Target(("tag:web",), None), "root") == (None, False)
    rule, _ = evaluate(POLICY, BOB, DB, "postgres")
    assert rule is not None and rule.index == 2


def test_tagged_devices_have_no_owner() -> None:
    assert target_of(["tag:db"], "tagged-devices") == DB
    assert target_of([], "alice@example.com") == Target((), "alice@example.com")


def test_unsupported_selector_raises() -> None:
    policy = {"ssh": [{"action": "accept", "src": ["autogroup:shared"], "dst": ["tag:db"],
                       "users": ["root"]}]}

    with pytest.raises(UnsupportedSelector, match="autogroup:shared"):
        matching_rule(policy, ALICE, DB, "root")


def test_region_follows_the_endpoint() -> None:
    assert region_of("s3.us-east-2.amazonaws.com") == "us-east-2"
    assert region_of("s3-eu-west-1.amazonaws.com") == "eu-west-1"
    assert region_of("10.213.0.1:5000") == "us-east-1"


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "body"),
    [
        ("GET", "/recordings", {"location": ""}, {}, b""),
        ("PUT", "/recordings/nABC123CNTRL/2026-11-25T09:30:05.000001Z.cast", {},
         {"Content-Type": "application/x-asciicast", "Content-MD5": "XrY7u+Ae7tCTyyK7j1rNww=="},
         b"hello world"),
    ],
)
def test_sigv4_matches_botocore(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
) -> None:
    host = "10.213.0.1:5000"
    payload = hashlib.sha256(body).hexdigest()
    ours = sign_v4(method=method, host=host, path=path, query=query, headers=headers,
                   payload_sha256=payload, region="us-east-1",
                   credentials=S3Credentials("AKIDEXAMPLE", "secret"), now=STARTED)

    # As a boto3 client builds it: the key URI-encoded in the URL.
    target = f"http://{host}{quote(path, safe='/~')}" + ("?location" if query else "")
    request = AWSRequest(method=method, url=target, data=body,
                         headers=headers | {"X-Amz-Content-SHA256": payload})
    with mock.patch("botocore.auth.get_current_datetime",
                    return_value=STARTED.replace(tzinfo=None)):
        S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), "s3", "us-east-1").add_auth(request)

    assert ours["Authorization"] == request.headers["Authorization"]
