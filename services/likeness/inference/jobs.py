"""A generation request in flight, and the events it streams back.

The worker thread produces events; the gRPC servicer consumes them on the event loop. `EventSink` bridges the two
with `loop.call_soon_threadsafe`, so the worker never blocks on a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from likeness.errors import LikenessError
from likeness.inference.image_inputs import batch_key as image_batch_key
from likeness.inference.params import GenerationParams
from likeness.inference.previews import EncodedPreview


@dataclass(frozen=True)
class AcceptedEvent:
    request_id: str
    queue_position: int
    effective_prompt: str


@dataclass(frozen=True)
class ProgressEvent:
    step: int
    total_steps: int
    preview: EncodedPreview | None = None


@dataclass(frozen=True)
class ImageEvent:
    index: int
    data: bytes
    seed: int
    image_format: str
    width: int
    height: int


@dataclass(frozen=True)
class WarningEvent:
    message: str


@dataclass(frozen=True)
class SummaryEvent:
    num_images: int
    seeds: list[int]
    queue_ms: float
    load_ms: float
    denoise_ms: float
    decode_ms: float
    total_ms: float
    batch_size: int


@dataclass(frozen=True)
class FailedEvent:
    """The request ended with an error; the servicer raises it (domain errors map to their status)."""

    error: BaseException


Event = AcceptedEvent | ProgressEvent | ImageEvent | WarningEvent | SummaryEvent | FailedEvent
_END = object()


class EventSink:
    """Thread-safe producer side of an asyncio queue owned by one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._closed = threading.Event()

    def put(self, event: Event) -> None:
        """Deliver `event` (from any thread); dropped once the consumer has gone."""
        if self._closed.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:
            self._closed.set()  # the loop is closed: nobody is listening any more

    def finish(self) -> None:
        """No more events after this one (summary or failure sent)."""
        if not self._closed.is_set():
            # A closed loop means the consumer is gone already.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._queue.put_nowait, _END)
        self._closed.set()

    def close(self) -> None:
        """The consumer is gone: drop further events."""
        self._closed.set()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            yield item


@dataclass
class GenerationJob:
    """One admitted request: its parameters, where its events go, and whether it should stop."""

    request_id: str
    tenant: str
    base_model: str
    subject_model_id: str
    params: GenerationParams
    sink: EventSink
    deadline: float | None = None  # time.monotonic() value
    lora_scale_applies: bool = False
    # The subject models (subject, styles) not in the cache at admission: their load time is reported as load_ms.
    uncached_at_admission: set[str] = field(default_factory=set)
    accepted_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    load_seconds: float = 0.0
    denoise_seconds: float = 0.0
    decode_seconds: float = 0.0
    batch_size: int = 1
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _finish_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can be denoised in one pipeline call.

        LoRA subjects, styles, seeds, prompts, guidance and LoRA weights are per sample and stay out of the key; a
        full fine-tune runs its own UNet, so its id is in it.
        """
        p = self.params
        return (
            self.tenant,
            self.base_model,
            "" if self.lora_scale_applies else self.subject_model_id,
            p.width,
            p.height,
            p.steps,
            p.scheduler,
            # Classifier-free guidance runs for the whole batch or not at all (diffusers: guidance > 1).
            p.guidance_scale > 1,
            # diffusers zeroes SDXL's negative embedding only when no negative prompt is given at all.
            bool(p.negative_prompt),
            # img2img and inpainting share a batch at one strength (it decides which timesteps run).
            image_batch_key(p.image_input),
        )

    @property
    def lora_weights(self) -> list[tuple[str, float]]:
        """Every LoRA this request runs through, (subject model id, weight): its subject first, then `loras`."""
        subject = [(self.subject_model_id, self.params.lora_scale)] if self.lora_scale_applies else []
        return subject + list(self.params.loras)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def cancel(self) -> None:
        """The client cancelled or went away: stop work for it and drop its events."""
        self._cancelled.set()
        self.sink.close()

    def emit(self, event: Event) -> None:
        if not self.done:
            self.sink.put(event)

    def fail(self, error: LikenessError | BaseException) -> None:
        """End the request with `error` (once: later endings are ignored)."""
        self._finish(FailedEvent(error))

    def complete(self, summary: SummaryEvent) -> None:
        """End the request with its summary (once)."""
        self._finish(summary)

    def _finish(self, last: Event) -> None:
        # The worker (failures, deadlines) and the encoder thread (summaries) may race to end a request.
        with self._finish_lock:
            if self.done:
                return
            self._done.set()
        self.sink.put(last)
        self.sink.finish()

    @property
    def active(self) -> bool:
        """Still wanted: neither cancelled nor finished."""
        return not self.cancelled and not self.done
