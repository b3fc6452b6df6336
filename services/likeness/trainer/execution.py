"""Executing one training job end to end: inputs from storage, training, checkpoints, the published model.

`execute_job` is what a job worker process runs (on every process of a data-parallel run). It reports through
`emit(event_dict)` on the main process only; the job runner turns those into the job's events and record. The
subject model is published (weights, samples, manifest last) only after training succeeded, under the model id
reserved in the job record, so a job that is re-run after a crash finds its model already there and stops.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
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
    job_record_key,
    job_validation_prefix,
    model_manifest_key,
    model_prefix,
)
from likeness.storage.manifest import SubjectModelManifest, utc_now_rfc3339
from likeness.trainer.config import TrainingConfig
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
    run_training,
)
from likeness.trainer.training.prior import class_images_for_run

log = logging.getLogger("likeness.trainer.execution")

Emit = Callable[[dict[str, Any]], None]
SAMPLES_DIR = "samples"


@dataclass
class StopSignal:
    """Why a run should stop: None (keep going), "cancel" or "preempt" (stop, checkpoint, resume later)."""

    read: Callable[[], str | None]
    reason: str | None = field(default=None)

    def __call__(self) -> bool:
        if self.reason is None:
            self.reason = self.read()
        return self.reason is not None


def _succeeded_event(storage: Storage, tenant: str, model_id: str, size_bytes: int | None = None) -> dict[str, Any]:
    prefix = model_prefix(tenant, model_id)
    manifest = storage.read_json(model_manifest_key(tenant, model_id))
    if size_bytes is None:
        # Only after a crash between publishing and recording success: read the weights back to size them.
        size_bytes = sum(len(storage.read_bytes(f"{prefix}/{path}")) for path in manifest["weights"])
    return {"type": "succeeded", "manifest": manifest, "size_bytes": size_bytes}


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
    *,
    tenant: str,
    job_id: str,
    emit: Emit,
    stop: StopSignal,
    accelerator: Accelerator | None = None,
    device: torch.device | None = None,
    work_dir: Path | None = None,
    metric_hooks: list[str] | None = None,
    progress_interval_seconds: float = 1.0,
) -> str:
    """Trains the job `job_id` as its record in storage says and returns "succeeded", "cancelled" or "preempted".

    Resumes from the job's latest checkpoint when there is one. Raises domain errors for failures (the caller
    reports them). With several processes, every process calls this with its own accelerator; only the main
    one emits events and writes to storage.
    """
    record = storage.read_json(job_record_key(tenant, job_id))
    config = TrainingConfig.from_dict(record["config"])
    model_id = record["model_id"]
    accelerator = accelerator or make_accelerator(config, device)
    main = accelerator.is_main_process
    if storage.is_published(model_prefix(tenant, model_id)):
        # Trained and published before a crash lost the job's final state: nothing to redo.
        if main:
            emit(_succeeded_event(storage, tenant, model_id))
        return "succeeded"
    own_work_dir = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix=f"likeness-{job_id}-")) if work_dir is None else Path(work_dir)
    try:
        spec = catalog.resolve(config.base_model)
        pipeline = catalog.load(config.base_model, device="cpu", dtype=torch.float32)
        manifest, images = load_dataset_images(storage, tenant, config.dataset_id)
        prompts = _instance_prompts(config, manifest.images, manifest.captions)
        resolution = config.resolution or manifest.resolution
        class_images, class_prompt = [], ""
        if config.prior.enabled:
            if stop():
                raise Cancelled("stopped before generating class images")
            pipeline.to(accelerator.device)
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
                emit({"type": "resuming", "step": steps[-1]})
            accelerator.wait_for_everyone()

        def on_progress(progress: TrainingProgress) -> None:
            emit({"type": "progress", **progress.__dict__})

        def on_checkpoint(step: int, folder: Path) -> None:
            key, seconds = checkpoints.publish(step, folder, config.checkpointing.keep_last)
            emit({"type": "checkpoint_saved", "step": step, "key": key, "write_seconds": seconds})

        def on_validation(step: int, rendered: list[ValidationImage]) -> None:
            emit(
                {
                    "type": "validation_images",
                    "step": step,
                    "images": _store_validation(storage, tenant, job_id, step, rendered),
                }
            )

        callbacks = TrainingCallbacks(
            on_progress=on_progress,
            on_checkpoint=on_checkpoint,
            on_validation=on_validation,
            should_stop=stop,
            checkpoint_on_stop=lambda: stop.reason == "preempt",
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
            {
                "type": "rank_done",
                "rank": accelerator.process_index,
                "steps": result.steps_completed - result.resumed_from_step,
            }
        )
        if result.cancelled:
            return "preempted" if stop.reason == "preempt" else "cancelled"
        if main:
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
            emit(_succeeded_event(storage, tenant, model_id, size_bytes))
        accelerator.wait_for_everyone()
        return "succeeded"
    finally:
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
