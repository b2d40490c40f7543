"""The policy file endpoints: HuJSON as stored, JSON on request, ETags and If-Match."""

from __future__ import annotations

import json

import httpx

from tests.sim.control import ControlServer
from tests.sim.control.conftest import SERVERS_POLICY
from tests.sim.control.policy import DEFAULT_POLICY
from tests.sim.control.state import etag_of

HUJSON_WITH_COMMENTS = SERVERS_POLICY.replace("{\n", "{\n  /* keep me */ // and me\n", 1)


def test_get_returns_hujson_byte_for_byte_with_a_quoted_etag(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    """GET answers the stored text exactly, as application/hujson, with `ETag: "<hex>"`."""
    response = api.get("/tailnet/-/acl")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/hujson"
    assert response.content == SERVERS_POLICY.encode()
    assert response.headers["etag"] == f'"{etag_of(SERVERS_POLICY)}"'


def test_get_returns_json_when_asked(servers_policy: ControlServer, api: httpx.Client) -> None:
    """`Accept: application/json` gives plain JSON of the same policy and the same ETag."""
    response = api.get("/tailnet/-/acl", headers={"Accept": "application/json"})
    assert response.headers["content-type"] == "application/json"
    assert response.json()["tagOwners"]["tag:server"] == ["tag:tsops"]
    assert response.headers["etag"] == f'"{etag_of(SERVERS_POLICY)}"'


def test_tailnet_by_name_works_and_other_names_are_404(
    control: ControlServer, api: httpx.Client
) -> None:
    """The tailnet is `-` or its own name; anything else is not found."""
    assert api.get("/tailnet/example.com/acl").status_code == 200
    assert api.get("/tailnet/other.org/acl").status_code == 404


def test_comments_written_are_read_back_unchanged(
    control: ControlServer, api: httpx.Client
) -> None:
    """A POSTed HuJSON file keeps its comments byte for byte."""
    etag = api.get("/tailnet/-/acl").headers["etag"]
    written = api.post("/tailnet/-/acl", content=HUJSON_WITH_COMMENTS, headers={"If-Match": etag})
    assert written.status_code == 200
    assert written.headers["etag"] == f'"{etag_of(HUJSON_WITH_COMMENTS)}"'
    assert api.get("/tailnet/-/acl").text == HUJSON_WITH_COMMENTS
    assert control.policy().text == HUJSON_WITH_COMMENTS


def test_a_stale_etag_is_412_and_nothing_is_saved(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    """If-Match with an ETag read before someone else's write fails with 412."""
    stale = api.get("/tailnet/-/acl").headers["etag"]
    servers_policy.seed_policy(HUJSON_WITH_COMMENTS)
    before = servers_policy.policy_versions()
    response = api.post("/tailnet/-/acl", content=SERVERS_POLICY, headers={"If-Match": stale})
    assert response.status_code == 412
    assert response.json()["message"]
    assert servers_policy.policy_versions() == before


def test_if_match_must_be_quoted_exactly_once(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    """An unquoted or doubly quoted ETag does not match."""
    etag = etag_of(SERVERS_POLICY)
    for header in (etag, f'""{etag}""', f"'{etag}'"):
        response = api.post("/tailnet/-/acl", content=SERVERS_POLICY, headers={"If-Match": header})
        assert response.status_code == 412, header
    ok = api.post("/tailnet/-/acl", content=SERVERS_POLICY, headers={"If-Match": f'"{etag}"'})
    assert ok.status_code == 200


def test_ts_default_replaces_only_the_untouched_default(
    control: ControlServer, api: httpx.Client
) -> None:
    """`If-Match: "ts-default"` works once, on the default; after any write it is 412."""
    assert control.policy().text == DEFAULT_POLICY
    headers = {"If-Match": '"ts-default"'}
    assert api.post("/tailnet/-/acl", content=SERVERS_POLICY, headers=headers).status_code == 200
    again = api.post("/tailnet/-/acl", content=HUJSON_WITH_COMMENTS, headers=headers)
    assert again.status_code == 412
    assert control.policy().text == SERVERS_POLICY


def test_ts_default_fails_even_when_the_default_text_was_written_back(
    control: ControlServer, api: httpx.Client
) -> None:
    """A policy equal to the default but saved by someone is no longer the untouched default."""
    control.seed_policy(DEFAULT_POLICY)
    response = api.post(
        "/tailnet/-/acl", content=SERVERS_POLICY, headers={"If-Match": '"ts-default"'}
    )
    assert response.status_code == 412


def test_the_default_policy_etag_also_matches(control: ControlServer, api: httpx.Client) -> None:
    """The default's own ETag, as GET returns it, is a valid If-Match."""
    etag = api.get("/tailnet/-/acl").headers["etag"]
    response = api.post("/tailnet/-/acl", content=SERVERS_POLICY, headers={"If-Match": etag})
    assert response.status_code == 200


def test_without_if_match_the_write_is_unconditional(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    """Like the real API, a POST without If-Match overwrites whatever is there."""
    assert api.post("/tailnet/-/acl", content=HUJSON_WITH_COMMENTS).status_code == 200
    assert servers_policy.policy().text == HUJSON_WITH_COMMENTS


def test_an_invalid_policy_is_refused_with_400_and_nothing_is_saved(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    """A write that does not validate is 400 with a message; the stored policy stays."""
    bad = SERVERS_POLICY.replace('"tag:recorder"]', '"tag:recorder", "tag:other"]')
    before = servers_policy.policy_versions()
    response = api.post("/tailnet/-/acl", content=bad)
    assert response.status_code == 400
    assert "recorder" in response.json()["message"]
    assert servers_policy.policy_versions() == before


def test_failing_policy_tests_reject_the_write(
    servers_policy: ControlServer, api: httpx.Client
) -> None:
    """The policy's own `tests` run on every write; a failure is 400 with per-user data."""
    policy = json.loads(api.get("/tailnet/-/acl", headers={"Accept": "application/json"}).text)
    policy["tests"] = [{"src": "alice@example.com", "accept": ["tag:server:443"]}]
    response = api.post("/tailnet/-/acl", json=policy)
    assert response.status_code == 400
    assert response.json()["data"] == [
        {"user": "alice@example.com", "errors": ["alice@example.com cannot access tag:server:443"]}
    ]
    assert servers_policy.policy().text == SERVERS_POLICY


def test_validate_saves_nothing(servers_policy: ControlServer, api: httpx.Client) -> None:
    """A valid candidate gets `{}` from validate and is not stored."""
    response = api.post("/tailnet/-/acl/validate", content=HUJSON_WITH_COMMENTS)
    assert response.status_code == 200
    assert response.json() == {}
    assert servers_policy.policy().text == SERVERS_POLICY
