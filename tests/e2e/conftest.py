"""Fixtures that run the real `likeness serve` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    address: str
    metrics_port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise AssertionError(f"server did not become SERVING in {timeout} s:\n{self.log()[-4000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_server(tmp_path: Path, service: str = "all", *extra: str, storage: Path | None = None) -> ServerProcess:
    port, metrics_port = free_port(), free_port()
    log_path = tmp_path / f"server-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "likeness.cli.main", "serve", service,
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--storage-url", str(storage or tmp_path / "storage"), "--cache-dir", str(tmp_path / "cache"),
        "--grace-seconds", "5", *extra,
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return ServerProcess(process, f"127.0.0.1:{port}", metrics_port, log_path)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def factory(service: str = "all", *extra: str, storage: Path | None = None) -> ServerProcess:
        server = start_server(tmp_path, service, *extra, storage=storage)
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=30)
