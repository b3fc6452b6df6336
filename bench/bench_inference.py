"""Benchmark of the inference service on tiny SD 1.x (64 px), every comparison measured side by side in one run.

The service runs as users run it: a `likeness serve inference` process on loopback, called over gRPC. The
in-process reference is the same base pipeline with the same LoRA subject attached, built by the same model
repository code in this process and called on its main thread, as a script would.

(a) one request through the gRPC service (full interceptor chain, PNG encoding, chunked stream) vs the same
    diffusers pipeline called in-process with the same parameters; goal <= 1.03x. Reported as the median of the
    per-pair ratios of back-to-back runs (while one side computes the other process is idle).
(b) switching between two cached LoRA subjects (routing the next batch's LoRA stacks, `lora_routing`) vs
    `from_pretrained` of the whole pipeline; goal <= 1% of a reload.
(c) cold load of a LoRA subject from storage (LoadSubjectModel after UnloadSubjectModel) vs the same reload.
(d) throughput of 8 concurrent clients (dynamic batching) vs the same 8 requests sent one after another.
(e) issue 13: 8 concurrent requests for 8 different LoRA subjects (one mixed batch) vs 8 for one subject, both
    batched (`inference.mixed_subject_batch_ratio`, goal >= 0.85), and vs the same 8 one after another
    (`inference.mixed_vs_sequential_ratio`, goal >= 1.3).

Variants are interleaved and medians reported, because this machine's timings are noisy.
Run: `python bench/bench_inference.py` (prints JSON) or import `run()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness.inference.lora_routing import SampleLoras
from likeness.inference.pipeline_runner import scheduler_for
from likeness.inference.repository import ModelRepository
from likeness.inference.testing import publish_lora_subject
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.layout import DEFAULT_TENANT
from likeness.storage.local import LocalStorage
from likeness_client.v1 import inference_service_pb2 as pb
from likeness_client.v1 import inference_service_pb2_grpc as pb_grpc
from likeness_client.v1 import types_pb2

BASE = "tiny-sd15"
SIZE = 64
STEPS = 20
GUIDANCE = 7.5
PROMPT = "a photo of sks dog"
LATENCY_PAIRS = 15
SWITCHES = 40
RELOADS = 5
THROUGHPUT_ROUNDS = 3
CLIENTS = 8
THROUGHPUT_STEPS = 10


def _request(subject: str, seed: int, steps: int = STEPS) -> pb.GenerateImagesRequest:
    return pb.GenerateImagesRequest(
        subject_model_id=subject,
        prompt=PROMPT,
        parameters=types_pb2.GenerationParameters(
            num_inference_steps=steps, guidance_scale=GUIDANCE, width=SIZE, height=SIZE, seed=seed
        ),
    )


class _ServiceProcess:
    """`likeness serve inference` in its own process, as deployed; `stub` calls it over loopback."""

    def __init__(
        self,
        storage_dir: Path,
        cache_dir: Path,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "likeness.cli.main", "serve", "inference", "--host", "127.0.0.1",
            "--port", str(port), "--metrics-port", "0", "--storage-url", str(storage_dir),
            "--cache-dir", str(cache_dir), "--base-models", f"{BASE}=builtin:sd15", "--default-base-model", BASE,
            "--preload-base-models", BASE, "--log-level", "WARNING", *extra_args,
        ]  # fmt: skip
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.channel = (
            grpc.secure_channel(self.address, credentials) if credentials else grpc.insecure_channel(self.address)
        )
        self.metadata = tuple(metadata)
        self.stub = pb_grpc.InferenceServiceStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the inference server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(grpc.RpcError):
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            time.sleep(0.2)
        raise RuntimeError("the inference server did not become SERVING within 300 s")

    def stop(self) -> None:
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._log.close()


def _through_service(server: _ServiceProcess, request: pb.GenerateImagesRequest) -> float:
    started = time.perf_counter()
    images = sum(
        1
        for r in server.stub.GenerateImages(request, metadata=server.metadata)
        if r.WhichOneof("event") == "image_chunk" and r.image_chunk.last
    )
    elapsed = time.perf_counter() - started
    if images != 1:
        raise RuntimeError(f"expected one image, got {images}")
    return elapsed


def _in_process(repository: ModelRepository, subject: str, seed: int) -> float:
    """The pipeline the service uses, with the subject attached the same way, called directly (decoded to PIL)."""
    base = repository.base(BASE)
    with repository.acquire(DEFAULT_TENANT, subject) as lease, base.lock, _routed(base, lease.entry):
        pipeline = repository.activate(base, lease.entry)
        pipeline.scheduler = scheduler_for(base, "default")
        started = time.perf_counter()
        with torch.no_grad():
            image = pipeline(
                prompt=[PROMPT],
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                width=SIZE,
                height=SIZE,
                generator=[torch.Generator().manual_seed(seed)],
                output_type="pil",
            ).images[0]
        elapsed = time.perf_counter() - started
    if image.size != (SIZE, SIZE):
        raise RuntimeError(f"unexpected image size {image.size}")
    return elapsed


def _routed(base, entry):
    """Route the subject's LoRA to a batch of one image, as the batch runner does."""
    return base.router.route([SampleLoras(((entry.lora.layers, 1.0),))], dtype=torch.float32)


def _switch_seconds(repository: ModelRepository, first: str, second: str) -> list[float]:
    """A switch: setting (and clearing) the next batch's routed LoRA stacks for the other subject."""
    base = repository.base(BASE)
    timings = []
    with repository.acquire(DEFAULT_TENANT, first) as a, repository.acquire(DEFAULT_TENANT, second) as b:
        for index in range(SWITCHES):
            entry = (a, b)[index % 2].entry
            with base.lock:
                started = time.perf_counter()
                with _routed(base, entry):
                    repository.activate(base, entry)
                timings.append(time.perf_counter() - started)
    return timings


def _reload_seconds(catalog: BaseModelCatalog) -> float:
    started = time.perf_counter()
    pipeline = catalog.load(BASE)
    elapsed = time.perf_counter() - started
    del pipeline
    return elapsed


def _cold_load_seconds(server: _ServiceProcess, subject: str) -> float:
    server.stub.UnloadSubjectModel(pb.UnloadSubjectModelRequest(model_id=subject))
    started = time.perf_counter()
    status = server.stub.LoadSubjectModel(pb.LoadSubjectModelRequest(model_id=subject)).model
    elapsed = time.perf_counter() - started
    if status.state != pb.LOAD_STATE_LOADED:
        raise RuntimeError(f"subject {subject} did not load: {status.failure_reason}")
    return elapsed


def _sequential_seconds(server: _ServiceProcess, subjects: Sequence[str], round_index: int) -> float:
    started = time.perf_counter()
    for client in range(CLIENTS):
        _through_service(server, _request(subjects[client], 1000 * round_index + client, THROUGHPUT_STEPS))
    return time.perf_counter() - started


def _concurrent_seconds(server: _ServiceProcess, subjects: Sequence[str], round_index: int) -> tuple[float, int]:
    """8 clients at once, client i asking for `subjects[i]`; returns the wall time and the largest batch."""
    barrier = threading.Barrier(CLIENTS)
    batch_sizes: list[int] = []
    errors: list[BaseException] = []

    def client(index: int) -> None:
        barrier.wait()
        try:
            request = _request(subjects[index], 1000 * round_index + index, THROUGHPUT_STEPS)
            for response in server.stub.GenerateImages(request):
                if response.WhichOneof("event") == "summary":
                    batch_sizes.append(response.summary.batch_size)
        except BaseException as exc:  # re-raised below, after every client finished
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed, max(batch_sizes)


def run() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="likeness-bench-inference-") as temp:
        root = Path(temp)
        storage = LocalStorage(root / "storage")
        catalog = BaseModelCatalog(f"{BASE}=builtin:sd15", cache_dir=root / "cache" / "base-models")
        first, second, cold = (publish_lora_subject(storage, seed=i, base_model=BASE).model_id for i in range(3))
        many = [publish_lora_subject(storage, seed=10 + i, base_model=BASE).model_id for i in range(CLIENTS)]
        repository = ModelRepository(
            storage, catalog, device=torch.device("cpu"), dtype=torch.float32, subject_budget_bytes=2**30
        )
        server = _ServiceProcess(root / "storage", root / "cache", root / "server.log")
        try:
            for subject in (first, second):  # warm: cached subjects, first-call overheads paid
                _through_service(server, _request(subject, 0))
                _in_process(repository, subject, 0)

            service, direct = [], []
            for pair in range(LATENCY_PAIRS):
                seed = 100 + pair
                if pair % 2 == 0:
                    service.append(_through_service(server, _request(first, seed)))
                    direct.append(_in_process(repository, first, seed))
                else:
                    direct.append(_in_process(repository, first, seed))
                    service.append(_through_service(server, _request(first, seed)))

            reloads, colds, switches = [], [], []
            for _ in range(RELOADS):
                reloads.append(_reload_seconds(catalog))
                colds.append(_cold_load_seconds(server, cold))
                switches.extend(_switch_seconds(repository, first, second))

            for subject in many:  # cached, as a busy server's subjects are
                _through_service(server, _request(subject, 0, 2))
            one_subject = [first] * CLIENTS
            sequential, concurrent, batch_sizes = [], [], []
            mixed, mixed_sequential, mixed_batches = [], [], []
            for round_index in range(THROUGHPUT_ROUNDS):
                sequential.append(_sequential_seconds(server, one_subject, round_index))
                elapsed, batch_size = _concurrent_seconds(server, one_subject, round_index)
                concurrent.append(elapsed)
                batch_sizes.append(batch_size)
                elapsed, batch_size = _concurrent_seconds(server, many, round_index)
                mixed.append(elapsed)
                mixed_batches.append(batch_size)
                mixed_sequential.append(_sequential_seconds(server, many, round_index))
        finally:
            server.stop()
            repository.close()

    service_s, direct_s = statistics.median(service), statistics.median(direct)
    # Each pair ran back to back, so its ratio cancels the slow drifts of a shared machine's load.
    overhead = statistics.median(s / d for s, d in zip(service, direct, strict=True))
    reload_s, cold_s, switch_s = statistics.median(reloads), statistics.median(colds), statistics.median(switches)
    sequential_s, concurrent_s = statistics.median(sequential), statistics.median(concurrent)
    mixed_s, mixed_sequential_s = statistics.median(mixed), statistics.median(mixed_sequential)
    return [
        {
            "name": "inference.service_overhead_ratio",
            "value": round(overhead, 4),
            "unit": "x",
            "goal": "<= 1.03",
            "note": f"median of {LATENCY_PAIRS} back-to-back pairs; medians gRPC to a `likeness serve` process "
            f"{service_s * 1000:.0f} ms, in-process {direct_s * 1000:.0f} ms ({STEPS} steps, {SIZE} px, LoRA subject)",
        },
        {
            "name": "inference.switch_vs_reload_ratio",
            "value": round(switch_s / reload_s, 5),
            "unit": "x",
            "goal": "<= 0.01",
            "note": f"switch {switch_s * 1000:.2f} ms vs from_pretrained {reload_s * 1000:.0f} ms",
        },
        {
            "name": "inference.cold_load_vs_reload_ratio",
            "value": round(cold_s / reload_s, 4),
            "unit": "x",
            "goal": "< 1",
            "note": f"LoRA from storage {cold_s * 1000:.0f} ms vs pipeline reload {reload_s * 1000:.0f} ms",
        },
        {
            "name": "inference.concurrent_throughput_ratio",
            "value": round(sequential_s / concurrent_s, 3),
            "unit": "x",
            "goal": "> 1",
            "note": f"{CLIENTS} concurrent clients {concurrent_s:.2f} s vs one after another {sequential_s:.2f} s "
            f"({THROUGHPUT_STEPS} steps; largest batch {max(batch_sizes)})",
        },
        {
            "name": "inference.mixed_subject_batch_ratio",
            "value": round(concurrent_s / mixed_s, 3),
            "unit": "x",
            "goal": ">= 0.85",
            "note": f"throughput of {CLIENTS} concurrent requests for {CLIENTS} different LoRA subjects "
            f"({mixed_s:.2f} s, largest batch {max(mixed_batches)}) over {CLIENTS} for one subject ({concurrent_s:.2f} "
            f"s), medians of {THROUGHPUT_ROUNDS} interleaved rounds",
        },
        {
            "name": "inference.mixed_vs_sequential_ratio",
            "value": round(mixed_sequential_s / mixed_s, 3),
            "unit": "x",
            "goal": ">= 1.3",
            "note": f"{CLIENTS} requests for {CLIENTS} different subjects batched {mixed_s:.2f} s vs one after another "
            f"{mixed_sequential_s:.2f} s ({THROUGHPUT_STEPS} steps, {SIZE} px)",
        },
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
