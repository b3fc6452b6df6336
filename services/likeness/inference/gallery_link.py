"""The inference side of the gallery: recording generated images, and turning a gallery entry into a request.

Inference writes straight to the gallery's store (the control-plane database and shared storage), so an
image is searchable from every gallery replica the moment its last chunk is sent.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.errors import InvalidArgument
from likeness.gallery.query import SUBJECT_PLACEHOLDER
from likeness.gallery.records import SCHEDULERS, PromptRecord, PromptSource, validate_tags
from likeness.gallery.store import PromptStore
from likeness.inference.jobs import GenerationJob, ImageEvent
from likeness.inference.params import GenerationSpec
from likeness.storage.base import Storage

log = logging.getLogger(__name__)


class GalleryLink:
    """Opens the gallery store on first use, so a server that never records or remixes never connects."""

    def __init__(self, database_url: str, storage: Callable[[], Storage], *, record_by_default: bool) -> None:
        self._database_url = database_url
        self._storage = storage
        self.record_by_default = record_by_default
        self._store: PromptStore | None = None
        self._lock = threading.Lock()

    def store(self) -> PromptStore:
        with self._lock:
            if self._store is None:
                database = Database(self._database_url)
                migrate(database)  # a no-op when the trainer or gallery already migrated it
                self._store = PromptStore(database, self._storage())
            return self._store

    def database(self) -> Database:
        """The control-plane database (opened with the store)."""
        return self.store().database

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.database.dispose()
                self._store = None

    def wants_recording(self, requested: bool | None) -> bool:
        """The request's choice, or the server default when it made none."""
        return self.record_by_default if requested is None else requested

    @staticmethod
    def check_tags(tags: Sequence[str]) -> list[str]:
        """Checked before generating, so bad tags fail the request instead of losing its images' record."""
        return validate_tags(list(tags), "gallery_tags")

    def remix(self, tenant: str, spec: GenerationSpec, prompt_id: str) -> GenerationSpec:
        """`spec` with the entry's prompt, negative prompt and parameters; what the request set wins.

        The entry's `{subject}` placeholder takes the request's subject; an entry without one gets the subject
        in front ("{subject}, <prompt>"), so the composition is kept and the subject appears in it.
        """
        if spec.prompt.strip():
            raise InvalidArgument("must be empty with remix_prompt_id (the entry's prompt is used)", field="prompt")
        entry = self.store().get(tenant, prompt_id)
        return remixed_spec(spec, entry)

    def record(self, job: GenerationJob, spec: GenerationSpec, event: ImageEvent, tags: Sequence[str]) -> str:
        """Record one finished image with the parameters that reproduce it; returns the entry's id."""
        params: dict[str, Any] = {
            "steps": job.params.steps,
            "guidance": job.params.guidance_scale,
            "width": event.width,
            "height": event.height,
            "seed": event.seed,
        }
        if job.params.scheduler in SCHEDULERS:
            params["scheduler"] = job.params.scheduler
        if job.subject_model_id and job.lora_scale_applies:
            params["lora_scale"] = job.params.lora_scale
        outcome = self.store().record(
            job.tenant,
            spec.prompt,
            negative_prompt=job.params.negative_prompt,
            base_model=job.base_model,
            params=params,
            tags=tags,
            subject_model_id=job.subject_model_id,
            image=event.data,
            source=PromptSource.GENERATION,
        )
        return outcome.record.prompt_id


def remixed_spec(spec: GenerationSpec, entry: PromptRecord) -> GenerationSpec:
    prompt = entry.prompt
    if spec.subject_model_id and SUBJECT_PLACEHOLDER not in prompt:
        prompt = f"{SUBJECT_PLACEHOLDER}, {prompt}"
    params = entry.params
    return dataclasses.replace(
        spec,
        prompt=prompt,
        negative_prompt=spec.negative_prompt or entry.negative_prompt,
        num_inference_steps=spec.num_inference_steps if spec.num_inference_steps is not None else params.get("steps"),
        guidance_scale=spec.guidance_scale if spec.guidance_scale is not None else params.get("guidance"),
        width=spec.width if spec.width is not None else params.get("width"),
        height=spec.height if spec.height is not None else params.get("height"),
        scheduler=spec.scheduler if spec.scheduler != "default" else params.get("scheduler", "default"),
        seed=spec.seed if spec.seed is not None else params.get("seed"),
        # A subject model brings its own base model; the entry's applies to a remix without one.
        base_model=spec.base_model or ("" if spec.subject_model_id else entry.base_model),
    )
