"""Smoke test of the browser harness: real headless Chromium against a static page on 127.0.0.1.

Also proves the XSS-probe technique the Studio tests use: under ``Content-Security-Policy: script-src 'self'`` an
injected inline script (or inline event handler) never runs, so a flag it would set (``window.__xss``) stays undefined,
while the same page served without the header does set it (the probe is not vacuous).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from browser_helpers import console_errors, wait_css, wait_text

CSP = "script-src 'self'"

PAGE = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>harness smoke</title></head>
<body>
  <h1>Likeness Studio harness</h1>
  <input id="q" autocomplete="off">
  <div id="out"></div>
  <script src="/app.js"></script>
  <script>window.__xss = "script";</script>
  <img src="/missing.png" alt="" onerror="window.__xss = (window.__xss || '') + '+handler'">
</body>
</html>
"""

APP_JS = b"""document.getElementById("q").addEventListener("input", function () {
  document.getElementById("out").textContent = "ready";
});
window.__appLoaded = true;
"""


class _Handler(BaseHTTPRequestHandler):
    routes = {
        "/": ("text/html; charset=utf-8", PAGE, True),
        "/no-csp": ("text/html; charset=utf-8", PAGE, False),
        "/app.js": ("text/javascript; charset=utf-8", APP_JS, True),
    }

    def do_GET(self) -> None:
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        content_type, body, csp = route
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if csp:
            self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def static_site() -> Iterator[str]:
    """Base URL of the static smoke page, served from a thread on 127.0.0.1 (ephemeral port)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="smoke-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_types_into_page_and_screenshots(browser, static_site, shot):
    console_errors(browser)  # drain what earlier tests left
    browser.get(static_site + "/")
    box = wait_css(browser, "#q")
    assert browser.execute_script("return window.__appLoaded") is True  # the 'self' script file did run
    box.send_keys("hello")
    assert wait_text(browser, "#out", "ready").text == "ready"
    assert box.get_attribute("value") == "hello"

    path = shot("typed")
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 0 and height > 0


def test_csp_blocks_inline_script(browser, static_site):
    console_errors(browser)
    browser.get(static_site + "/")
    wait_css(browser, "#q")
    # browser.get returns after the load event, which waits for the img: its onerror has had its chance by now
    # (the no-CSP test below shows it does fire by then).
    assert browser.execute_script("return window.__appLoaded") is True
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    errors = console_errors(browser)
    assert any("Content Security Policy" in message for message in errors), errors  # console capture works too


def test_probe_detects_inline_script_without_csp(browser, static_site):
    browser.get(static_site + "/no-csp")
    wait_css(browser, "#q")
    assert browser.execute_script("return window.__xss") == "script+handler"
