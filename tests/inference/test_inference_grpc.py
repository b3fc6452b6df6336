"""The inference service end to end through gRPC, with subject models published like the trainer does."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from inference_helpers import read_stream, request
from PIL import Image
from prometheus_client import REGISTRY

from likeness.inference.encoding import read_parameters
from likeness.inference.metrics import ADAPTER_LABELS
from likeness.inference.testing import publish_corrupt_lora_subject, publish_full_subject, publish_lora_subject
from likeness_client.v1 import inference_service_pb2 as pb
from likeness_client.v1 import types_pb2


@pytest.fixture(scope="module")
def subjects(server) -> dict[str, str]:
    storage = server.storage
    return {
        "lora": publish_lora_subject(storage, seed=1, identifier="ohwx", class_noun="toy").model_id,
        "other": publish_lora_subject(storage, seed=2).model_id,
        "full": publish_full_subject(storage).model_id,
        "sdxl": publish_lora_subject(storage, base_model="tiny-sdxl", arch="sdxl").model_id,
        "sdxl_full": publish_full_subject(storage, base_model="tiny-sdxl", arch="sdxl").model_id,
        "corrupt": publish_corrupt_lora_subject(storage).model_id,
    }


def generate(server, req: pb.GenerateImagesRequest, timeout: float = 120):
    return read_stream(server.stub.GenerateImages(req, timeout=timeout))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_stream_carries_accepted_progress_previews_chunked_images_and_summary(server, subjects) -> None:
    stream = generate(
        server, request(subject=subjects["lora"], steps=3, num_images=2, seed=100, preview_every_n_steps=1)
    )
    kinds = [kind for i, kind in enumerate(stream.events) if i == 0 or kind != stream.events[i - 1]]
    assert kinds == ["accepted", "progress", "image_chunk", "summary"]
    assert stream.accepted.effective_prompt == "a photo of ohwx toy" and stream.accepted.request_id
    assert [(p.step, p.total_steps) for p in stream.progress] == [(1, 3), (2, 3), (3, 3)]
    for progress in stream.progress:
        preview = Image.open(io.BytesIO(progress.preview.data))
        assert preview.format == "JPEG" and max(preview.size) <= 64
    # Small chunks on this server: every image arrives in several, in order, and reassembles into a PNG.
    for index in (0, 1):
        chunks = [c for c in stream.chunks if c.image_index == index]
        assert len(chunks) > 1 and [c.chunk_index for c in chunks] == list(range(len(chunks)))
        assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert all(len(c.data) <= 4096 for c in chunks)
        image = Image.open(io.BytesIO(stream.images[index]))
        assert image.format == "PNG" and image.size == (64, 64)
        parameters = read_parameters(stream.images[index])
        assert parameters.startswith("a photo of ohwx toy\nSteps: 3, Sampler: DDPM, CFG scale: 7.5, ")
        assert f"Seed: {100 + index}, Size: 64x64, Model: tiny-sd15, Subject model: {subjects['lora']}" in parameters
    assert stream.seeds == {0: 100, 1: 101}
    summary = stream.summary
    assert summary.num_images == 2 and list(summary.seeds) == [100, 101] and summary.batch_size == 1
    assert summary.denoise_ms > 0 and summary.decode_ms > 0
    assert summary.total_ms >= summary.queue_ms + summary.denoise_ms


def test_same_request_gives_the_same_pixels(server, subjects) -> None:
    first = generate(server, request(subject=subjects["lora"], seed=5, num_images=2))
    again = generate(server, request(subject=subjects["lora"], seed=5, num_images=2))
    other_seed = generate(server, request(subject=subjects["lora"], seed=6))
    assert first.images == again.images
    assert first.images[0] != other_seed.images[0] and first.images[0] != first.images[1]
    # Image 1 of seed 5 is image 0 of seed 6: each image has its own generator seeded with seed + i.
    assert np.abs(pixels(first.images[1]) - pixels(other_seed.images[0])).max() <= 1


def _start_blocker(server, steps: int = 150) -> tuple[grpc.Future, threading.Event]:
    """A long request on another subject that keeps the worker busy; the event fires at its first step."""
    call = server.stub.GenerateImages(request(subject="", prompt="a plain photo", steps=steps, seed=1), timeout=120)
    started = threading.Event()

    def drain() -> None:
        try:
            for response in call:
                if response.WhichOneof("event") == "progress":
                    started.set()
        except grpc.RpcError:
            started.set()

    threading.Thread(target=drain, daemon=True).start()
    assert started.wait(60)
    return call, started


def test_compatible_requests_are_batched_and_give_the_pixels_they_give_alone(server, subjects) -> None:
    seeds = (11, 12, 13)
    prompts = ("a photo of {subject}", "{subject} on a beach", "a drawing of {subject}")
    blocker, _ = _start_blocker(server)
    results: dict[int, object] = {}

    def send(seed: int, prompt: str) -> None:
        results[seed] = generate(server, request(prompt, subject=subjects["other"], seed=seed))

    senders = [threading.Thread(target=send, args=pair) for pair in zip(seeds, prompts, strict=True)]
    for sender in senders:
        sender.start()
    waited = time.monotonic()
    while server.engine.queue.depth < 3 and time.monotonic() - waited < 60:
        time.sleep(0.01)  # until all three are queued behind the blocker
    blocker.cancel()
    for sender in senders:
        sender.join(120)
    assert [results[seed].summary.batch_size for seed in seeds] == [3, 3, 3]
    for seed, prompt in zip(seeds, prompts, strict=True):
        alone = generate(server, request(prompt, subject=subjects["other"], seed=seed))
        assert alone.summary.batch_size == 1
        # Batched matrix products round differently; the images agree to within one 8-bit level.
        assert np.abs(pixels(alone.images[0]) - pixels(results[seed].images[0])).max() <= 1


def test_cancelling_stops_denoising_within_one_step_and_frees_the_slot(server, subjects) -> None:
    engine = server.engine
    unet = engine.repository.base("tiny-sd15").pipeline.unet
    calls, calls_after_cancel = [], []

    def count(module, args) -> None:
        running = engine.running
        if running and running[0].params.steps == 150:
            calls.append(1)
            if running[0].cancelled:
                calls_after_cancel.append(1)

    hook = unet.register_forward_pre_hook(count)
    try:
        call = server.stub.GenerateImages(request(subject=subjects["lora"], steps=150, seed=3), timeout=120)
        steps_seen = 0
        for response in call:
            if response.WhichOneof("event") == "progress":
                steps_seen += 1
                if steps_seen == 3:
                    call.cancel()
                    break
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        follow_up = generate(server, request(subject=subjects["lora"], seed=4))
    finally:
        hook.remove()
    # One UNet call per step (guidance batches both halves): the loop ran a few steps, not 150, and at most one
    # call started after the server saw the cancellation.
    assert 3 <= len(calls) < 50
    assert len(calls_after_cancel) <= 1
    assert follow_up.summary.num_images == 1 and follow_up.summary.queue_ms < 5000


_DISCONNECTING_CLIENT = """
import sys, grpc
from likeness_client.v1 import inference_service_pb2 as pb, inference_service_pb2_grpc as rpc
request = pb.GenerateImagesRequest.FromString(bytes.fromhex(sys.argv[2]))
stub = rpc.InferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
for response in stub.GenerateImages(request):
    if response.WhichOneof("event") == "progress" and response.progress.step == 3:
        print("step 3", flush=True)
"""


def test_a_client_that_disconnects_stops_the_denoising_loop(server, subjects) -> None:
    """A client process killed mid-stream (no cancel sent, the connection just drops) frees its slot."""
    engine = server.engine
    unet = engine.repository.base("tiny-sd15").pipeline.unet
    calls = []
    hook = unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    req = request(subject=subjects["lora"], steps=150, seed=5)
    client = subprocess.Popen(
        [sys.executable, "-c", _DISCONNECTING_CLIENT, server.address, req.SerializeToString().hex()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "step 3"
        client.kill()
        client.wait(timeout=10)
        deadline = time.monotonic() + 30
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hook.remove()
        client.kill()
    assert not engine.running
    assert 3 <= len(calls) < 100  # stopped early, not after all 150 steps
    assert generate(server, request(subject=subjects["lora"], seed=6)).summary.num_images == 1


def test_deadlines_are_honoured(server, subjects) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        generate(server, request(subject=subjects["lora"], steps=150), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert generate(server, request(subject=subjects["lora"])).summary.num_images == 1


@pytest.mark.parametrize(
    ("changes", "code", "fragment"),
    [
        ({"subject": "model-does-not-exist"}, grpc.StatusCode.NOT_FOUND, "does not exist"),
        ({"subject": "lora", "base_model": "tiny-sdxl"}, grpc.StatusCode.FAILED_PRECONDITION, "trained on base model"),
        ({"subject": "corrupt"}, grpc.StatusCode.FAILED_PRECONDITION, "not a safetensors LoRA"),
        ({"steps": 0}, grpc.StatusCode.INVALID_ARGUMENT, "parameters.num_inference_steps"),
        ({"size": 63}, grpc.StatusCode.INVALID_ARGUMENT, "parameters.width"),
        ({"size": 4096}, grpc.StatusCode.INVALID_ARGUMENT, "parameters.width"),
        ({"num_images": 9}, grpc.StatusCode.INVALID_ARGUMENT, "num_images"),
        ({"guidance_scale": 31.0}, grpc.StatusCode.INVALID_ARGUMENT, "parameters.guidance_scale"),
        ({"base_model": "no-such-base", "prompt": "a dog"}, grpc.StatusCode.NOT_FOUND, "unknown base model"),
    ],
)
def test_bad_requests_get_the_documented_status(server, subjects, changes, code, fragment) -> None:
    changes = dict(changes)
    if changes.get("subject") in subjects:
        changes["subject"] = subjects[changes["subject"]]
    with pytest.raises(grpc.RpcError) as caught:
        generate(server, request(**changes))
    assert caught.value.code() == code
    assert fragment in caught.value.details()


def test_a_corrupt_subject_is_reported_failed_and_others_keep_serving(server, subjects) -> None:
    status = server.stub.GetSubjectModel(pb.GetSubjectModelRequest(model_id=subjects["corrupt"]))
    assert status.model.state == pb.LOAD_STATE_FAILED and "truncated" in status.model.failure_reason
    assert generate(server, request(subject=subjects["other"])).summary.num_images == 1


def test_long_prompts_are_truncated_with_a_warning(server, subjects) -> None:
    long_prompt = "a photo of {subject} " + " ".join(f"word{i}" for i in range(90))
    stream = generate(server, request(long_prompt, subject=subjects["lora"]))
    assert stream.events[:2] == ["accepted", "warning"]
    assert "cut to" in stream.warnings[0]
    assert stream.accepted.effective_prompt.startswith("a photo of ohwx toy word0")
    assert len(stream.accepted.effective_prompt) < len(long_prompt)
    assert len(stream.images) == 1


def test_subjects_published_after_start_are_found_without_restart(server) -> None:
    before = {m.model.model_id for m in server.stub.ListSubjectModels(pb.ListSubjectModelsRequest()).models}
    fresh = publish_lora_subject(server.storage, seed=9).model_id
    assert fresh not in before
    listing = server.stub.ListSubjectModels(pb.ListSubjectModelsRequest(base_model="tiny-sd15")).models
    assert listing[0].model.model_id == fresh  # newest first
    assert listing[0].state == pb.LOAD_STATE_NOT_LOADED and listing[0].model.method == types_pb2.TRAINING_METHOD_LORA
    assert generate(server, request(subject=fresh)).summary.load_ms > 0
    assert generate(server, request(subject=fresh)).summary.load_ms == 0


def test_load_unload_and_status(server, subjects) -> None:
    stub = server.stub
    loaded = stub.LoadSubjectModel(pb.LoadSubjectModelRequest(model_id=subjects["full"])).model
    assert loaded.state == pb.LOAD_STATE_LOADED and loaded.memory_bytes > 1_000_000
    assert loaded.model.method == types_pb2.TRAINING_METHOD_FULL and loaded.model.size_bytes > 0
    status = stub.GetServerStatus(pb.GetServerStatusRequest())
    assert status.loaded_subjects[0].model.model_id == subjects["full"]  # most recently used first
    assert status.subject_cache_used_bytes >= loaded.memory_bytes and status.device == "cpu"
    assert status.queue_capacity == 64
    sd15 = next(b for b in status.base_models if b.base_model == "tiny-sd15")
    assert sd15.state == pb.LOAD_STATE_LOADED and sd15.default_resolution == 64 and sd15.memory_bytes > 0
    unloaded = stub.UnloadSubjectModel(pb.UnloadSubjectModelRequest(model_id=subjects["full"])).model
    assert unloaded.state == pb.LOAD_STATE_NOT_LOADED
    status = stub.GetServerStatus(pb.GetServerStatusRequest())
    assert subjects["full"] not in {s.model.model_id for s in status.loaded_subjects}
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetSubjectModel(pb.GetSubjectModelRequest(model_id="model-unknown"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details().startswith("model_id: subject model 'model-unknown' does not exist")
    for bad_id, code in (("../x", grpc.StatusCode.INVALID_ARGUMENT), ("model-unknown", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.UnloadSubjectModel(pb.UnloadSubjectModelRequest(model_id=bad_id))
        assert caught.value.code() == code and caught.value.details().startswith("model_id: ")


def test_full_fine_tune_and_sdxl_subjects_generate(server, subjects) -> None:
    full = generate(server, request(subject=subjects["full"], output_format=types_pb2.IMAGE_FORMAT_WEBP))
    assert Image.open(io.BytesIO(full.images[0])).format == "WEBP"
    sdxl = generate(
        server,
        request(
            subject=subjects["sdxl"],
            num_images=2,
            negative_prompt="blurry",
            scheduler=types_pb2.SCHEDULER_EULER_ANCESTRAL,
            output_format=types_pb2.IMAGE_FORMAT_JPEG,
        ),
    )
    assert len(sdxl.images) == 2 and Image.open(io.BytesIO(sdxl.images[1])).format == "JPEG"
    parameters = read_parameters(sdxl.images[0])
    assert "Negative prompt: blurry" in parameters and "Sampler: Euler a, CFG scale: 5," in parameters
    again = generate(
        server,
        request(
            subject=subjects["sdxl"],
            num_images=2,
            negative_prompt="blurry",
            scheduler=types_pb2.SCHEDULER_EULER_ANCESTRAL,
            output_format=types_pb2.IMAGE_FORMAT_JPEG,
        ),
    )
    assert again.images == sdxl.images  # ancestral sampling draws its noise from the per-image generators too
    sdxl_full = generate(server, request(subject=subjects["sdxl_full"]))
    assert Image.open(io.BytesIO(sdxl_full.images[0])).size == (64, 64)
    assert (
        sdxl_full.images[0] != generate(server, request(prompt="a photo of sks dog", base_model="tiny-sdxl")).images[0]
    )


def test_metrics_count_images_cache_use_and_latency(server, subjects) -> None:
    def sample(name: str, **labels: str) -> float:
        if name == "likeness_inference_batch_images_count":  # one series per number of distinct LoRAs
            return sum(REGISTRY.get_sample_value(name, {"adapters": a}) or 0.0 for a in ADAPTER_LABELS)
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "images": sample("likeness_inference_images_total", base_model="tiny-sd15"),
        "hits": sample("likeness_inference_subject_cache_hits_total"),
        "waits": sample("likeness_inference_queue_wait_seconds_count", base_model="tiny-sd15"),
        "latency": sample("likeness_inference_generation_seconds_count", base_model="tiny-sd15"),
        "batches": sample("likeness_inference_batch_images_count"),
    }
    generate(server, request(subject=subjects["lora"], num_images=2))
    generate(server, request(subject=subjects["lora"], num_images=1))
    assert sample("likeness_inference_images_total", base_model="tiny-sd15") - before["images"] == 3
    assert sample("likeness_inference_subject_cache_hits_total") - before["hits"] >= 1
    assert sample("likeness_inference_queue_wait_seconds_count", base_model="tiny-sd15") - before["waits"] == 2
    assert sample("likeness_inference_generation_seconds_count", base_model="tiny-sd15") - before["latency"] == 2
    assert sample("likeness_inference_batch_images_count") - before["batches"] == 2
    assert sample("likeness_inference_loaded_subjects") >= 1
    assert sample("likeness_inference_memory_bytes", kind="base") > 0
    assert sample("likeness_inference_memory_bytes", kind="subjects") > 0


@pytest.mark.parametrize(
    ("scheduler", "sampler"),
    [
        (types_pb2.SCHEDULER_DDIM, "DDIM"),
        (types_pb2.SCHEDULER_EULER, "Euler"),
        (types_pb2.SCHEDULER_DPM_SOLVER_MULTISTEP, "DPM++ 2M"),
        (types_pb2.SCHEDULER_UNI_PC, "UniPC"),
        (types_pb2.SCHEDULER_DDPM, "DDPM"),
    ],
)
def test_every_scheduler_runs(server, subjects, scheduler, sampler) -> None:
    stream = generate(server, request(subject=subjects["lora"], steps=3, scheduler=scheduler))
    assert f"Sampler: {sampler}," in read_parameters(stream.images[0])
