"""Auth keys through the API: create (secret shown once), list, get, revoke, tag rules."""

from __future__ import annotations

from typing import Any

import httpx

from tests.sim.control import ControlServer
from tests.sim.control.conftest import Register, client, oauth_token


def key_request(tags: list[str], **create: Any) -> dict[str, Any]:
    """Return a key creation body in the reference's shape."""
    capabilities = {"reusable": False, "ephemeral": False, "preauthorized": True, "tags": tags}
    capabilities.update(create)
    return {
        "capabilities": {"devices": {"create": capabilities}},
        "expirySeconds": 3600,
        "description": "tsops web1",
    }


def test_create_shows_the_secret_once(servers_policy: ControlServer, api: httpx.Client) -> None:
    """The create answer holds the key; list and get never do."""
    response = api.post("/tailnet/-/keys", json=key_request(["tag:server"]))
    assert response.status_code == 200
    created = response.json()
    assert created["key"].startswith(f"tskey-auth-{created['id']}-")
    assert created["description"] == "tsops web1"
    assert created["capabilities"]["devices"]["create"]["tags"] == ["tag:server"]
    assert {"created", "expires"} <= created.keys()
    listed = api.get("/tailnet/-/keys").json()["keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    shown = api.get(f"/tailnet/-/keys/{created['id']}").json()
    assert "key" not in shown
    assert created["key"] not in api.get("/tailnet/-/keys").text


def test_delete_revokes(
    servers_policy: ControlServer, api: httpx.Client, register: Register
) -> None:
    """A revoked key shows as revoked and registers nothing."""
    created = api.post("/tailnet/-/keys", json=key_request(["tag:server"])).json()
    assert api.delete(f"/tailnet/-/keys/{created['id']}").status_code == 200
    shown = api.get(f"/tailnet/-/keys/{created['id']}").json()
    assert shown["revoked"]
    assert shown["invalid"] is True
    assert register(created["key"], advertiseTags=["tag:server"]).status_code == 401
    assert servers_policy.auth_keys()[0].revoked is not None


def test_unknown_key_is_404(control: ControlServer, api: httpx.Client) -> None:
    """Getting or revoking a key that does not exist is 404."""
    assert api.get("/tailnet/-/keys/knopeCNTRL").status_code == 404
    assert api.delete("/tailnet/-/keys/knopeCNTRL").status_code == 404


def test_undeclared_tags_are_refused(servers_policy: ControlServer, api: httpx.Client) -> None:
    """A tagged key's tags must be declared in tagOwners."""
    response = api.post("/tailnet/-/keys", json=key_request(["tag:server", "tag:ghost"]))
    assert response.status_code == 400
    assert response.json()["message"] == ("requested tags [tag:ghost] are invalid or not permitted")
    assert servers_policy.auth_keys() == []


def test_bad_bodies_are_400(servers_policy: ControlServer, api: httpx.Client) -> None:
    """Wrong types, a missing capabilities object and out-of-range expiry are refused."""
    assert api.post("/tailnet/-/keys", json={"expirySeconds": 60}).status_code == 400
    assert (
        api.post("/tailnet/-/keys", json=key_request(["tag:server"], reusable="yes")).status_code
        == 400
    )
    body = key_request(["tag:server"])
    body["expirySeconds"] = 91 * 24 * 3600
    assert api.post("/tailnet/-/keys", json=body).status_code == 400
    assert api.post("/tailnet/-/keys", content=b"not json").status_code == 400


def test_oauth_keys_carry_only_tags_the_clients_tags_own(servers_policy: ControlServer) -> None:
    """An OAuth client tagged tag:tsops may make keys for tags it owns, or its own tag, only."""
    token = oauth_token(servers_policy, ["auth_keys"], ["tag:tsops"])
    with client(servers_policy, token) as http:
        for tags in (["tag:server"], ["tag:recorder"], ["tag:tsops"]):
            assert http.post("/tailnet/-/keys", json=key_request(tags)).status_code == 200, tags
        refused = http.post("/tailnet/-/keys", json=key_request(["tag:server", "tag:other"]))
        assert refused.status_code == 400
        assert "tag:other" in refused.json()["message"]
        untagged = http.post("/tailnet/-/keys", json=key_request([]))
        assert untagged.status_code == 400


def test_expired_key_is_listed_invalid(servers_policy: ControlServer, api: httpx.Client) -> None:
    """After expirySeconds the key is invalid."""
    created = api.post("/tailnet/-/keys", json=key_request(["tag:server"])).json()
    servers_policy.advance_clock(3600)
    assert api.get(f"/tailnet/-/keys/{created['id']}").json()["invalid"] is True
