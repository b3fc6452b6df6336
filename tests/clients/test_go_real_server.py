"""The Go SDK against the real services: the example of clients/go/README.md, built from the README itself, trains
a subject on the toy base model of a `likeness serve all` process, generates it and downloads its files; a driver
(tests/clients/go/main.go -real) then checks the helpers the example leaves out, with the status details the
real services attach (BadRequest, RetryInfo, QuotaFailure).

When tests/gateway.py exists (the deployment-shaped layout: each service its own process behind one entry
address), the example runs through its entry address too.
"""

from __future__ import annotations

import io
import os
import re
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
from test_go_client import ROOT, drive, go, make_go_workspace

# `gateway_stack` (three service processes behind one entry address) comes from tests/conftest.py, one per session.

README = ROOT / "clients" / "go" / "README.md"
EXAMPLE_MARKER = "tests/clients/test_go_real_server.py builds this program"
TRAIN_STEPS = "3"


def readme_example() -> str:
    """The Go program that follows the marker comment in clients/go/README.md."""
    text = README.read_text()
    found = re.search(re.escape(EXAMPLE_MARKER) + r".*?```go\n(.*?)```", text, re.S)
    assert found, f"{README} lost its example (the ```go block after the comment naming {EXAMPLE_MARKER!r})"
    assert found.group(1).startswith("// ") and "\npackage main\n" in found.group(1)
    return found.group(1)


@dataclass
class GoPrograms:
    example: Path
    driver: Path


@pytest.fixture(scope="module")
def go_programs(tmp_path_factory: pytest.TempPathFactory) -> GoPrograms:
    gopath = tmp_path_factory.mktemp("gopath-real")
    env = make_go_workspace(gopath)
    example_dir = gopath / "src" / "likenessreadme"
    example_dir.mkdir(parents=True)
    (example_dir / "main.go").write_text(readme_example())
    programs = GoPrograms(gopath / "readme-example", gopath / "likeness-e2e")
    go(["vet", "likenessreadme"], gopath, env)
    go(["build", "-o", str(programs.example), "likenessreadme"], gopath, env)
    go(["build", "-o", str(programs.driver), "likenesse2e"], gopath, env)
    return programs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(address: str, process: subprocess.Popen | None, log: Path | None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = log.read_text(errors="replace")[-4000:] if log else ""
                raise AssertionError(f"server exited with {process.returncode}:\n{tail}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{address} did not become SERVING in {timeout} s")


@dataclass
class ServeAll:
    address: str
    process: subprocess.Popen
    log: Path

    def wait_serving(self) -> str:
        wait_serving(self.address, self.process, self.log)
        return self.address


@pytest.fixture(scope="module")
def serve_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeAll]:
    """`likeness serve all` with the built-in base models, allowing one active training job per tenant. Started,
    not yet waited for: it boots while the Go programs build."""
    base = tmp_path_factory.mktemp("go-serve-all")
    port = _free_port()
    log = base / "server.log"
    command = [
        sys.executable, "-m", "likeness.cli.main", "serve", "all",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
        "--storage-url", str(base / "storage"), "--cache-dir", str(base / "cache"), "--device", "cpu",
        "--grace-seconds", "2", "--quota-active-jobs", "1", "--trainer-progress-interval-seconds", "0",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        yield ServeAll(f"127.0.0.1:{port}", process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos of the demo subject (a checkered toy), enlarged as a camera would have taken them."""
    from PIL import Image

    from likeness.world.subjects import demo_subject_photos

    folder = tmp_path_factory.mktemp("go-photos")
    for name, data in demo_subject_photos()[:5]:
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((128, 128), Image.Resampling.BICUBIC)
        image.save(folder / name, "PNG")
    return folder


@dataclass
class ExampleRun:
    stdout: str
    out: Path
    model_id: str


def run_example(program: Path, address: str, photos: Path, out: Path, env: dict[str, str] | None = None) -> ExampleRun:
    env = {k: v for k, v in (env or os.environ).items() if k not in ("LIKENESS_API_KEY", "LIKENESS_TLS_CA_FILE")}
    env["GRPC_GO_RETRY"] = "on"
    args = ["-address", address, "-photos", str(photos), "-out", str(out), "-steps", TRAIN_STEPS]
    result = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=240, env=env, check=False)
    assert result.returncode == 0, f"the README example failed:\n{result.stdout}\n{result.stderr}"
    model = re.search(r"^model (\S+)$", result.stdout, re.M)
    assert model, result.stdout
    return ExampleRun(result.stdout, out, model.group(1))


def check_example_run(run: ExampleRun, photo_count: int) -> None:
    assert f": {photo_count} photos" in run.stdout, run.stdout
    assert re.search(rf"^step {TRAIN_STEPS}/{TRAIN_STEPS}, loss ", run.stdout, re.M), run.stdout
    images = sorted(run.out.glob("beach-*.png"))
    assert [image.name for image in images] == ["beach-0.png", "beach-1.png"]
    assert all(image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    # Every downloaded file is in the model folder, checked against its SHA-256 by the helper.
    downloaded = re.findall(r"^file (\S+) \((\d+) bytes\)$", run.stdout, re.M)
    model_dir = run.out / "model"
    assert {Path(path).name for path, _ in downloaded} >= {"manifest.json"}, run.stdout
    for path, size in downloaded:
        assert Path(path).is_relative_to(model_dir) and Path(path).stat().st_size == int(size)
    assert not [p for p in model_dir.rglob("*.part")], "a temporary download file was left behind"


@pytest.fixture(scope="module")
def example_run(serve_all, go_programs, photos, tmp_path_factory) -> ExampleRun:
    address = serve_all.wait_serving()
    return run_example(go_programs.example, address, photos, tmp_path_factory.mktemp("go-example-out"))


def test_readme_example_uploads_trains_watches_generates_and_downloads(example_run, photos):
    check_example_run(example_run, len(list(photos.iterdir())))


def test_helpers_and_error_details_against_the_real_services(go_programs, serve_all, example_run, photos):
    report = drive(
        go_programs.driver, "-real", "-model", example_run.model_id, "-photos", str(photos), "-quota",
        serve_all.address, timeout=180,
    )  # fmt: skip
    assert report["model_id"] == example_run.model_id and report["listed"]
    assert report["job_count"] == 1 and report["job_state"] == "JOB_STATE_SUCCEEDED"
    assert report["templates"] > 0
    # INVALID_ARGUMENT carries google.rpc.BadRequest naming the field, and every error the request id.
    assert report["bad_request_code"] == "InvalidArgument"
    assert report["bad_request_field"] == "parameters.num_inference_steps"
    assert report["request_id"]
    # Over the active-jobs quota: RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure (and a pushback of -1, so
    # gRPC does not hold the call for 30 s).
    assert report["quota_code"] == "ResourceExhausted" and report["quota_name"] == "max_active_jobs"
    assert report["has_retry_delay"] and report["retry_delay_ms"] == 30_000
    assert report["cancelled_state"] == "JOB_STATE_CANCELLED"
    assert report["downloaded"] == ["manifest.json"]  # only the kinds asked for
    assert report["files_removed"] > 0 and report["after_delete"] == "NotFound"


def test_readme_example_through_the_gateway_and_per_service_addresses(go_programs, gateway_stack, photos, tmp_path):
    """The example through the deployment-shaped layout's one entry address (tests/gateway.py: three service
    processes behind nginx); then the helpers with each service dialled at its own process's address."""
    run = run_example(go_programs.example, gateway_stack.address, photos, tmp_path / "out")
    check_example_run(run, len(list(photos.iterdir())))

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env["LIKENESS_ADDRESS"] = "127.0.0.1:1"  # nothing there: every service must go to its own address
    env.update({f"LIKENESS_{name.upper()}_ADDRESS": address for name, address in gateway_stack.services.items()})
    report = drive(go_programs.driver, "-real", "-model", run.model_id, "-photos", str(photos), "", env=env)
    assert report["model_id"] == run.model_id and report["listed"] and report["job_count"] >= 1
    assert report["bad_request_field"] == "parameters.num_inference_steps"
    assert report["downloaded"] == ["manifest.json"]
    assert report["files_removed"] > 0 and report["after_delete"] == "NotFound"
