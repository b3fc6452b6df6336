"""The TypeScript SDK against the real services: `likeness serve all` as a separate process on the built-in toy base
model (a training job takes seconds on a CPU). Runs the README's example code block as users would (compiled with
tsc, photos in ./photos), then tests/clients/node/real_e2e.ts, which calls every helper once on a real job. The
driver runs a second time through the deployment-shaped layout (tests/gateway.py: three service processes behind
nginx, one entry address)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_typescript_client import build_sdk

# `gateway_stack` (three service processes behind one entry address) comes from tests/conftest.py, one per session.

pytestmark = pytest.mark.slow

#: The server's quota of active jobs: real_e2e.ts checks that a second active job is refused with RetryInfo.
ACTIVE_JOBS_QUOTA = 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_serving(process: subprocess.Popen, address: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"serve all exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"serve all did not become SERVING in {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def serve_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`likeness serve all` on a free port, plaintext, without authentication; its address."""
    base = tmp_path_factory.mktemp("ts-serve-all")
    port = _free_port()
    log = base / "server.log"
    command = [
        sys.executable, "-m", "likeness.cli.main", "serve", "all",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(_free_port()),
        "--storage-url", str(base / "storage"), "--cache-dir", str(base / "cache"),
        "--device", "cpu", "--trainer-progress-interval-seconds", "0", "--grace-seconds", "1",
        "--quota-active-jobs", str(ACTIVE_JOBS_QUOTA), "--log-level", "WARNING", "--log-format", "text",
        "--webhook-allow-cidrs", "127.0.0.1/32",  # the driver's webhook receiver listens on loopback
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    address = f"127.0.0.1:{port}"
    try:
        _wait_serving(process, address, log)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)  # the storage is a scratch folder: a short drain, then kill
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photos `make demo` trains on (the toy world's checkered toy)."""
    from likeness.world.subjects import demo_subject_photos

    folder = tmp_path_factory.mktemp("ts-photos") / "photos"
    folder.mkdir()
    for name, data in demo_subject_photos():
        (folder / name).write_bytes(data)
    return folder


def _node_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    return {**env, **extra}


def test_readme_example_runs_against_serve_all(tmp_path_factory, serve_all: str, photos: Path):
    compiled = build_sdk(tmp_path_factory)
    workdir = photos.parent
    result = subprocess.run(
        ["node", str(compiled / "dist" / "readme_example.js")],
        cwd=workdir,
        env=_node_env(LIKENESS_ADDRESS=serve_all),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    for name in sorted(p.name for p in photos.iterdir()):
        assert f"{name}: kept" in result.stdout, output
    assert "step " in result.stdout and "loss" in result.stdout, output
    for index in (0, 1):
        image = workdir / "out" / f"beach-{index}.png"
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", output
    assert result.returncode == 0, output
    downloaded = [p for p in (workdir / "out" / "model").rglob("*") if p.is_file()]
    assert downloaded, output
    assert all(f"downloaded {p.relative_to(workdir / 'out' / 'model').as_posix()}" in result.stdout for p in downloaded)


def drive(compiled: Path, out: Path, photos: Path, *address_args: str) -> dict:
    """Runs tests/clients/node/real_e2e.ts and returns its report (also used against a gateway's entry address)."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["node", str(compiled / "dist" / "real_e2e.js"), "--photos", str(photos), "--out", str(out), *address_args],
        env=_node_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"node driver failed:\n{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("real_e2e phases (ms):", report.get("timingsMs"))  # shown with a failure, or with -s
    return report


def check_report(report: dict, quota_checked: bool = True, every_service_health: bool = True) -> None:
    assert "unexpected" not in report, report["unexpected"]["message"]
    if every_service_health:
        assert set(report["health"].values()) == {"SERVING"}, report["health"]
    else:
        assert report["health"]["server"] == "SERVING", report["health"]
    assert report["dataset"]["imageCount"] == report["dataset"]["kept"] == report["dataset"]["photoCount"]
    assert report["getDataset"]

    assert report["invalidUpload"]["code"] == 3 and report["invalidUpload"]["field"], report["invalidUpload"]
    invalid = report["invalid"]
    assert invalid["isLikenessError"] and invalid["code"] == 3, invalid  # INVALID_ARGUMENT
    assert invalid["field"] == "spec.hyperparameters.learning_rate", invalid

    training = report["training"]
    assert training["state"] == "JOB_STATE_SUCCEEDED" and training["key"] and training["listed"]
    assert training["existing"] == [False, True, True]
    assert training["sequences"] == list(range(1, len(training["sequences"]) + 1))
    assert "progress" in training["kinds"] and "succeeded" in training["kinds"]
    assert training["resumedFrom4"] == training["sequences"][3:]

    if quota_checked:
        quota = report["quota"]
        assert quota["code"] == 8 and quota["quota"] == "max_active_jobs", quota  # RESOURCE_EXHAUSTED
        assert quota["retryAfterSeconds"] and quota["retryAfterSeconds"] > 0, quota
    assert report["cancel"]["generatedKey"] == 32
    assert report["cancel"]["final"] == "JOB_STATE_CANCELLED", report["cancel"]

    assert [(image["index"], image["seed"], image["png"]) for image in report["generate"]["images"]] == [
        (0, "3", "PNG")
    ]
    assert report["generate"]["summary"] == 1
    assert report["models"] == {"listed": True, "got": True}

    gallery = report["gallery"]
    assert gallery["got"] and gallery["found"] and gallery["recordedAgain"]
    assert gallery["iterated"] == [gallery["promptId"]]  # one page of one, then no token
    assert gallery["templates"] > 0

    files = report["download"].get("files")
    assert files and "manifest.json" in [name for name, _, _ in files], report["download"]
    assert all(size >= 0 and sha_length == 64 for _, size, sha_length in files)
    assert [size for _, size, _ in files] == report["download"]["onDisk"]
    assert report["deleted"]
    assert report["afterDelete"]["code"] == 5  # NOT_FOUND


def test_every_helper_against_serve_all(tmp_path_factory, tmp_path: Path, serve_all: str, photos: Path):
    compiled = build_sdk(tmp_path_factory)
    report = drive(
        compiled,
        tmp_path / "out",
        photos,
        "--address",
        serve_all,
        "--quota-active-jobs",
        str(ACTIVE_JOBS_QUOTA),
        "--webhooks",
    )
    assert report["endpoints"] == {"trainer": serve_all, "inference": serve_all, "gallery": serve_all}
    check_report(report)

    # The job's webhook: the server POSTed its events to the driver's receiver, which verified each signature.
    webhook = report["webhook"]
    assert webhook["posts"] >= 2 and webhook["verified"] and webhook["jobId"], webhook
    # Deliveries are sent by a pool of threads: they may arrive in any order.
    assert "training_job.state_changed" in webhook["types"] and "SUCCEEDED" in webhook["states"], webhook
    assert webhook["shown"]["secret"] == "" and webhook["shown"]["sendProgress"], webhook  # write-only secret
    assert "WEBHOOK_DELIVERY_STATE_DELIVERED" in webhook["deliveries"], webhook


def test_every_helper_through_the_gateway(tmp_path_factory, tmp_path: Path, gateway_stack, photos: Path):
    """The same driver through the one entry address of separate trainer, inference and gallery processes (the
    session's shared stack: no quota set, other tests' data around)."""
    compiled = build_sdk(tmp_path_factory)
    report = drive(compiled, tmp_path / "out", photos, "--address", gateway_stack.address)
    # nginx sends every grpc.health.v1 call to one process (the gallery), which knows only its own service: a
    # health check naming the trainer or the inference service through the entry is not theirs to answer.
    check_report(report, quota_checked=False, every_service_health=False)
