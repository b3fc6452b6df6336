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

import pytest
from chromium import missing_binaries, start_chromium

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ARTIFACTS_ENV = "LIKENESS_TEST_ARTIFACTS"


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
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"chromium / chromedriver not installed: run scripts/install_tools.sh (missing {', '.join(missing)})"
        )
    pytest.importorskip("selenium", reason="selenium not installed: pip install -e '.[dev]'")

    driver = start_chromium(browser_artifacts / "chromedriver.log", capture_console=True)
    try:
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
