"""`recordings serve` over HTTP without a browser: the token gate, the headers, read-only
methods, bad input (traversal, malformed recordings, a failing source, bad filters) and the
options that would expose it."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.corpus import HOSTILE_ID, MALFORMED, write_directory
from tsops.recordings.store import LocalStore, ObjectInfo, StoreError
from tsops.review.app import Review, create_app
from tsops.review.query import Query, QueryError
from tsops.review.security import CONTENT_SECURITY_POLICY

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "t0ken-for-tests"
EVERYWHERE = "0.0.0.0"  # noqa: S104 - refused before anything is bound
VALID = "nodeA1CNTRL/2026-11-18T00:00:00Z-s00"


class FailingStore:
    """A store whose source fails on demand (an S3 outage), else a local directory."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalStore(root)
        self.description = "s3://outage-test"
        self.failing = False

    def _check(self) -> None:
        if self.failing:
            raise StoreError("cannot list s3://outage-test: Could not connect to the endpoint")

    def list(self) -> Iterator[ObjectInfo]:
        self._check()
        return self.inner.list()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        self._check()
        return self.inner.read_range(key, start, length)

    def read_tail(self, key: str, length: int) -> bytes:
        self._check()
        return self.inner.read_tail(key, length)

    def chunks(self, key: str) -> Iterator[bytes]:
        self._check()
        return self.inner.chunks(key)

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read


@pytest.fixture
def store(tmp_path: Path) -> FailingStore:
    return FailingStore(write_directory(tmp_path / "recordings"))


@pytest.fixture
def client(store: FailingStore) -> TestClient:
    """A client already past the gate (the cookie set by the token)."""
    app = create_app(Review.of(store, refresh=0), TOKEN, cookie="tsops_review_1")
    test_client = TestClient(app, follow_redirects=False)
    assert test_client.get(f"/?token={TOKEN}").status_code == 303
    return test_client


def fresh_client(store: FailingStore) -> TestClient:
    return TestClient(create_app(Review.of(store), TOKEN, cookie="tsops_review_1"),
                      follow_redirects=False)


def test_the_token_once_in_the_url_becomes_a_strict_cookie(store: FailingStore) -> None:
    test_client = fresh_client(store)
    refused = test_client.get("/")
    assert refused.status_code == 401 and "Access token needed" in refused.text
    wrong = test_client.get("/?token=wrong")
    assert wrong.status_code == 403 and "Wrong access token" in wrong.text
    admitted = test_client.get(f"/search?q=x&token={TOKEN}")
    assert admitted.status_code == 303
    assert admitted.headers["location"] == "/search?q=x"  # the token leaves the address
    cookie = admitted.headers["set-cookie"]
    assert cookie.startswith(f"tsops_review_1={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert test_client.get("/").status_code == 200
    location = test_client.get("//evil.example/?token=" + TOKEN).headers["location"]
    assert location.startswith("/") and not location.startswith("//")  # never another host


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/", f"/r/{VALID}", f"/cast/{VALID}.cast", "/r/nope/nothing",
                 "/static/review.js"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY


def test_the_cast_is_an_attachment_of_a_non_html_type(client: TestClient,
                                                      store: FailingStore) -> None:
    response = client.get(f"/cast/{VALID}.cast")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-asciicast"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.content == (store.inner.root / f"{VALID}.cast").read_bytes()


def test_only_get_is_answered(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = client.request(method, "/")
        assert response.status_code == 405, method
        assert "Read-only" in response.text


@pytest.mark.parametrize("path", [
    "/r/..%2F..%2Fetc%2Fpasswd", "/r/../../etc/passwd", "/r/%2E%2E/passwd",
    "/cast/..%2F..%2Fetc%2Fpasswd.cast", "/cast/nodeA1CNTRL/..%2F..%2F..%2Fetc%2Fhosts",
    "/r/nodeA1CNTRL/a%5C..%5Cb", "/static/..%2F..%2Fapp.py", "/r/a/b/c",
])
def test_a_path_outside_the_source_is_refused(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text and "import" not in response.text


def test_a_malformed_recording_is_a_page_not_a_crash(client: TestClient) -> None:
    for recording_id in MALFORMED:
        response = client.get(f"/r/{recording_id}")
        assert response.status_code == 422 and "Damaged recording" in response.text
    assert client.get("/").status_code == 200


def test_a_source_outage_is_a_503_page_and_the_server_recovers(client: TestClient,
                                                               store: FailingStore) -> None:
    store.failing = True
    for path in ("/?refresh=1", f"/r/{VALID}", "/search?q=needle", f"/cast/{VALID}.cast"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "The source cannot be read" in response.text
        assert "Could not connect to the endpoint" in response.text
    store.failing = False
    assert client.get("/?refresh=1").status_code == 200
    assert client.get(f"/r/{VALID}").status_code == 200


def test_bad_filters_name_the_field(client: TestClient) -> None:
    for query, field in (("since=yesterdayish", "since"), ("sort=colour", "sort"),
                         ("page=0", "page"), ("per_page=x", "per_page")):
        response = client.get(f"/?{query}")
        assert response.status_code == 400 and field in response.text, query
    bad = client.get("/search?q=(unclosed")
    assert bad.status_code == 400 and "bad regular expression" in bad.text


def test_hostile_header_fields_are_escaped(client: TestClient) -> None:
    for path in ("/", f"/r/{HOSTILE_ID}"):
        text = client.get(path).text
        assert "<script>window.pwned" not in text and "<img src=x" not in text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in text
        assert "\x1b" not in text and "\u202e" not in text


def test_search_hits_link_to_their_moment(client: TestClient) -> None:
    text = client.get("/search?q=needle-3-1").text
    assert 'href="/r/nodeB2CNTRL/2026-11-18T03%3A00%3A00Z-s03?t=0.500"' in text


def test_query_filters() -> None:
    assert Query.parse({"ssh_user": "BOB"}).ssh_user == "BOB"
    with pytest.raises(QueryError, match="order"):
        Query.parse({"order": "sideways"})
    assert Query(server="x", page=2).params(page=3) == {"server": "x", "page": "3"}


def run_serve(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tsops", "recordings", "serve", *arguments],
                          capture_output=True, text=True, check=False, timeout=120)


def test_exposing_it_needs_tls(tmp_path: Path) -> None:
    result = run_serve("--from", str(tmp_path), "--listen", EVERYWHERE)
    assert result.returncode == 2
    assert "--listen 0.0.0.0" in result.stderr and "--tls-cert" in result.stderr
    assert "Traceback" not in result.stderr
    half = run_serve("--from", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem"))
    assert half.returncode == 2 and "go together" in half.stderr
    missing = run_serve("--from", str(tmp_path), "--listen", EVERYWHERE, "--tls-cert",
                        str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem"))
    assert missing.returncode == 2 and "c.pem: no such file" in missing.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_serve("--from", str(tmp_path), "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_manifest_needs_its_public_key(tmp_path: Path) -> None:
    result = run_serve("--from", str(tmp_path), "--manifest", str(tmp_path / "m.json"))
    assert result.returncode == 2 and "--public-key" in result.stderr


def test_seal_status_from_a_signed_manifest(tmp_path: Path, store: FailingStore) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tsops.recordings.integrity import digest_all, public_key_text, seal, write_manifest
    from tsops.review.seal import Seal

    key = Ed25519PrivateKey.generate()
    digests, _ = digest_all(store.inner)
    manifest = tmp_path / "manifest.json"
    write_manifest(manifest, seal(digests, store.description, key), force=False)
    (store.inner.root / f"{VALID}.cast").write_bytes(
        (store.inner.root / f"{VALID}.cast").read_bytes().replace(b"needle", b"NEEDLE"))
    sealed = Seal.load(manifest, public_key_text(key.public_key()))
    app = create_app(Review.of(store, seal=sealed), TOKEN)
    test_client = TestClient(app)
    test_client.get(f"/?token={TOKEN}")
    page: Any = test_client.get(f"/r/{VALID}").text
    assert "<strong>altered</strong>" in page  # same size, other bytes: the hash tells
    other = test_client.get("/r/nodeB2CNTRL/2026-11-18T01:00:00Z-s01").text
    assert "<strong>intact</strong>" in other
    with pytest.raises(Exception, match="another key"):
        Seal.load(manifest, public_key_text(Ed25519PrivateKey.generate().public_key()))


def test_help_does_not_import_the_web_stack() -> None:
    code = ("import sys, runpy\nsys.argv = ['tsops', 'recordings', 'serve', '--help']\n"
            "try:\n    runpy.run_module('tsops', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('starlette', 'uvicorn', 'anyio', 'jinja2')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.splitlines()[-1] == "[]"


def test_the_index_reads_only_new_or_changed_files(store: FailingStore) -> None:
    from tsops.review.index import Index

    now = [0.0]
    index = Index(store, refresh=10, clock=lambda: now[0])
    first = index.snapshot()
    assert len(first.recordings) == 31 and len(first.damaged) == 3
    read = store.bytes_read
    assert index.snapshot() is first  # within the refresh: nothing listed, nothing read
    (store.inner.root / "nodeA1CNTRL" / "new.cast").write_bytes(
        (store.inner.root / f"{VALID}.cast").read_bytes())
    second = index.snapshot(fresh=True)
    assert len(second.recordings) == 32
    assert store.bytes_read - read == (store.inner.root / f"{VALID}.cast").stat().st_size
    assert second.recording("nodeA1CNTRL/new.cast") is not None


def test_the_player_gets_complete_event_lines_only() -> None:
    from tsops.review.app import playable

    original = (b'{"version": 2}\n[0.1, "o", "a"]\nnot an event\n[0.2, "o", "b"]\n'
                b'[0.3, "o", "cut')
    for size in (1, 5, 1000):  # however the source cuts its chunks
        chunks = iter([original[i:i + size] for i in range(0, len(original), size)])
        assert b"".join(playable(chunks)) == \
            b'{"version": 2}\n[0.1, "o", "a"]\n[0.2, "o", "b"]\n'
    assert b"".join(playable(iter([b'{"version": 2}']))) == b'{"version": 2}\n'


def test_the_download_is_every_byte_of_a_damaged_file(client: TestClient,
                                                      store: FailingStore) -> None:
    from tests.browser.corpus import TRUNCATED_ID

    original = (store.inner.root / f"{TRUNCATED_ID}.cast").read_bytes()
    assert client.get(f"/cast/{TRUNCATED_ID}.cast").content == original
    played = client.get(f"/play/{TRUNCATED_ID}.cast")
    assert played.headers["content-type"] == "application/x-asciicast"
    assert played.content == original[:original.rfind(b"\n") + 1]


class TwoRecorders(FailingStore):
    """Recordings read from recorder hosts: each names its recorder, and the listing left out a
    hostile name on one recorder and the whole of another (unreachable)."""

    def list(self) -> Iterator[ObjectInfo]:
        from dataclasses import replace

        return iter([replace(info, recorder="rec1") for info in self.inner.list()])

    def unread(self) -> tuple[Any, ...]:
        from tsops.recordings.store import Unread

        return (Unread("nX/evil\n\x1b[2J<b>x</b>.cast", "bad-name", "a control character",
                       "rec1"),
                Unread("", "unreachable", "connection refused", "rec2"))


def test_recorders_are_named_and_what_they_left_out_is_flagged(tmp_path: Path) -> None:
    store = TwoRecorders(write_directory(tmp_path / "recordings"))
    client = TestClient(create_app(Review.of(store, refresh=0), TOKEN, cookie="tsops_review_1"),
                        follow_redirects=False)
    assert client.get(f"/?token={TOKEN}").status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    assert "<th>Recorder</th>" in page.text
    assert '<td class="recorder">rec1</td>' in page.text
    assert 'data-recorder="rec2">recorder rec2 <span class="flag">unreachable</span>' in page.text
    assert "<b>x</b>" not in page.text and "\x1b" not in page.text  # the hostile name is inert
    assert 'href="/r/nX/evil' not in page.text  # a name no recording may have is not a link
    shown = client.get(f"/r/{VALID}")
    assert shown.status_code == 200 and '<dd id="recorder">rec1</dd>' in shown.text


def test_a_source_of_one_place_has_no_recorder_column(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<th>Recorder</th>" not in page.text
