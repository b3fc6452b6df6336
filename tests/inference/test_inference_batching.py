"""The bounded queue and dynamic batching, without models."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from likeness.errors import ResourceExhausted, Unavailable
from likeness.inference.batching import RequestQueue
from likeness.inference.jobs import EventSink, GenerationJob
from likeness.inference.params import GenerationParams

PARAMS = GenerationParams(
    prompt="a photo of sks dog",
    negative_prompt="",
    num_images=1,
    steps=4,
    guidance_scale=7.5,
    width=64,
    height=64,
    scheduler="default",
    seed=1,
    lora_scale=1.0,
    output_format="png",
    preview_every_n_steps=0,
)
LOOP = asyncio.new_event_loop()


def job(name: str, subject: str = "s1", *, lora: bool = True, **changes) -> GenerationJob:
    return GenerationJob(
        request_id=name,
        tenant="default",
        base_model="tiny-sd15",
        subject_model_id=subject,
        params=dataclasses.replace(PARAMS, **changes),
        sink=EventSink(LOOP),
        lora_scale_applies=lora,
    )


def test_full_queue_refuses_with_resource_exhausted_and_reports_positions() -> None:
    queue = RequestQueue(capacity=2)
    positions = []
    assert queue.submit(job("a"), positions.append) == 0
    assert queue.submit(job("b"), positions.append) == 1
    with pytest.raises(ResourceExhausted, match="queue is full"):
        queue.submit(job("c"), positions.append)
    assert positions == [0, 1] and queue.depth == 2


def test_compatible_requests_are_batched_and_others_keep_their_place() -> None:
    queue = RequestQueue(capacity=10)
    jobs = [
        job("a"),
        job("full-fine-tune", subject="s2", lora=False),  # runs its own UNet
        # Seeds, prompts, LoRA subjects and their scales, guidance and the bare base differ per sample.
        job("b", seed=99, prompt="another prompt", lora_scale=0.5),
        job("other-lora-subject", subject="s3", guidance_scale=9.0),
        job("no-subject", subject="", lora=False),
        job("no-guidance", guidance_scale=1.0),  # classifier-free guidance off: half the rows
        job("other-size", width=32),
        job("other-steps", steps=8),
        job("c", num_images=2),
    ]
    for item in jobs:
        queue.submit(item, lambda _: None)
    batch = queue.next_batch(max_images=8, window_s=0)
    assert [j.request_id for j in batch] == ["a", "b", "other-lora-subject", "no-subject", "c"]
    assert [j.request_id for j in queue.next_batch(8, 0)] == ["full-fine-tune"]
    assert [j.request_id for j in queue.next_batch(8, 0)] == ["no-guidance"]
    assert [j.request_id for j in queue.next_batch(8, 0)] == ["other-size"]


def test_batches_respect_the_image_limit() -> None:
    queue = RequestQueue(capacity=10)
    for name, count in (("a", 4), ("b", 3), ("c", 2), ("d", 1)):
        queue.submit(job(name, num_images=count), lambda _: None)
    assert [j.request_id for j in queue.next_batch(max_images=8, window_s=0)] == ["a", "b", "d"]
    assert [j.request_id for j in queue.next_batch(max_images=8, window_s=0)] == ["c"]


def test_the_window_waits_for_requests_being_admitted() -> None:
    queue = RequestQueue(capacity=10)
    queue.submit(job("a"), lambda _: None)
    announced = threading.Event()

    def admit_late() -> None:
        with queue.incoming():
            announced.set()
            time.sleep(0.05)
            queue.submit(job("late"), lambda _: None)

    late = threading.Thread(target=admit_late)
    late.start()
    assert announced.wait(5)
    batch = queue.next_batch(max_images=8, window_s=1.0)
    late.join()
    assert [j.request_id for j in batch] == ["a", "late"]


def test_a_lone_request_does_not_wait_for_the_window() -> None:
    queue = RequestQueue(capacity=10)
    queue.submit(job("a"), lambda _: None)
    started = time.monotonic()
    assert [j.request_id for j in queue.next_batch(max_images=8, window_s=5.0)] == ["a"]
    assert time.monotonic() - started < 1.0


def test_the_window_bounds_the_wait() -> None:
    queue = RequestQueue(capacity=10)
    queue.submit(job("a"), lambda _: None)
    with queue.incoming():  # announced but never arrives
        started = time.monotonic()
        assert len(queue.next_batch(max_images=8, window_s=0.2)) == 1
        assert 0.15 <= time.monotonic() - started < 2.0


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    queue = RequestQueue(capacity=10)
    queue.submit(job("a", num_images=4), lambda _: None)
    queue.submit(job("b", num_images=4), lambda _: None)
    started = time.monotonic()
    assert len(queue.next_batch(max_images=8, window_s=5.0)) == 2
    assert time.monotonic() - started < 1.0


def test_removed_jobs_free_their_slot_and_close_drains() -> None:
    queue = RequestQueue(capacity=1)
    first = job("a")
    queue.submit(first, lambda _: None)
    assert queue.remove(first) and not queue.remove(first)
    queue.submit(job("b"), lambda _: None)
    queue.close()
    with pytest.raises(Unavailable):
        queue.submit(job("c"), lambda _: None)
    assert [j.request_id for j in queue.next_batch(8, 0)] == ["b"]  # waiting work still drains
    assert queue.next_batch(8, 0) is None
