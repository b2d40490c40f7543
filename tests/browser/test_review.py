"""`tsops recordings serve` in headless Chromium, over a directory of recordings: the list and
its flags, a filter, search that jumps to the moment, the player to its end, a hostile header
shown inert, and requests without the token refused."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.browser.conftest import Served, player_state, screen_lines, serve, wait_for
from tests.browser.corpus import (
    HOSTILE_COMMAND,
    HOSTILE_ID,
    MALFORMED,
    TRUNCATED_ID,
    valid_recordings,
    write_directory,
)
from tsops.recordings.inert import visible

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The corpus in a directory, served."""
    root = write_directory(tmp_path_factory.mktemp("recordings"))
    yield from serve("--from", str(root))


def signed_in(browser: Any, served: Served, path: str = "/") -> None:
    """Open the printed address once (the token becomes a cookie), then `path`."""
    browser.get(served.url)
    wait_for(browser, lambda b: b.current_url.startswith(served.base) and "token=" not in
             b.current_url)
    if path != "/":
        browser.get(served.base + path)


def rows(browser: Any) -> list[Any]:
    """The list's recording rows."""
    return list(browser.find_elements("css selector", "#recordings tbody tr.recording"))


def test_list_shows_every_recording_and_flags_the_damaged(browser: Any, served: Served) -> None:
    signed_in(browser, served)
    listed = {row.get_attribute("data-id") for row in rows(browser)}
    assert listed == {v.id for v in valid_recordings()} | {TRUNCATED_ID}
    flagged = {row.get_attribute("data-id"): row.find_element("css selector", ".flag").text
               for row in browser.find_elements("css selector", "tr.recording.flagged")}
    assert flagged == {TRUNCATED_ID: "truncated"}
    damaged = {item.get_attribute("data-key"): item.find_element("css selector", ".flag").text
               for item in browser.find_elements("css selector", "li.damaged-file")}
    assert damaged == {f"{MALFORMED_ID}.cast": kind for MALFORMED_ID, kind in zip(
        MALFORMED, ("bad-header", "empty", "asciicast-v1"), strict=True)}
    assert "31 recording(s)" in browser.find_element("id", "summary").text


def test_a_filter_narrows_the_list_and_pages_split_it(browser: Any, served: Served) -> None:
    signed_in(browser, served)
    field = browser.find_element("name", "ssh_user")
    field.clear()
    field.send_keys("bob")
    browser.find_element("id", "apply").click()
    wait_for(browser, lambda b: "ssh_user=bob" in b.current_url)
    bobs = {v.id for v in valid_recordings() if v.ssh_user == "bob"} | {TRUNCATED_ID}
    assert {row.get_attribute("data-id") for row in rows(browser)} == bobs
    assert f"{len(bobs)} recording(s) match of 31" in browser.find_element("id", "summary").text
    browser.get(served.base + "/?per_page=10&sort=start&order=asc")
    first = [row.get_attribute("data-id") for row in rows(browser)]
    assert len(first) == 10
    browser.find_element("css selector", "a[rel=next]").click()
    wait_for(browser, lambda b: "page=2" in b.current_url)
    second = [row.get_attribute("data-id") for row in rows(browser)]
    assert len(second) == 10 and not set(first) & set(second)


def test_search_finds_a_line_and_the_player_opens_at_it(browser: Any, served: Served) -> None:
    signed_in(browser, served, "/search")
    browser.find_element("id", "q").send_keys("needle-17-2")
    browser.find_element("id", "find").click()
    wait_for(browser, lambda b: "q=needle-17-2" in b.current_url)
    hits = browser.find_elements("css selector", "#hits li.hit")
    assert len(hits) == 1
    assert hits[0].find_element("css selector", "pre.line").text == \
        "session 17 line 2 needle-17-2"
    hits[0].find_element("css selector", "a").click()
    wait_for(browser, lambda b: "/r/" in b.current_url and "t=0.750" in b.current_url)
    wait_for(browser, lambda b: player_state(b) == "ready" and screen_lines(b))
    recording = valid_recordings()[17]
    assert screen_lines(browser) == list(recording.lines[:3])  # up to the line found, no more


def test_the_player_plays_a_recording_to_its_end(browser: Any, served: Served) -> None:
    recording = valid_recordings()[4]
    signed_in(browser, served, f"/r/{recording.id}?autoplay=1&speed=4")
    wait_for(browser, lambda b: player_state(b) == "ended")
    assert screen_lines(browser) == list(recording.lines)
    metadata = browser.find_element("id", "metadata").text
    assert recording.ssh_user in metadata and "xterm-256color" in metadata
    download = browser.find_element("id", "download").get_attribute("href")
    assert unquote(download) == f"{served.base}/cast/{recording.id}.cast"


def test_a_truncated_recording_plays_up_to_where_it_was_cut(browser: Any,
                                                           served: Served) -> None:
    signed_in(browser, served, f"/r/{TRUNCATED_ID}?autoplay=1&speed=4")
    assert "truncated" in browser.find_element("id", "problem").text
    wait_for(browser, lambda b: player_state(b) == "ended")
    assert screen_lines(browser) == ["cut short"]


def test_a_hostile_header_and_output_are_shown_inert(browser: Any, served: Served) -> None:
    signed_in(browser, served)
    row = browser.find_element("css selector", f'tr.recording[data-id="{HOSTILE_ID}"]')
    assert row.find_element("css selector", "td.command").text == visible(HOSTILE_COMMAND)
    assert browser.execute_script("return window.pwned") is None
    assert not browser.find_elements("css selector", "#recordings img, #recordings script")
    browser.get(f"{served.base}/r/{HOSTILE_ID}?autoplay=1&speed=4")
    wait_for(browser, lambda b: player_state(b) == "ended")
    assert browser.find_element("id", "command").text == visible(HOSTILE_COMMAND)
    assert screen_lines(browser) == ["<b>not bold</b> <script>window.pwned=3</script>"]
    assert browser.execute_script("return window.pwned") is None
    scripts = browser.execute_script(
        "return Array.from(document.scripts, s => s.getAttribute('src'))")
    assert scripts == ["/static/vendor/asciinema-player.min.js", "/static/review.js"]
    assert "owned" not in browser.title
    violations = [entry for entry in browser.get_log("browser")
                  if "Content Security Policy" in entry["message"]]
    assert violations == []  # the player runs under the strict policy as it is


def status_of(url: str, cookie: str = "") -> tuple[int, str]:
    """The status and body of a GET, without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_requests_without_the_token_are_refused(browser: Any, served: Served,
                                                tmp_path: Path) -> None:
    recording = valid_recordings()[0]
    for path in ("/", f"/r/{recording.id}", f"/cast/{recording.id}.cast", "/search?q=x",
                 "/static/review.js"):
        status, body = status_of(served.base + path)
        assert status == 401 and "Access token needed" in body, path
    status, body = status_of(served.base + "/?token=not-the-token")
    assert status == 403 and "Wrong access token" in body
    assert status_of(served.base + "/", cookie=f"tsops_review_x={served.token}")[0] == 401
    browser.delete_all_cookies()
    browser.get(served.base + "/")
    assert "Access token needed" in browser.find_element("tag name", "h1").text
    assert not browser.find_elements("id", "recordings")
