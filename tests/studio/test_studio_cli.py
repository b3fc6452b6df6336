"""`likeness serve all --studio`: the services and the Studio in one process, the Studio calling this process's
own gRPC port (authentication off: no sign-in), and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_all_with_studio(tmp_path) -> None:
    grpc_port, studio_port = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "likeness.cli.main", "serve", "all", "--studio",
        "--host", "127.0.0.1", "--port", str(grpc_port), "--metrics-port", "0", "--studio-port", str(studio_port),
        "--storage-url", str(tmp_path / "storage"), "--cache-dir", str(tmp_path / "cache"), "--log-format", "text",
    ]  # fmt: skip
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "LIKENESS_AUTH": "none"}
    )
    try:
        deadline = time.monotonic() + 120
        page = ""
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{studio_port}/discover?q=portrait", timeout=5) as reply:
                    page = reply.read().decode()
                    if reply.status == 200 and "card" in page:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        assert 'id="q"' in page and "card" in page, (tmp_path / "serve.log").read_text()[-2000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{studio_port}/discover?q=portrait", timeout=5) as reply:
            assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
