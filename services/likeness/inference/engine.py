"""The inference core: admission, the GPU worker thread, and the model operations the API exposes.

One worker thread runs batches one after another (a GPU runs one denoising loop efficiently at a time; batching
is how concurrent requests share it). Admission runs on the caller's thread: it validates the request against the
subject's manifest and the base model, starts loading the subject in the background, and enqueues the job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from likeness.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, LikenessError, NotFound, Unavailable
from likeness.inference import metrics
from likeness.inference.artifacts import Artifact, list_artifacts
from likeness.inference.batching import RequestQueue
from likeness.inference.deletion import SubjectDeletion, delete_subject_model
from likeness.inference.gallery_link import GalleryLink
from likeness.inference.jobs import AcceptedEvent, EventSink, GenerationJob, WarningEvent
from likeness.inference.lora_import import ImportedLora, LoraImportRequest, LoraUpload, ModelRecords, import_lora
from likeness.inference.params import GenerationSpec, SubjectNames, validate
from likeness.inference.pipeline_runner import run_batch
from likeness.inference.repository import BaseStatus, ModelRepository, SubjectEntry, SubjectLease, SubjectStatus
from likeness.storage.base import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerStatus:
    base_models: list[BaseStatus]
    loaded_subjects: list[SubjectStatus]
    subject_cache_budget_bytes: int
    subject_cache_used_bytes: int
    queue_depth: int
    queue_capacity: int
    device: str


class InferenceEngine:
    """Admits generation requests, batches them and runs them on one worker thread."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        default_base_model: str,
        queue_capacity: int = 64,
        batch_window_s: float = 0.02,
        max_batch_images: int = 8,
        image_quota: Callable[[str, int], None] | None = None,
        model_records: ModelRecords | None = None,
    ) -> None:
        self.repository = repository
        #: Where imported LoRAs are recorded and counted against the subject-model quota (the control plane).
        self.model_records = model_records
        #: (tenant, images) -> None, raising ResourceExhausted over the tenant's images-per-minute quota.
        self.image_quota = image_quota
        self.default_base_model = default_base_model
        self.batch_window_s = batch_window_s
        self.max_batch_images = max_batch_images
        self.queue = RequestQueue(queue_capacity)
        # Encoding runs beside the worker so the GPU is not idle while a PNG compresses; one thread keeps
        # each request's images and summary in order.
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="likeness-encoder")
        self._worker = threading.Thread(target=self._work, name="likeness-inference-worker", daemon=True)
        self._running: list[GenerationJob] = []
        self._running_lock = threading.Lock()

    # ---- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker.start()

    def stop(self, grace_seconds: float) -> None:
        """Refuse new requests, let waiting and running ones finish within `grace_seconds`, then fail the rest."""
        self.queue.close()
        self._worker.join(grace_seconds)
        if self._worker.is_alive():
            for job in self.queue.take_all():
                job.fail(Unavailable("the inference service stopped before this request ran; retry"))
            with self._running_lock:
                running = list(self._running)
            for job in running:
                job.fail(Unavailable("the inference service stopped during generation; retry"))
                job.cancel()
            self._worker.join(5.0)
        self._encoder.shutdown(wait=True)
        self.repository.close()

    @property
    def running(self) -> list[GenerationJob]:
        """The jobs of the batch on the worker now."""
        with self._running_lock:
            return list(self._running)

    # ---- admission --------------------------------------------------------------------------------------

    def admit(
        self,
        spec: GenerationSpec,
        *,
        tenant: str,
        request_id: str,
        sink: EventSink,
        deadline: float | None = None,
    ) -> GenerationJob:
        """Validate, resolve and enqueue a request (blocking: may read storage and load a base model).

        The sink receives `AcceptedEvent` first, then any warnings, then the job's progress.
        """
        try:
            with self.queue.incoming():
                return self._admit(spec, tenant=tenant, request_id=request_id, sink=sink, deadline=deadline)
        except LikenessError:
            metrics.REQUESTS.labels("rejected").inc()
            raise

    def _admit(
        self,
        spec: GenerationSpec,
        *,
        tenant: str,
        request_id: str,
        sink: EventSink,
        deadline: float | None,
    ) -> GenerationJob:
        manifest = None
        if spec.subject_model_id:
            manifest = self.repository.manifest(tenant, spec.subject_model_id)
            if manifest.kind == "style":
                raise InvalidArgument(
                    f"{manifest.model_id!r} is a style, not a subject; name it in loras (with a weight) beside a "
                    "subject or alone",
                    field="subject_model_id",
                )
            if spec.base_model and spec.base_model != manifest.base_model:
                raise FailedPrecondition(
                    f"subject model {manifest.model_id!r} was trained on base model {manifest.base_model!r} and "
                    f"cannot be used with {spec.base_model!r}; leave base_model empty or name "
                    f"{manifest.base_model!r}",
                    field="base_model",
                )
            if manifest.base_model not in self.repository.catalog:
                raise FailedPrecondition(
                    f"subject model {manifest.model_id!r} was trained on base model {manifest.base_model!r}, "
                    f"which this server does not offer",
                    field="subject_model_id",
                )
            base_id = manifest.base_model
        else:
            base_id = spec.base_model or self.default_base_model
        base = self.repository.base(base_id)
        if manifest is not None and manifest.arch != base.arch:
            raise FailedPrecondition(
                f"subject model {manifest.model_id!r} is for {manifest.arch!r}, base model {base_id!r} is {base.arch!r}",
                field="subject_model_id",
            )
        subject = SubjectNames(manifest.identifier, manifest.class_noun) if manifest is not None else None
        params, warnings = validate(
            spec,
            arch=base.arch,
            info=base.info,
            base_model=base_id,
            subject=subject,
            count_tokens=base.count_tokens,
            max_tokens=base.max_tokens,
        )
        subject_is_full = manifest is not None and manifest.method != "lora"
        ranks = self._check_loras(tenant, params.loras, base_id, base.arch, subject_is_full=subject_is_full)
        if manifest is not None and manifest.lora_rank:
            ranks.append(manifest.lora_rank)
        capacity = self.repository.pool.compile_options
        if capacity is not None and sum(ranks) > capacity.rank_capacity:
            raise InvalidArgument(
                f"the subject and LoRAs add up to rank {sum(ranks)}, more than this server's compiled capacity of "
                f"{capacity.rank_capacity}; name fewer LoRAs (or the operator raises --compile-lora-rank)",
                field="loras",
            )
        if self.image_quota is not None:
            self.image_quota(tenant, params.num_images)
        job = GenerationJob(
            request_id=request_id,
            tenant=tenant,
            base_model=base_id,
            subject_model_id=spec.subject_model_id,
            params=params,
            sink=sink,
            deadline=deadline,
            lora_scale_applies=manifest is not None and manifest.method == "lora",
        )
        full_fine_tune = [manifest.model_id] if manifest is not None and not job.lora_scale_applies else []
        for model_id in [model_id for model_id, _ in job.lora_weights] + full_fine_tune:
            if not self.repository.prefetch(tenant, model_id):
                job.uncached_at_admission.add(model_id)

        def accepted(position: int) -> None:
            sink.put(AcceptedEvent(request_id, position, params.prompt))
            for message in warnings:
                sink.put(WarningEvent(message))

        self.queue.submit(job, accepted)
        return job

    def _check_loras(
        self, tenant: str, loras: tuple[tuple[str, float], ...], base_id: str, arch: str, *, subject_is_full: bool
    ) -> list[int]:
        """Each extra LoRA must be a LoRA subject model or style of `tenant` for this base model (blocking: reads
        manifests); returns their ranks. Problems are the request's: INVALID_ARGUMENT naming the list entry."""
        if loras and subject_is_full:
            raise InvalidArgument(
                "can only be combined with a LoRA subject model or the base model alone; the subject model is a full "
                "fine-tune",
                field="loras",
            )
        ranks = []
        for index, (lora_id, _) in enumerate(loras):
            field = f"loras[{index}].lora_id"
            try:
                manifest = self.repository.manifest(tenant, lora_id, field=field)
            except NotFound as exc:
                raise InvalidArgument(exc.message, field=field) from exc
            if manifest.method != "lora":
                raise InvalidArgument(f"{lora_id!r} is a full fine-tune, not a LoRA", field=field)
            if manifest.base_model != base_id or manifest.arch != arch:
                raise InvalidArgument(
                    f"{lora_id!r} was made for base model {manifest.base_model!r} ({manifest.arch}); this request "
                    f"generates with {base_id!r} ({arch})",
                    field=field,
                )
            ranks.append(manifest.lora_rank or 0)
        return ranks

    def cancel(self, job: GenerationJob) -> None:
        """The client cancelled or disconnected: drop the job from the queue, or stop it at the next step."""
        if job.done:
            return
        job.cancel()
        self.queue.remove(job)
        metrics.REQUESTS.labels("cancelled").inc()

    # ---- worker -------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self.queue.next_batch(self.max_batch_images, self.batch_window_s)
            if batch is None:
                return
            with self._running_lock:
                self._running = batch
            try:
                self._process(batch)
            except LikenessError as exc:
                for job in batch:
                    job.fail(exc)
                metrics.REQUESTS.labels("failed").inc(len(batch))
            except Exception as exc:  # a bug or a device error: report it and keep serving other requests
                log.exception("batch failed", extra={"requests": ",".join(job.request_id for job in batch)})
                for job in batch:
                    job.fail(exc)
                metrics.REQUESTS.labels("failed").inc(len(batch))
            finally:
                with self._running_lock:
                    self._running = []

    def _process(self, batch: list[GenerationJob]) -> None:
        jobs = []
        for job in batch:
            if not job.active:
                continue
            if job.expired:
                job.fail(DeadlineExceeded("the deadline passed while the request was queued; allow more time"))
                metrics.REQUESTS.labels("deadline_exceeded").inc()
                continue
            jobs.append(job)
        if not jobs:
            return
        head = jobs[0]
        base = self.repository.base(head.base_model)
        with contextlib.ExitStack() as pins:
            loras: dict[str, SubjectEntry] = {}
            # Pin every LoRA of the batch; a request whose LoRA cannot load fails alone, the rest still run.
            for model_id in sorted({model_id for job in jobs for model_id, _ in job.lora_weights}):
                try:
                    lease = pins.enter_context(self.repository.acquire(head.tenant, model_id))
                except LikenessError as exc:
                    for job in [job for job in jobs if any(m == model_id for m, _ in job.lora_weights)]:
                        job.fail(exc)
                        metrics.REQUESTS.labels("failed").inc()
                        jobs.remove(job)
                    continue
                loras[model_id] = lease.entry
                self._count_load(jobs, model_id, lease)
            full = None
            if jobs and not head.lora_scale_applies and head.subject_model_id:
                lease = pins.enter_context(self.repository.acquire(head.tenant, head.subject_model_id))
                full = lease.entry
                self._count_load(jobs, head.subject_model_id, lease)
            if jobs:
                run_batch(self.repository, base, full, loras, jobs, self._encoder)

    @staticmethod
    def _count_load(jobs: list[GenerationJob], model_id: str, lease: SubjectLease) -> None:
        """Report a subject's load time to the requests that waited for it."""
        for job in jobs:
            if lease.reloaded or model_id in job.uncached_at_admission:
                job.load_seconds = max(job.load_seconds, lease.entry.load_seconds)

    # ---- subject models and server status (what the API offers besides generation) ----------------------

    def list_subjects(
        self, tenant: str, *, base_model: str = "", loaded_only: bool = False, kind: str = ""
    ) -> list[SubjectStatus]:
        """Published subject models of `tenant` with their state, newest first; only subjects or only styles when
        `kind` names one."""
        statuses = self.repository.list_subjects(tenant, base_model=base_model, loaded_only=loaded_only)
        if not kind:
            return statuses
        return [status for status in statuses if status.manifest is not None and status.manifest.kind == kind]

    def lora_upload(self, request: LoraImportRequest) -> LoraUpload:
        """Check an import's header against the catalog and open the spool its file is written to."""
        request.check(self.repository.catalog.ids())
        return LoraUpload(request)

    def import_lora(self, tenant: str, upload: LoraUpload) -> ImportedLora:
        """Validate and publish an uploaded LoRA as a model of `tenant` (blocking; see `lora_import`)."""
        return import_lora(self.repository, tenant, upload, records=self.model_records)

    def get_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        """One subject model's status (reading storage for one not seen yet); NotFound if not published."""
        return self.repository.subject_status(tenant, model_id)

    def load_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        """Load (pre-warm) a subject model and wait for it."""
        return self.repository.load_subject(tenant, model_id)

    def unload_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        """Evict a subject model now (a batch using it finishes first)."""
        return self.repository.unload_subject(tenant, model_id)

    def delete_subject(self, gallery: GalleryLink, tenant: str, model_id: str) -> SubjectDeletion:
        """Delete a published subject model everywhere (see `deletion.delete_subject_model`)."""
        return delete_subject_model(self.repository, self.repository.storage, gallery, tenant, model_id)

    def subject_artifacts(self, tenant: str, model_id: str, kinds: frozenset[str] = frozenset()) -> list[Artifact]:
        """The files of one of `tenant`'s subject models, for download; NotFound if it is not published."""
        self.repository.subject_status(tenant, model_id)
        return list_artifacts(self.repository.storage, tenant, model_id, kinds)

    @property
    def storage(self) -> Storage:
        """The shared storage subject models are published to."""
        return self.repository.storage

    def sweep_deleted(self) -> list[tuple[str, str]]:
        """Forget the subjects deleted through other replicas; returns them."""
        return self.repository.sweep_deleted()

    def status(self) -> ServerStatus:
        repository = self.repository
        return ServerStatus(
            base_models=repository.base_statuses(),
            loaded_subjects=repository.loaded_subjects(),
            subject_cache_budget_bytes=repository.subject_budget_bytes,
            subject_cache_used_bytes=repository.used_bytes,
            queue_depth=self.queue.depth,
            queue_capacity=self.queue.capacity,
            device=str(repository.device),
        )
