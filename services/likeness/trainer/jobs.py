"""Training jobs: records in shared storage, a bounded FIFO queue, one worker process per device, recovery.

Life of a job: CreateTrainingJob validates the spec (nothing is written for a bad one), writes `job.json` in state
QUEUED and appends it to the queue (RESOURCE_EXHAUSTED when `queue_capacity` jobs already wait). A runner thread
per device takes the oldest queued job, marks it RUNNING and runs `likeness.trainer.worker` for it in a child
process, turning the worker's reports into the job's events and record. The job ends SUCCEEDED (the subject model
is published), FAILED (with the error) or CANCELLED.

Everything needed to continue lives in storage, so a restarted trainer recovers: RUNNING jobs go back to the front
of the queue and resume from their last checkpoint, QUEUED jobs stay queued in creation order. On a clean stop the
running workers are preempted (they checkpoint their current step) and their jobs stay RUNNING for the next start.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTokenizer

from likeness.dataset.options import PhotoInput, PrepareOptions
from likeness.dataset.prepare import prepare_photos
from likeness.dataset.publish import load_dataset_manifest, publish_dataset
from likeness.dataset.report import summarize_rejections
from likeness.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from likeness.models.catalog import BaseModelCatalog, BaseModelSpec
from likeness.storage.base import Storage
from likeness.storage.layout import (
    TENANTS_PREFIX,
    dataset_prefix,
    job_record_key,
    jobs_prefix,
    new_id,
    validate_resource_id,
)
from likeness.storage.manifest import utc_now_rfc3339
from likeness.trainer import events as ev
from likeness.trainer import metrics
from likeness.trainer.config import TrainingConfig
from likeness.trainer.identifier import check_identifier, choose_identifier
from likeness.trainer.training.loop import resolve_mixed_precision
from likeness.trainer.worker import parse_event_line

log = logging.getLogger("likeness.trainer.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
MAX_IDEMPOTENCY_KEY = 128
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
#: How long a cancelled or preempted worker may take to stop before it is killed.
STOP_GRACE_SECONDS = 20.0
ERROR_TAIL_LINES = 20
RECORD_FORMAT = 1


@dataclass
class JobRecord:
    """`job.json`: one job's spec (the resolved config), state and outcome."""

    job_id: str
    tenant: str
    state: str
    config: dict[str, Any]
    #: Id the subject model is published under; reserved at creation so a re-run job finds its own model.
    model_id: str
    create_time: str
    idempotency_key: str = ""
    start_time: str = ""
    end_time: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    #: The published model's manifest plus `size_bytes`, once the job succeeded.
    subject_model: dict[str, Any] | None = None
    error: str = ""
    last_checkpoint_step: int = 0
    resume_count: int = 0
    format_version: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @property
    def training_config(self) -> TrainingConfig:
        return TrainingConfig.from_dict(self.config)


@dataclass(frozen=True)
class DeviceSlot:
    """One device a runner thread trains on: its name, the worker's `--device`, and extra environment."""

    name: str
    worker_device: str
    env: Mapping[str, str] = field(default_factory=dict)


def device_slots(setting: str) -> list[DeviceSlot]:
    """The devices of the `device` setting: every visible GPU for "cuda"/"auto" with GPUs, else the CPU."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        if setting == "auto" and torch.backends.mps.is_available():
            return [DeviceSlot("mps", "mps")]
        return [DeviceSlot("cpu", "cpu")]
    if setting == "mps":
        return [DeviceSlot("mps", "mps")]
    if setting.startswith("cuda:"):
        index = setting.split(":", 1)[1]
        return [DeviceSlot(setting, "cuda", {"CUDA_VISIBLE_DEVICES": index})]
    count = torch.cuda.device_count()
    if count == 0:
        raise FailedPrecondition(f"device {setting!r} asks for CUDA but no GPU is visible; use --device cpu")
    return [DeviceSlot(f"cuda:{i}", "cuda", {"CUDA_VISIBLE_DEVICES": str(i)}) for i in range(count)]


@dataclass
class WorkerOptions:
    """How runner threads start job workers."""

    storage_url: str
    base_models: str
    cache_dir: str
    progress_interval_seconds: float = 1.0
    metric_hooks: Sequence[str] = ()
    #: Processes per job (data-parallel over that many devices via `accelerate launch`); 1 runs one process.
    processes_per_job: int = 1
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "likeness-trainer")


@dataclass
class _Running:
    """A job a runner is executing."""

    record: JobRecord
    slot: DeviceSlot
    stop_file: Path
    process: subprocess.Popen | None = None
    stop_reason: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class JobManager:
    """Creates, lists and cancels jobs, runs them on devices, and recovers them after a restart."""

    def __init__(
        self,
        storage: Storage,
        catalog: BaseModelCatalog,
        worker: WorkerOptions,
        *,
        slots: Sequence[DeviceSlot],
        queue_capacity: int = 16,
        default_base_model: str = "",
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.worker = worker
        self.slots = list(slots)
        self.queue_capacity = queue_capacity
        self.default_base_model = default_base_model
        self.events = ev.EventHub(storage)
        self._lock = threading.Condition()
        self._jobs: dict[tuple[str, str], JobRecord] = {}
        self._by_idempotency_key: dict[tuple[str, str], str] = {}
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._running: dict[tuple[str, str], _Running] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._tokenizers: dict[str, list[CLIPTokenizer]] = {}

    # ---- start-up and shutdown ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Loads every job record: RUNNING jobs are queued first (to resume), QUEUED ones after, oldest first."""
        resumed, queued = [], []
        for tenant in self.storage.list_dirs(TENANTS_PREFIX):
            try:
                names = self.storage.list_dirs(jobs_prefix(tenant))
            except InvalidArgument:
                continue  # not a tenant folder
            for job_id in names:
                key = job_record_key(tenant, job_id)
                if not self.storage.exists(key):
                    continue
                record = JobRecord.from_dict(self.storage.read_json(key))
                self._jobs[(tenant, job_id)] = record
                if record.idempotency_key:
                    self._by_idempotency_key[(tenant, record.idempotency_key)] = job_id
                if record.state == RUNNING:
                    resumed.append(record)
                elif record.state == QUEUED:
                    queued.append(record)
        with self._lock:
            for record in sorted(resumed, key=lambda r: r.job_id) + sorted(queued, key=lambda r: r.job_id):
                self._queue.append((record.tenant, record.job_id))
        if resumed or queued:
            log.info("recovered jobs", extra={"resuming": len(resumed), "queued": len(queued)})
        self._update_gauges()

    def start(self) -> None:
        """Starts one runner thread per device."""
        for slot in self.slots:
            thread = threading.Thread(target=self._runner, args=(slot,), name=f"trainer-{slot.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_seconds: float) -> None:
        """Preempts running jobs (they checkpoint and stay RUNNING for the next start) and stops the runners."""
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
            self._lock.notify_all()
        for job in running:
            self._signal_stop(job, "preempt")
        deadline = time.monotonic() + max(grace_seconds, 0.0)
        for job in running:
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                self._kill(job)
        for thread in self._threads:
            thread.join(timeout=5.0)

    # ---- creating jobs -----------------------------------------------------------------------------------

    def tokenizers(self, spec: BaseModelSpec) -> list[CLIPTokenizer]:
        """The base model's tokenizer(s), loaded from its folder (no weights) and cached."""
        if spec.id not in self._tokenizers:
            folder = spec.config_dir if spec.source.is_file() else spec.source
            if folder is None:
                raise FailedPrecondition(f"base model {spec.id!r} is a single file without a config folder")
            names = ["tokenizer", "tokenizer_2"] if spec.info.two_text_encoders else ["tokenizer"]
            self._tokenizers[spec.id] = [
                CLIPTokenizer.from_pretrained(str(folder / name), local_files_only=True) for name in names
            ]
        return self._tokenizers[spec.id]

    def validate_spec(
        self, tenant: str, spec: Mapping[str, Any], *, inline_photos: bool
    ) -> tuple[TrainingConfig, BaseModelSpec]:
        """Turns a spec into a resolved config, checking everything that needs no photos; writes nothing."""
        spec = dict(spec)
        spec["base_model"] = (spec.get("base_model") or self.default_base_model or "").strip()
        if not spec["base_model"]:
            raise InvalidArgument("must name a base model", field="spec.base_model")
        try:
            base = self.catalog.resolve(spec["base_model"])
        except NotFound as error:
            raise InvalidArgument(error.message.split(": ", 1)[-1], field="spec.base_model") from error
        class_noun = (spec.get("class_noun") or "").strip()
        if not class_noun:
            raise InvalidArgument(
                "must name the subject's class, for example 'dog' or 'person'", field="spec.class_noun"
            )
        tokenizers = self.tokenizers(base)
        identifier = (spec.get("identifier") or "").strip()
        if identifier:
            identifier = check_identifier(identifier, tokenizers, class_noun=class_noun)
        else:
            identifier = choose_identifier(tokenizers, class_noun=class_noun)
        config = TrainingConfig.from_spec(spec, identifier=identifier)
        if inline_photos and config.dataset_id:
            raise InvalidArgument("leave empty when photos are sent inline", field="spec.dataset_id")
        if not inline_photos:
            if not config.dataset_id:
                raise InvalidArgument("name a prepared dataset, or send photos inline", field="spec.dataset_id")
            validate_resource_id(config.dataset_id, field="spec.dataset_id")
            manifest = load_dataset_manifest(self.storage, tenant, config.dataset_id)
            if not config.resolution:
                config.resolution = manifest.resolution
        if config.prior.enabled and config.prior.class_dataset_id:
            validate_resource_id(config.prior.class_dataset_id, field="spec.prior_preservation.class_dataset_id")
            try:
                load_dataset_manifest(self.storage, tenant, config.prior.class_dataset_id)
            except NotFound as error:
                raise NotFound(error.message, field="spec.prior_preservation.class_dataset_id") from error
        info = base.info
        if config.resolution and not (
            info.min_resolution <= config.resolution <= info.max_resolution
            and config.resolution % info.resolution_multiple == 0
        ):
            raise InvalidArgument(
                f"{config.resolution} px is outside {base.id}'s range {info.min_resolution}-{info.max_resolution} "
                f"(multiples of {info.resolution_multiple})",
                field="spec.hyperparameters.resolution",
            )
        for slot in self.slots:
            resolve_mixed_precision(config.mixed_precision, torch.device(slot.worker_device))
        return config, base

    def create_job(
        self,
        tenant: str,
        spec: Mapping[str, Any],
        *,
        idempotency_key: str = "",
        photos: Sequence[PhotoInput] = (),
        dataset_options: PrepareOptions | None = None,
        dataset_name: str = "",
    ) -> tuple[JobRecord, bool]:
        """Queues a job; returns (record, existing). `existing` is True when the idempotency key matched."""
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument(f"must be at most {MAX_IDEMPOTENCY_KEY} characters", field="idempotency_key")
        if self._stopping:
            raise Unavailable("the trainer is shutting down; retry on another replica")
        existing = self._existing(tenant, idempotency_key)
        if existing is not None:
            return existing, True
        config, base = self.validate_spec(tenant, spec, inline_photos=bool(photos))
        self._check_capacity()
        dataset_id = ""
        if photos:
            options = dataset_options or PrepareOptions(resolution=config.resolution or base.resolution)
            prepared = prepare_photos(list(photos), options)
            if prepared.rejected:
                raise InvalidArgument(
                    f"{len(prepared.rejected)} of {len(photos)} photos cannot be used: "
                    f"{summarize_rejections(prepared.reports)}",
                    field="photos",
                )
            if dataset_name:
                prepared.options["display_name"] = dataset_name
            dataset_id = publish_dataset(self.storage, tenant, prepared, options, source="inline").dataset_id
            config.dataset_id = dataset_id
            config.resolution = config.resolution or options.resolution
        with self._lock:
            existing = self._existing(tenant, idempotency_key)
            refusal: ResourceExhausted | None = None
            if existing is None:
                try:
                    self._check_capacity()
                except ResourceExhausted as error:
                    refusal = error
            if existing is None and refusal is None:
                record = JobRecord(
                    job_id=new_id("job"),
                    tenant=tenant,
                    state=QUEUED,
                    config=config.to_dict(),
                    model_id=new_id("sm"),
                    create_time=utc_now_rfc3339(),
                    idempotency_key=idempotency_key,
                )
                self._save(record)
                self._jobs[(tenant, record.job_id)] = record
                if idempotency_key:
                    self._by_idempotency_key[(tenant, idempotency_key)] = record.job_id
                self.events.append(tenant, record.job_id, ev.STATE_CHANGED, state=QUEUED, message="")
                self._queue.append((tenant, record.job_id))
                self._lock.notify_all()
        if existing is not None or refusal is not None:
            # A concurrent call with the same key won, or the queue filled up while the photos were prepared.
            self._discard_dataset(tenant, dataset_id)
            if refusal is not None:
                raise refusal
            return existing, True
        log.info("job queued", extra={"job_id": record.job_id, "base_model": config.base_model})
        self._update_gauges()
        return record, False

    def _existing(self, tenant: str, idempotency_key: str) -> JobRecord | None:
        job_id = self._by_idempotency_key.get((tenant, idempotency_key)) if idempotency_key else None
        return self._jobs.get((tenant, job_id)) if job_id else None

    def _check_capacity(self) -> None:
        waiting = sum(1 for key in self._queue if self._jobs[key].state == QUEUED)
        if waiting >= self.queue_capacity:
            raise ResourceExhausted(
                f"the training queue is full ({waiting} jobs waiting, capacity {self.queue_capacity}); retry later"
            )

    def _discard_dataset(self, tenant: str, dataset_id: str) -> None:
        if dataset_id:
            self.storage.delete_prefix(dataset_prefix(tenant, dataset_id))

    # ---- reading and cancelling --------------------------------------------------------------------------

    def get_job(self, tenant: str, job_id: str) -> JobRecord:
        record = self._jobs.get((tenant, job_id))
        if record is None:
            raise NotFound(f"training job {job_id!r} does not exist", field="job_id")
        return record

    def queue_position(self, record: JobRecord) -> int:
        """1 for the next job to run, 0 when not queued."""
        if record.state != QUEUED:
            return 0
        with self._lock:
            waiting = [key for key in self._queue if self._jobs[key].state == QUEUED]
        key = (record.tenant, record.job_id)
        return waiting.index(key) + 1 if key in waiting else 0

    def queued_job_ids(self) -> list[str]:
        """Ids of the jobs waiting to run (recovered RUNNING ones included), next first."""
        with self._lock:
            return [key[1] for key in self._queue if self._jobs[key].state in (QUEUED, RUNNING)]

    def last_sequence(self, record: JobRecord) -> int:
        return self.events.last_sequence(record.tenant, record.job_id)

    def list_jobs(
        self, tenant: str, states: Sequence[str] = (), page_size: int = 0, page_token: str = ""
    ) -> tuple[list[JobRecord], str]:
        """Jobs newest first, optionally of some states; returns (page, next page token)."""
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})", field="page_size"
            )
        size = page_size or DEFAULT_PAGE_SIZE
        before = _decode_token(page_token) if page_token else None
        wanted = set(states)
        records = sorted(
            (r for (t, _), r in list(self._jobs.items()) if t == tenant and (not wanted or r.state in wanted)),
            key=lambda r: r.job_id,
            reverse=True,
        )
        if before is not None:
            records = [r for r in records if r.job_id < before]
        page = records[:size]
        token = _encode_token(page[-1].job_id) if len(records) > size else ""
        return page, token

    def cancel_job(self, tenant: str, job_id: str, *, wait_seconds: float = STOP_GRACE_SECONDS) -> JobRecord:
        """Cancels a queued job at once, a running one within one step (killed if it does not stop in time)."""
        with self._lock:
            record = self.get_job(tenant, job_id)
            if record.state in TERMINAL:
                return record
            running = self._running.get((tenant, job_id))
            if running is None:
                with contextlib.suppress(ValueError):
                    self._queue.remove((tenant, job_id))
                self._finish(record, CANCELLED, "cancelled by a caller before it started")
                return record
        self._signal_stop(running, "cancel")
        if not running.done.wait(wait_seconds):
            self._kill(running)
            running.done.wait(5.0)
        return record

    # ---- running jobs ------------------------------------------------------------------------------------

    def _next_job(self) -> JobRecord | None:
        with self._lock:
            while not self._stopping:
                while self._queue:
                    record = self._jobs[self._queue.popleft()]
                    if record.state in (QUEUED, RUNNING):
                        return record
                self._lock.wait()
            return None

    def _runner(self, slot: DeviceSlot) -> None:
        while True:
            record = self._next_job()
            if record is None:
                return
            try:
                self._run(record, slot)
            except Exception as error:
                log.exception("job runner failed", extra={"job_id": record.job_id})
                if record.state not in TERMINAL:
                    self._finish(record, FAILED, f"internal error while running the job: {error}")

    def _run(self, record: JobRecord, slot: DeviceSlot) -> None:
        resumed = bool(record.start_time)
        if resumed:
            record.resume_count += 1
        record.state = RUNNING
        record.start_time = utc_now_rfc3339()
        work_dir = self.worker.work_root / record.job_id
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        job = _Running(record, slot, work_dir / "stop")
        with self._lock:
            self._running[(record.tenant, record.job_id)] = job
        self._save(record)
        message = f"resuming after a restart (resume {record.resume_count})" if resumed else ""
        self.events.append(record.tenant, record.job_id, ev.STATE_CHANGED, state=RUNNING, message=message)
        metrics.RUNNING_JOBS.labels(slot.name).set(1)
        self._update_gauges()
        try:
            try:
                outcome, error = self._supervise(job, work_dir)
            finally:
                with self._lock:
                    self._running.pop((record.tenant, record.job_id), None)
                metrics.RUNNING_JOBS.labels(slot.name).set(0)
                shutil.rmtree(work_dir, ignore_errors=True)
            if outcome == "succeeded":
                self._finish(record, SUCCEEDED, "")
            elif outcome == "cancelled" or job.stop_reason == "cancel":
                self._finish(record, CANCELLED, "cancelled by a caller")
            elif job.stop_reason == "preempt":
                log.info("job preempted; it resumes when the trainer starts again", extra={"job_id": record.job_id})
                self._save(record)
            else:
                self._finish(record, FAILED, error or "the training worker stopped without reporting why")
        finally:
            job.done.set()

    def _command(self, job: _Running, work_dir: Path) -> list[str]:
        worker_args = [
            "-m",
            "likeness.trainer.worker",
            "--storage-url",
            self.worker.storage_url,
            "--job-id",
            job.record.job_id,
            "--tenant",
            job.record.tenant,
            "--base-models",
            self.worker.base_models,
            "--cache-dir",
            self.worker.cache_dir,
            "--device",
            job.slot.worker_device,
            "--work-dir",
            str(work_dir / "scratch"),
            "--stop-file",
            str(job.stop_file),
            "--parent-pid",
            str(os.getpid()),
            "--progress-interval",
            str(self.worker.progress_interval_seconds),
        ]
        for hook in self.worker.metric_hooks:
            worker_args += ["--metric-hook", hook]
        processes = self.worker.processes_per_job
        if processes <= 1:
            return [sys.executable, *worker_args]
        # torchrun-style launch; on CPUs the processes talk over gloo (Accelerator(cpu=True) picks MULTI_CPU).
        return [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *worker_args,
        ]  # fmt: skip

    def _supervise(self, job: _Running, work_dir: Path) -> tuple[str, str]:
        """Runs the worker and relays its events; returns (outcome, error message)."""
        env = {**os.environ, **job.slot.env, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        job.process = subprocess.Popen(
            self._command(job, work_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        if job.stop_reason is not None:
            self._signal_stop(job, job.stop_reason)
        tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        stderr_reader = threading.Thread(target=_drain, args=(job.process.stderr, tail, job.record.job_id), daemon=True)
        stderr_reader.start()
        outcome, error = "", ""
        assert job.process.stdout is not None
        for line in job.process.stdout:
            event = parse_event_line(line)
            if event is None:
                log.debug("worker: %s", line.rstrip(), extra={"job_id": job.record.job_id})
                continue
            kind = event.get("type")
            if kind in ("succeeded", "cancelled", "preempted"):
                outcome = kind
            elif kind == "failed":
                error = str(event.get("error", ""))
            self._relay(job, event)
        code = job.process.wait()
        stderr_reader.join(timeout=5.0)
        if not outcome and not error and job.stop_reason is None:
            detail = " | ".join(line.strip() for line in tail if line.strip())[-2000:]
            reason = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            error = f"the training worker stopped unexpectedly ({reason}): {detail or 'no output'}"
        return outcome, error

    def _relay(self, job: _Running, event: dict[str, Any]) -> None:
        record, device = job.record, job.slot.name
        kind = event.pop("type", "")
        # Stored JSON has no NaN or infinity (a loss before the first step, a diverging run): store null instead.
        event = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in event.items()
        }
        if kind == "progress":
            previous_step = int(record.progress.get("step", 0) or record.last_checkpoint_step)
            record.progress = event
            self._save(record)
            self.events.append(record.tenant, record.job_id, ev.PROGRESS, **event)
            steps = max(0, int(event["step"]) - previous_step)
            metrics.STEPS.labels(device).inc(steps)
            rate = float(event.get("steps_per_second") or 0.0)
            if rate > 0:
                for _ in range(min(steps, 1000)):
                    metrics.STEP_SECONDS.labels(device).observe(1.0 / rate)
            metrics.LOSS.labels(device).set(float(event.get("loss") or 0.0))
            metrics.IMAGES_PER_SECOND.labels(device).set(float(event.get("images_per_second") or 0.0))
        elif kind == "checkpoint_saved":
            record.last_checkpoint_step = int(event["step"])
            self._save(record)
            self.events.append(record.tenant, record.job_id, ev.CHECKPOINT_SAVED, **event)
            metrics.CHECKPOINT_SECONDS.observe(float(event.get("write_seconds", 0.0)))
        elif kind == "validation_images":
            self.events.append(record.tenant, record.job_id, ev.VALIDATION_IMAGES, **event)
        elif kind == "succeeded":
            record.subject_model = {**event["manifest"], "size_bytes": int(event.get("size_bytes", 0))}
            self._save(record)
            self.events.append(record.tenant, record.job_id, ev.SUCCEEDED, subject_model=record.subject_model)
        elif kind == "resuming":
            # The worker resumes from the newest checkpoint in storage, which may be newer than the record says
            # when the trainer died right after the worker published it.
            record.last_checkpoint_step = int(event["step"])
            record.progress = {**record.progress, "step": record.last_checkpoint_step}
            self._save(record)
            log.info("resuming from checkpoint", extra={"job_id": record.job_id, "step": event["step"]})

    def _signal_stop(self, job: _Running, reason: str) -> None:
        job.stop_reason = job.stop_reason or reason
        with contextlib.suppress(OSError):
            job.stop_file.write_text(job.stop_reason, encoding="utf-8")

    def _kill(self, job: _Running) -> None:
        if job.process is not None and job.process.poll() is None:
            log.warning("worker did not stop in time; killing it", extra={"job_id": job.record.job_id})
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.process.pid, signal.SIGKILL)

    # ---- records -----------------------------------------------------------------------------------------

    def _save(self, record: JobRecord) -> None:
        self.storage.write_json(job_record_key(record.tenant, record.job_id), record.to_dict())

    def _finish(self, record: JobRecord, state: str, message: str) -> None:
        record.state = state
        record.end_time = utc_now_rfc3339()
        if state == FAILED:
            record.error = message
        self._save(record)
        self.events.append(record.tenant, record.job_id, ev.STATE_CHANGED, state=state, message=message)
        metrics.JOBS_FINISHED.labels(state).inc()
        log.info("job ended", extra={"job_id": record.job_id, "state": state})
        self._update_gauges()

    def _update_gauges(self) -> None:
        counts = collections.Counter(record.state for record in list(self._jobs.values()))
        for state in STATES:
            metrics.JOBS.labels(state).set(counts.get(state, 0))
        metrics.QUEUE_DEPTH.set(sum(1 for key in list(self._queue) if self._jobs[key].state == QUEUED))


def _drain(stream: Any, tail: collections.deque[str], job_id: str) -> None:
    for line in stream:
        tail.append(line)
        log.debug("worker: %s", line.rstrip(), extra={"job_id": job_id})


def _encode_token(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgument("is not a token returned by ListTrainingJobs", field="page_token") from error
