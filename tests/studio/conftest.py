"""Fixtures of the Studio browser tests: Debian's headless Chromium driven by Selenium through Debian's chromedriver.

Both binaries come from ``scripts/install_tools.sh`` (packages ``chromium`` and ``chromium-driver``). Selenium is given
their paths explicitly, so Selenium Manager never runs and nothing is downloaded: the tests work with no network.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW_SIZE = (1280, 900)
ARTIFACTS_ENV = "LIKENESS_TEST_ARTIFACTS"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@pytest.fixture(scope="session")
def browser_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of this session's browser artifacts (screenshots, the chromedriver log)."""
    return tmp_path_factory.mktemp("studio-browser")


@pytest.fixture(scope="session")
def browser(browser_artifacts: Path) -> Iterator[WebDriver]:
    """A headless Chromium WebDriver shared by the session (quit at the end).

    Console messages are captured (``goog:loggingPrefs`` browser=ALL): read them with
    ``browser_helpers.console_errors(browser)``. State (cookies, storage) carries over between tests; a test that
    needs a clean slate calls ``browser.delete_all_cookies()`` or opens its own origin.
    """
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not _executable(path)]
    if missing:
        pytest.skip(
            f"chromium / chromedriver not installed: run scripts/install_tools.sh (missing {', '.join(missing)})"
        )
    pytest.importorskip("selenium", reason="selenium not installed: pip install -e '.[dev]'")

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",  # containers have a small /dev/shm
        "--disable-gpu",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        "--force-device-scale-factor=1",  # screenshots are exactly WINDOW_SIZE
        # Keep Chromium itself off the network (updates, sync, field trials): the tests only talk to 127.0.0.1.
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-extensions",
        "--metrics-recording-only",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(browser_artifacts / "chromedriver.log"))

    # With the driver path given, Selenium skips Selenium Manager (which could try to download a driver or browser);
    # make any regression fail loudly instead of reaching for the network.
    refuse = AssertionError("Selenium Manager was invoked; the browser fixture must never download anything")
    with mock.patch.object(SeleniumManager, "binary_paths", side_effect=refuse):
        driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shot(browser: WebDriver, browser_artifacts: Path, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """`shot(name)`: saves a PNG screenshot of the browser window and returns its path.

    Files go to the session's artifact folder as ``<test>-<name>.png``, and are copied to ``$LIKENESS_TEST_ARTIFACTS``
    when that is set (CI uploads it).
    """
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(name: str) -> Path:
        path = browser_artifacts / f"{test}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        if not browser.save_screenshot(str(path)):
            raise AssertionError(f"screenshot {path} could not be written")
        if target := os.environ.get(ARTIFACTS_ENV):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(path, os.path.join(target, path.name))
        return path

    return take
