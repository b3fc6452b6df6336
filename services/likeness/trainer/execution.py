"""Executing one training job end to end: inputs from storage, training, checkpoints, the published model.

`execute_job` is what a training process runs (on every process of a data-parallel run). It reports through
`emit(event_type, **payload)` on the main process only; the worker supervisor turns those into the job's events
and record. The subject model is published (weights, samples, manifest last) only after training succeeded, under
the model id reserved in the job record, so a job that is re-run after a crash finds its model already there.

Fencing: before each checkpoint and before publishing, `lease_guard()` must confirm the worker still holds the
job's lease; a run whose lease may have been taken over stops without writing (`LeaseNotHeld`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from likeness.dataset.publish import load_dataset_images
from likeness.errors import Cancelled
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.base import Storage
from likeness.storage.layout import (
    MANIFEST_NAME,
    job_validation_prefix,
    model_manifest_key,
    model_prefix,
)
from likeness.storage.manifest import SubjectModelManifest, utc_now_rfc3339
from likeness.trainer.config import TrainingConfig
from likeness.trainer.protocol import StopReason, WorkerEventType
from likeness.trainer.training.checkpoints import CheckpointStore
from likeness.trainer.training.data import TrainingData
from likeness.trainer.training.export import save_subject_weights
from likeness.trainer.training.hooks import MetricContext, run_hooks
from likeness.trainer.training.loop import (
    TrainingCallbacks,
    TrainingProgress,
    TrainingResult,
    ValidationImage,
    make_accelerator,
    place_for_class_images,
    run_training,
)
from likeness.trainer.training.prior import class_images_for_run

log = logging.getLogger("likeness.trainer.execution")

Emit = Callable[..., None]
LoadPipeline = Callable[[str], Any]
SAMPLES_DIR = "samples"


class LeaseNotHeld(Cancelled):
    """The worker can no longer prove it holds the job's lease: another worker may own the job now."""


@dataclass
class StopSignal:
    """Why a run should stop, polled once per step: None (keep going) or a StopReason."""

    read: Callable[[], StopReason | None]
    reason: StopReason | None = field(default=None)

    def __call__(self) -> bool:
        if self.reason is None:
            self.reason = self.read()
        return self.reason is not None


def no_lease_guard() -> None:
    """For runs outside a worker (tests, scripts): nothing to prove."""


def _succeeded_event(storage: Storage, tenant: str, model_id: str, size_bytes: int | None = None) -> dict[str, Any]:
    prefix = model_prefix(tenant, model_id)
    manifest = storage.read_json(model_manifest_key(tenant, model_id))
    if size_bytes is None:
        # Only after a crash between publishing and recording success: read the weights back to size them.
        size_bytes = sum(len(storage.read_bytes(f"{prefix}/{path}")) for path in manifest["weights"])
    return {"manifest": manifest, "size_bytes": size_bytes}


def _instance_prompts(config: TrainingConfig, images: list[str], captions: dict[str, str]) -> list[str]:
    return [config.expand_prompt(captions[name]) if captions.get(name) else config.instance_prompt for name in images]


def _store_validation(storage: Storage, tenant: str, job_id: str, step: int, images: list[ValidationImage]) -> list:
    stored = []
    for index, image in enumerate(images):
        key = f"{job_validation_prefix(tenant, job_id)}/step-{step:08d}/{index:02d}.png"
        storage.write_bytes(key, image.png)
        stored.append({"name": image.name, "key": key, "width": image.width, "height": image.height})
    return stored


def _publish_model(
    storage: Storage,
    *,
    tenant: str,
    job_id: str,
    model_id: str,
    arch: str,
    config: TrainingConfig,
    pipeline: Any,
    result: TrainingResult,
    instance_images: list,
    metric_hooks: list[str],
) -> int:
    """Publishes the trained model; returns the size of its weight files in bytes."""
    with tempfile.TemporaryDirectory(prefix="likeness-model-") as staging_dir:
        staging = Path(staging_dir)
        weights = save_subject_weights(pipeline, config, staging)
        samples = []
        if result.validation_images:
            (staging / SAMPLES_DIR).mkdir()
            for index, image in enumerate(result.validation_images):
                name = f"{SAMPLES_DIR}/{index:02d}.png"
                (staging / name).write_bytes(image.png)
                samples.append(name)
        metrics = {
            "final_loss": result.final_loss,
            "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second,
            "steps": float(result.steps_completed),
        }
        metrics.update(run_hooks(metric_hooks, MetricContext(pipeline, config, result, instance_images, staging)))
        manifest = SubjectModelManifest(
            model_id=model_id,
            tenant=tenant,
            identifier=config.identifier,
            class_noun=config.class_noun,
            base_model=config.base_model,
            arch=arch,
            method=config.method,
            training_config={**config.to_dict(), "job_id": job_id},
            metrics={key: value for key, value in metrics.items() if value == value},  # drop NaN
            created_at=utc_now_rfc3339(),
            sample_images=samples,
            weights=weights,
            lora_rank=config.lora.rank if config.method == "lora" else None,
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        storage.publish_dir(staging, model_prefix(tenant, model_id))
        return sum((staging / path).stat().st_size for path in weights)


def execute_job(
    storage: Storage,
    catalog: BaseModelCatalog,
    job: Mapping[str, Any],
    *,
    emit: Emit,
    stop: StopSignal,
    lease_guard: Callable[[], None] = no_lease_guard,
    load_pipeline: LoadPipeline | None = None,
    accelerator: Accelerator | None = None,
    device: torch.device | None = None,
    work_dir: Path | None = None,
    metric_hooks: list[str] | None = None,
    progress_interval_seconds: float = 1.0,
) -> WorkerEventType:
    """Trains `job` ({tenant, job_id, model_id, config}) and returns SUCCEEDED, CANCELLED or PREEMPTED.

    Resumes from the job's latest checkpoint when there is one. Raises domain errors for failures (the caller
    reports them). With several processes, every process calls this with its own accelerator; only the main
    one emits events and writes to storage. `load_pipeline(base_model_id)` returns a fresh pipeline the run may
    modify (a warm worker hands out copies of one it keeps loaded).
    """
    tenant, job_id, model_id = job["tenant"], job["job_id"], job["model_id"]
    config = TrainingConfig.from_dict(job["config"])
    accelerator = accelerator or make_accelerator(config, device)
    main = accelerator.is_main_process
    if storage.is_published(model_prefix(tenant, model_id)):
        # Trained and published before a crash lost the job's final state: nothing to redo.
        if main:
            emit(WorkerEventType.SUCCEEDED, **_succeeded_event(storage, tenant, model_id))
        return WorkerEventType.SUCCEEDED
    own_work_dir = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix=f"likeness-{job_id}-")) if work_dir is None else Path(work_dir)
    load = load_pipeline or (lambda base_id: catalog.load(base_id, device="cpu", dtype=torch.float32))
    try:
        spec = catalog.resolve(config.base_model)
        pipeline = load(config.base_model)
        manifest, images = load_dataset_images(storage, tenant, config.dataset_id)
        prompts = _instance_prompts(config, manifest.images, manifest.captions)
        resolution = config.resolution or manifest.resolution
        class_images, class_prompt = [], ""
        if config.prior.enabled:
            if stop():
                raise Cancelled("stopped before generating class images")
            place_for_class_images(pipeline, config, accelerator)
            # The main process generates (or finds) the set first; the others then read the published copy.
            for turn in (True, False):
                if main == turn:
                    class_images = class_images_for_run(
                        storage,
                        pipeline,
                        tenant=tenant,
                        base_model=config.base_model,
                        class_prompt=config.prior.class_prompt,
                        resolution=resolution,
                        count=config.prior.num_class_images,
                        class_dataset_id=config.prior.class_dataset_id,
                        should_stop=stop,
                    ).images
                accelerator.wait_for_everyone()
            class_prompt = config.prior.class_prompt
        data = TrainingData(images, prompts, class_images, class_prompt)
        checkpoints = CheckpointStore(storage, tenant, job_id)
        resume_from = None
        steps = checkpoints.steps()
        if steps:
            resume_from = work_dir / "resume"
            if main:
                shutil.rmtree(resume_from, ignore_errors=True)
                checkpoints.download(steps[-1], resume_from)
                emit(WorkerEventType.RESUMING, step=steps[-1])
            accelerator.wait_for_everyone()

        def on_progress(progress: TrainingProgress) -> None:
            emit(WorkerEventType.PROGRESS, **progress.__dict__)

        def on_checkpoint(step: int, folder: Path) -> None:
            lease_guard()
            key, seconds = checkpoints.publish(step, folder, config.checkpointing.keep_last)
            emit(WorkerEventType.CHECKPOINT_SAVED, step=step, key=key, write_seconds=seconds)

        def on_validation(step: int, rendered: list[ValidationImage]) -> None:
            emit(
                WorkerEventType.VALIDATION_IMAGES,
                step=step,
                images=_store_validation(storage, tenant, job_id, step, rendered),
            )

        callbacks = TrainingCallbacks(
            on_progress=on_progress,
            on_checkpoint=on_checkpoint,
            on_validation=on_validation,
            should_stop=stop,
            checkpoint_on_stop=lambda: stop.reason == StopReason.PREEMPT,
            progress_interval_seconds=progress_interval_seconds,
        )
        config.resolution = resolution
        result = run_training(
            config,
            pipeline,
            data,
            callbacks,
            accelerator=accelerator,
            resume_from=resume_from,
            work_dir=work_dir / "checkpoints",
        )
        emit(
            WorkerEventType.RANK_DONE,
            rank=accelerator.process_index,
            steps=result.steps_completed - result.resumed_from_step,
        )
        if result.cancelled:
            if stop.reason == StopReason.LEASE_LOST:
                raise LeaseNotHeld("the lease on the job was lost; stopped without publishing")
            return WorkerEventType.PREEMPTED if stop.reason == StopReason.PREEMPT else WorkerEventType.CANCELLED
        if main:
            lease_guard()
            size_bytes = _publish_model(
                storage,
                tenant=tenant,
                job_id=job_id,
                model_id=model_id,
                arch=spec.arch,
                config=config,
                pipeline=pipeline,
                result=result,
                instance_images=images,
                metric_hooks=list(metric_hooks or []),
            )
            checkpoints.delete_all()
            emit(WorkerEventType.SUCCEEDED, **_succeeded_event(storage, tenant, model_id, size_bytes))
        accelerator.wait_for_everyone()
        return WorkerEventType.SUCCEEDED
    finally:
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
