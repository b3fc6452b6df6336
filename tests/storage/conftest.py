"""Fixtures: every contract test runs against LocalStorage and against a real S3 API (moto_server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from likeness.storage import Storage, open_storage

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUCKET = "likeness-test"
# Credentials moto accepts; set for the whole session so no real AWS profile is ever consulted.
_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_S3_ENV_REMOVED = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _moto_server_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("moto_server")
    return str(beside_python) if beside_python.exists() else shutil.which("moto_server")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto_server on 127.0.0.1 with bucket `BUCKET`; its URL. Skips only if the server cannot start."""
    binary = _moto_server_binary()
    if binary is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with pytest.MonkeyPatch.context() as env, open(log_path, "wb") as log:
        for name, value in _S3_ENV.items():
            env.setenv(name, value)
        for name in _S3_ENV_REMOVED:
            env.delenv(name, raising=False)
        server = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    pytest.skip(f"moto_server exited with {server.returncode}: {log_path.read_text()[-500:]}")
                try:
                    urllib.request.urlopen(endpoint, timeout=1).close()
                    break
                except urllib.error.HTTPError:
                    break  # any HTTP answer means the server is up
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.skip(f"moto_server did not answer within 30 s: {log_path.read_text()[-500:]}")
                    time.sleep(0.1)
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield endpoint
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def make_s3_storage(endpoint: str, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """A storage on a fresh prefix of the test bucket, configured the way operators do: through the env."""
    monkeypatch.setenv("LIKENESS_S3_ENDPOINT_URL", endpoint)
    return open_storage(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:12]}", cache_dir=cache_dir)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """The storage under test: LocalStorage in tmp_path, or S3 (moto) on a prefix of its own."""
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return make_s3_storage(endpoint, tmp_path / "cache", monkeypatch)


@pytest.fixture
def s3_storage(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    return make_s3_storage(s3_endpoint, tmp_path / "cache", monkeypatch)
