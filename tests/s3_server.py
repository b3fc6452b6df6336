"""A real S3 API for tests and benchmarks: moto_server on 127.0.0.1 with one bucket (`BUCKET`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BUCKET = "likeness-test"
# Credentials moto accepts; set while the server runs so no real AWS profile is ever consulted.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
S3_ENV_REMOVED = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL")


class MotoUnavailable(RuntimeError):
    """moto_server is not installed or did not start (the message says which)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def moto_server_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("moto_server")
    return str(beside_python) if beside_python.exists() else shutil.which("moto_server")


@contextlib.contextmanager
def s3_environment() -> Iterator[None]:
    """The AWS variables moto needs set, the ones that could reach a real account unset; restored after."""
    saved = {name: os.environ.get(name) for name in (*S3_ENV, *S3_ENV_REMOVED)}
    os.environ.update(S3_ENV)
    for name in S3_ENV_REMOVED:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def moto_s3(log_dir: Path) -> Iterator[str]:
    """Run moto_server with bucket BUCKET; yields its endpoint URL. MotoUnavailable if it cannot run."""
    binary = moto_server_binary()
    if binary is None:
        raise MotoUnavailable("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = Path(log_dir) / "moto_server.log"
    with s3_environment(), open(log_path, "wb") as log:
        server = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    raise MotoUnavailable(f"moto_server exited with {server.returncode}: {log_path.read_text()[-500:]}")
                try:
                    urllib.request.urlopen(endpoint, timeout=1).close()
                    break
                except urllib.error.HTTPError:
                    break  # any HTTP answer means the server is up
                except OSError as error:
                    if time.monotonic() > deadline:
                        raise MotoUnavailable(
                            f"moto_server did not answer within 30 s: {log_path.read_text()[-500:]}"
                        ) from error
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
