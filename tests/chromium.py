"""Debian's headless Chromium through Debian's chromedriver, for the Studio's browser tests and benchmark.

The driver's path is given, so Selenium never runs Selenium Manager (which could try to download a driver or a
browser); it is made to fail loudly if it ever would. Chromium itself is kept off the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW_SIZE = (1280, 900)

_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-dev-shm-usage",  # containers have a small /dev/shm
    "--disable-gpu",
    f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
    "--force-device-scale-factor=1",  # screenshots are exactly WINDOW_SIZE
    # Keep Chromium itself off the network (updates, sync, field trials): only 127.0.0.1 is talked to.
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--metrics-recording-only",
    "--lang=en-US",
)


def missing_binaries() -> list[str]:
    """The Debian binaries that are not installed (empty when Chromium can run)."""
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(path) and os.access(path, os.X_OK))]


def start_chromium(log_path: Path, *, capture_console: bool = False, page_load_timeout: float = 30.0):
    """A new headless Chromium WebDriver (fresh temporary profile); chromedriver logs to `log_path`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    options = Options()
    options.binary_location = CHROMIUM
    for argument in _ARGUMENTS:
        options.add_argument(argument)
    if capture_console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log_path))
    refuse = AssertionError("Selenium Manager was invoked; Chromium must be started without downloading anything")
    with mock.patch.object(SeleniumManager, "binary_paths", side_effect=refuse):
        driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(page_load_timeout)
    driver.set_script_timeout(page_load_timeout)
    return driver
