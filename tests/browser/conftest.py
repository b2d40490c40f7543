"""Headless Chromium (Debian's package, driven through its own chromedriver: nothing is
downloaded) and a `tsops recordings serve` started as an operator would.

Without Chromium the browser tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import in_ci

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
URL_RE = re.compile(r"(https?://\S+)/\?token=(\S+)")


def _missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what}; CI must run the browser tests (make setup installs chromium and "
                    "chromium-driver)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session; each test starts on a blank page."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            _missing(f"{path} is not installed")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Served:
    """A running `tsops recordings serve`: its base URL and the address with the token."""

    base: str
    token: str
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        """The address printed at start (the token in it)."""
        return f"{self.base}/?token={self.token}"


def serve(*arguments: str, environment: dict[str, str] | None = None) -> Iterator[Served]:
    """Start `tsops recordings serve ARGUMENTS --port 0`, wait for its address, stop it after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tsops", "recordings", "serve", "--port", "0", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(environment or {})}, start_new_session=True)
    try:
        assert process.stdout is not None
        printed = []
        for line in process.stdout:
            printed.append(line)
            found = URL_RE.search(line)
            if found:
                break
        else:
            raise AssertionError(f"serve printed no address: {''.join(printed)}")
        yield Served(found.group(1), found.group(2), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(browser: Any, condition: Any, timeout: float = 120) -> Any:
    """Wait until `condition(browser)` is truthy (a hang guard only, never a timed claim)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)


def player_state(browser: Any) -> str:
    """The player page's state: loading, ready, playing, paused or ended."""
    return str(browser.find_element("id", "player").get_attribute("data-state"))


def screen_lines(browser: Any) -> list[str]:
    """The text of the player's terminal, one string per row, trailing blanks removed."""
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#player .ap-line'), e => e.textContent)")
    lines = [str(row).rstrip() for row in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines
