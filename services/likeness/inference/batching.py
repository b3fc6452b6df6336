"""The bounded request queue and dynamic batching.

Requests wait in arrival order. When the worker is free it takes the oldest request and every waiting request
with the same batch key (same tenant, base model, subject, size, steps, scheduler, guidance, LoRA scale; see
`GenerationJob.batch_key`) up to `max_batch_images` images. While other requests are still being admitted
(validated, their subject looked up) it waits up to `batch_window_s` for them to arrive, like Triton's dynamic
batcher with `max_queue_delay`; when none are on their way it runs at once, so a lone request pays no delay.
Incompatible requests keep their place and run in later batches.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from likeness.errors import ResourceExhausted, Unavailable
from likeness.inference import metrics
from likeness.inference.jobs import GenerationJob


class RequestQueue:
    """At most `capacity` waiting requests (RESOURCE_EXHAUSTED beyond), grouped into batches on demand."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._waiting: deque[GenerationJob] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._incoming = 0

    @property
    def depth(self) -> int:
        with self._condition:
            return len(self._waiting)

    def submit(self, job: GenerationJob, on_enqueued: Callable[[int], None]) -> int:
        """Enqueue `job` and return how many requests are ahead of it.

        `on_enqueued(position)` runs before the worker can see the job, so the "accepted" event precedes any
        progress of it.
        """
        with self._condition:
            if self._closed:
                raise Unavailable("the inference service is shutting down; retry on another replica")
            if len(self._waiting) >= self.capacity:
                raise ResourceExhausted(
                    f"the generation queue is full ({self.capacity} requests waiting); retry after a short delay"
                )
            position = len(self._waiting)
            on_enqueued(position)
            self._waiting.append(job)
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            self._condition.notify_all()
            return position

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Marks a request being admitted, so a forming batch waits for it (within the window)."""
        with self._condition:
            self._incoming += 1
        try:
            yield
        finally:
            with self._condition:
                self._incoming -= 1
                self._condition.notify_all()

    def remove(self, job: GenerationJob) -> bool:
        """Take a waiting job out (it was cancelled); False when it already left the queue."""
        with self._condition:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            return True

    def close(self) -> None:
        """Refuse new requests; the worker still drains the waiting ones (see `take_all`)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def take_all(self) -> list[GenerationJob]:
        """Empty the queue and return the jobs that were waiting (to fail them at a forced stop)."""
        with self._condition:
            left = list(self._waiting)
            self._waiting.clear()
            metrics.QUEUE_DEPTH.set(0)
            self._condition.notify_all()
            return left

    def next_batch(self, max_images: int, window_s: float) -> list[GenerationJob] | None:
        """Block until work arrives; return the next batch, or None once the queue is closed and empty."""
        with self._condition:
            while not self._waiting and not self._closed:
                self._condition.wait()
            if not self._waiting:
                return None
            head = self._waiting.popleft()
            batch = [head]
            images = head.params.num_images
            key = head.batch_key
            window_ends = time.monotonic() + window_s
            while True:
                images = self._take_compatible(batch, key, images, max_images)
                remaining = window_ends - time.monotonic()
                if images >= max_images or remaining <= 0 or self._closed or self._incoming == 0:
                    break
                self._condition.wait(remaining)
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            return batch

    def _take_compatible(self, batch: list[GenerationJob], key: tuple, images: int, max_images: int) -> int:
        for job in list(self._waiting):
            if job.batch_key == key and images + job.params.num_images <= max_images:
                self._waiting.remove(job)
                batch.append(job)
                images += job.params.num_images
        return images
