"""Helpers for the Studio browser tests (real headless Chromium driven by Selenium; fixtures in conftest.py).

pytest puts this folder on ``sys.path`` (no ``__init__.py``), so tests here can ``from browser_helpers import wait_css``.
"""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

DEFAULT_TIMEOUT = 10.0


def wait_css(browser: WebDriver, selector: str, timeout: float = DEFAULT_TIMEOUT, visible: bool = True) -> WebElement:
    """The first element matching the CSS `selector`, once it is in the DOM (and displayed, unless `visible=False`).

    Raises selenium's TimeoutException after `timeout` seconds.
    """
    locator = (By.CSS_SELECTOR, selector)
    condition = EC.visibility_of_element_located(locator) if visible else EC.presence_of_element_located(locator)
    return WebDriverWait(browser, timeout).until(condition, f"no {'visible ' if visible else ''}element {selector!r}")


def wait_text(browser: WebDriver, selector: str, text: str, timeout: float = DEFAULT_TIMEOUT) -> WebElement:
    """The element matching `selector`, once its text contains `text` (TimeoutException after `timeout` seconds)."""
    locator = (By.CSS_SELECTOR, selector)
    WebDriverWait(browser, timeout).until(
        EC.text_to_be_present_in_element(locator, text), f"{selector!r} never contained {text!r}"
    )
    return browser.find_element(*locator)


def console_entries(browser: WebDriver) -> list[dict[str, Any]]:
    """The browser console entries logged since the last call (reading drains Chromium's buffer).

    Each is a dict with ``level`` (``SEVERE``, ``WARNING``, ``INFO``, ...), ``message`` and ``timestamp``. Needs the
    ``goog:loggingPrefs`` capability the ``browser`` fixture sets.
    """
    return browser.get_log("browser")


def console_errors(browser: WebDriver) -> list[str]:
    """Messages of the SEVERE console entries since the last read (JS errors, failed loads, CSP refusals)."""
    return [entry["message"] for entry in console_entries(browser) if entry.get("level") == "SEVERE"]


def click_to_navigate(element: WebElement) -> None:
    """Click a link or submit button that leaves the page. chromedriver can report the click as failed when the
    page unloads while it still inspects the node ("does not belong to the document"); the navigation happened,
    so that one error is not a failure (the caller waits for the next page)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.click()
    except StaleElementReferenceException:
        return
    except WebDriverException as error:
        if "does not belong to the document" not in str(error):
            raise
