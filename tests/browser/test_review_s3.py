"""The same review UI over S3: the corpus in a bucket of the lab's S3 server (moto over TLS,
no containers), served by `tsops recordings serve --from s3://...`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import player_state, screen_lines, serve, wait_for
from tests.browser.corpus import TRUNCATED_ID, upload, valid_recordings
from tests.lab.s3 import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.browser


def test_the_review_ui_over_s3(browser: Any, s3: S3Client, s3_server: S3Server) -> None:
    upload(s3, "review-recordings")
    environment = s3_server.operator_environment()
    for served in serve("--from", "s3://review-recordings", "--endpoint", s3_server.endpoint,
                        "--region", "us-east-1", environment=environment):
        browser.get(served.url)
        wait_for(browser, lambda b: "token=" not in b.current_url)
        listed = {row.get_attribute("data-id") for row in
                  browser.find_elements("css selector", "#recordings tbody tr.recording")}
        assert listed == {v.id for v in valid_recordings()} | {TRUNCATED_ID}
        assert len(browser.find_elements("css selector", "li.damaged-file")) == 3
        assert "s3://review-recordings" in browser.find_element("css selector", ".source").text

        browser.get(f"{served.base}/search?q=needle-8-3")
        hit = browser.find_element("css selector", "#hits li.hit a")
        hit.click()
        wait_for(browser, lambda b: "t=1.000" in b.current_url)
        wait_for(browser, lambda b: player_state(b) == "ready" and screen_lines(b))
        assert screen_lines(browser) == list(valid_recordings()[8].lines)

        recording = valid_recordings()[11]
        browser.get(f"{served.base}/r/{recording.id}?autoplay=1&speed=4")
        wait_for(browser, lambda b: player_state(b) == "ended")
        assert screen_lines(browser) == list(recording.lines)
