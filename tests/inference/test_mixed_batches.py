"""Mixed-subject batches, LoRA composition and image inputs through the real gRPC service (tiny models).

Tolerance: an image of a mixed batch may differ from the same request run alone by at most 2 levels of 8 bits per
channel (batched matrix products round differently); measured 0-1.
"""

from __future__ import annotations

import io
import json
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from inference_helpers import read_stream, request
from PIL import Image

from likeness.inference.testing import LORA_FILE, publish_full_subject, publish_lora_subject
from likeness.storage.layout import model_prefix
from likeness_client.v1 import inference_service_pb2 as pb

TOLERANCE = 2  # 8-bit levels, see the module doc


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def generate(server, req: pb.GenerateImagesRequest):
    return read_stream(server.stub.GenerateImages(req, timeout=120))


def generate_together(server, requests: list[pb.GenerateImagesRequest], base_model: str = "tiny-sd15") -> list:
    """Run `requests` as one batch and return their streams in order.

    The worker is held on a first request (the base model's lock is taken here) until all of `requests` wait in the
    queue, as they would behind a busy GPU; then they form the next batch.
    """
    streams: list = [None] * len(requests)
    errors: list[BaseException] = []
    engine = server.engine
    base = engine.repository.base(base_model)

    def send(index: int, req: pb.GenerateImagesRequest) -> None:
        try:
            result = generate(server, req)
            if index >= 0:
                streams[index] = result
        except grpc.RpcError as exc:  # collected for the assertion
            errors.append(exc)

    with base.lock:
        blocker = threading.Thread(
            target=send, args=(-1, request(prompt="a blocker", seed=0, steps=1, base_model=base_model))
        )
        blocker.start()
        _wait_for(lambda: engine.running)
        threads = [threading.Thread(target=send, args=(index, req)) for index, req in enumerate(requests)]
        for thread in threads:
            thread.start()
        _wait_for(lambda: engine.queue.depth == len(requests))
    for thread in [blocker, *threads]:
        thread.join(120)
    assert errors == []
    return streams


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def with_loras(req: pb.GenerateImagesRequest, *loras: tuple[str, float]) -> pb.GenerateImagesRequest:
    req.loras.extend(pb.LoraWeight(lora_id=lora_id, weight=weight) for lora_id, weight in loras)
    return req


@pytest.mark.parametrize(("base_model", "arch"), [("tiny-sd15", "sd15"), ("tiny-sdxl", "sdxl")])
def test_each_image_of_a_mixed_batch_equals_its_subject_alone(server, base_model, arch) -> None:
    subjects = [
        publish_lora_subject(server.storage, base_model=base_model, arch=arch, seed=20 + index).model_id
        for index in range(4)
    ]
    requests = [
        request(subject=subject, seed=7 + index, steps=3, guidance_scale=4.0 + index, lora_scale=0.6 + 0.2 * index)
        for index, subject in enumerate(subjects)
    ]
    together = generate_together(server, requests, base_model)
    assert [stream.summary.batch_size for stream in together] == [4] * 4
    alone = [generate(server, req) for req in requests]
    for mixed, single in zip(together, alone, strict=True):
        assert single.summary.batch_size == 1
        difference = np.abs(pixels(mixed.images[0]) - pixels(single.images[0])).max()
        assert difference <= TOLERANCE
    # And the subjects did differ: each one's image is its own.
    assert np.abs(pixels(alone[0].images[0]) - pixels(alone[1].images[0])).max() > 20


def test_composition_matches_diffusers_set_adapters(server, catalog, tmp_path) -> None:
    subject = publish_lora_subject(server.storage, seed=31, rank=4).model_id
    style = publish_lora_subject(server.storage, seed=32, rank=8).model_id
    base_only_peer = request(prompt="a photo of a car", seed=3, steps=3)
    composed = with_loras(request(subject=subject, seed=5, steps=3, lora_scale=0.8, guidance_scale=6.0), (style, -0.5))
    streams = generate_together(server, [composed, base_only_peer])
    assert streams[0].summary.batch_size == 2  # the request without a subject rode in the same batch

    pipeline = catalog.load("tiny-sd15", device="cpu", dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    for name, model_id in (("subject", subject), ("style", style)):
        folder = server.storage.materialize(model_prefix("default", model_id))
        pipeline.load_lora_weights(str(folder), weight_name=LORA_FILE, adapter_name=name)
    pipeline.set_adapters(["subject", "style"], [0.8, -0.5])
    expected = pipeline(
        streams[0].accepted.effective_prompt,
        num_inference_steps=3,
        guidance_scale=composed.parameters.guidance_scale,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    difference = np.abs(pixels(streams[0].images[0]) - np.asarray(expected, dtype=np.int16)).max()
    assert difference <= TOLERANCE


def test_bad_lora_lists_are_refused_and_the_batch_is_unaffected(server) -> None:
    subject = publish_lora_subject(server.storage, seed=41).model_id
    sdxl_style = publish_lora_subject(server.storage, base_model="tiny-sdxl", arch="sdxl", seed=42).model_id
    full = publish_full_subject(server.storage).model_id
    other_tenant = publish_lora_subject(server.storage, seed=43, tenant="someone-else").model_id
    cases = [
        ((("model-unknown", 1.0),), "loras[0].lora_id"),
        (((other_tenant, 1.0),), "loras[0].lora_id"),
        (((sdxl_style, 1.0),), "loras[0].lora_id"),
        (((full, 1.0),), "loras[0].lora_id"),
        (((subject, 2.5),), "loras[0].weight"),
        (tuple((subject, 0.1) for _ in range(5)), "loras"),
    ]
    good = request(subject=subject, seed=1, steps=3)
    for loras, field in cases:
        bad = with_loras(request(prompt="a photo of a dog", seed=1, steps=3), *loras)
        results: dict[str, object] = {}

        def send_good(results: dict[str, object] = results) -> None:
            results["good"] = generate(server, good)

        thread = threading.Thread(target=send_good)
        thread.start()
        with pytest.raises(grpc.RpcError) as caught:
            generate(server, bad)
        thread.join(120)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert caught.value.details().startswith(field), caught.value.details()
        assert results["good"].summary.num_images == 1

    # A style is applied through loras; as the subject it is refused, naming the field.
    manifest_key = f"{model_prefix('default', subject)}/manifest.json"
    manifest = json.loads(server.storage.read_bytes(manifest_key))
    style = publish_lora_subject(server.storage, seed=44).model_id
    style_key = f"{model_prefix('default', style)}/manifest.json"
    server.storage.write_bytes(style_key, json.dumps(manifest | {"model_id": style, "kind": "style"}).encode())
    with pytest.raises(grpc.RpcError) as caught:
        generate(server, request(prompt="a photo of a dog", subject=style))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("subject_model_id")
    styled = generate(server, with_loras(request(subject=subject, seed=1, steps=3), (style, 0.7)))
    assert styled.summary.num_images == 1


def test_img2img_and_inpainting_with_a_subject_share_the_base(server) -> None:
    subject = publish_lora_subject(server.storage, seed=51).model_id
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))

    def png(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    img2img = request(subject=subject, seed=2, steps=4)
    img2img.init_image, img2img.strength = png(init), 0.5
    inpaint = request(subject=subject, seed=2, steps=4)
    inpaint.init_image, inpaint.mask_image, inpaint.strength = png(init), png(mask), 0.9
    first, second = generate(server, img2img), generate(server, inpaint)
    assert pixels(first.images[0]).shape == (64, 64, 3) and len(second.images) == 1
    assert first.progress[-1].total_steps == 2  # strength 0.5 of 4 steps
    # Inpainting keeps the unmasked border close to the input (one VAE round trip away).
    border = np.abs(pixels(second.images[0]) - np.asarray(init, dtype=np.int16))[:8].mean()
    inside = np.abs(pixels(second.images[0]) - np.asarray(init, dtype=np.int16))[24:40, 24:40].mean()
    assert border < inside

    bad_mask = request(subject=subject, seed=2, steps=4)
    bad_mask.init_image, bad_mask.mask_image = png(init), png(init)  # RGB, not single-channel
    results: dict[str, object] = {}
    thread = threading.Thread(target=lambda: results.setdefault("good", generate(server, img2img)))
    thread.start()
    with pytest.raises(grpc.RpcError) as caught:
        generate(server, bad_mask)
    thread.join(120)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("mask_image")
    assert pixels(results["good"].images[0]).tolist() == pixels(first.images[0]).tolist()
