"""TrainerService over gRPC: protobuf <-> domain translation only.

Domain errors raised here or below are mapped to status codes by the bootstrap's interceptor. Every domain call
blocks (database, storage, photo preparation), so each runs in a worker thread and the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from likeness.api.convert import timestamp
from likeness.dataset.options import PhotoInput
from likeness.erasure.eraser import Eraser, ErasureReceipt
from likeness.errors import InvalidArgument
from likeness.server.context import current_key_id, current_tenant, require_admin
from likeness.storage.base import Storage
from likeness.storage.layout import model_prefix, validate_tenant
from likeness.trainer import datasets
from likeness.trainer.config import TrainingConfig
from likeness.trainer.jobs import TrainingJobs
from likeness.trainer.states import TERMINAL_STATES, JobEventType, JobState
from likeness.trainer.store import JobRecord, as_datetime
from likeness.trainer.v1 import trainer_service_pb2 as pb
from likeness.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from likeness.trainer.watch import EventFollower
from likeness.type.v1 import types_pb2

STATE_TO_PB = {state: pb.JobState.Value(f"JOB_STATE_{state.value}") for state in JobState}
STATE_FROM_PB = {value: name for name, value in STATE_TO_PB.items()}
METHOD_TO_PB = {"lora": types_pb2.TRAINING_METHOD_LORA, "full": types_pb2.TRAINING_METHOD_FULL}
METHOD_FROM_PB = {types_pb2.TRAINING_METHOD_UNSPECIFIED: "", **{v: k for k, v in METHOD_TO_PB.items()}}
PRECISION_FROM_PB = {
    pb.MIXED_PRECISION_UNSPECIFIED: "auto",
    pb.MIXED_PRECISION_NO: "no",
    pb.MIXED_PRECISION_FP16: "fp16",
    pb.MIXED_PRECISION_BF16: "bf16",
}
PRECISION_TO_PB = {name: value for value, name in PRECISION_FROM_PB.items()}
SUBJECT_TYPE_FROM_PB = {
    pb.SUBJECT_TYPE_UNSPECIFIED: "auto",
    pb.SUBJECT_TYPE_FACE: "face",
    pb.SUBJECT_TYPE_OBJECT: "object",
}


def _float(value: float) -> float:
    # proto floats are float32: 1e-4 arrives as 9.99999974e-05; keep the value the caller typed.
    return float(f"{value:.7g}")


def _optional(message: Any, name: str) -> Any:
    if not message.HasField(name):
        return None
    value = getattr(message, name)
    return _float(value) if isinstance(value, float) else value


def spec_to_dict(spec: pb.TrainingJobSpec) -> dict[str, Any]:
    """The spec as the plain values `TrainingConfig.from_spec` reads (unset optional fields are None)."""
    hp, lora, prior, validation, checkpointing = (
        spec.hyperparameters,
        spec.lora,
        spec.prior_preservation,
        spec.validation,
        spec.checkpointing,
    )
    if spec.method not in METHOD_FROM_PB:
        raise InvalidArgument(f"unknown training method {spec.method}", field="spec.method")
    if hp.mixed_precision not in PRECISION_FROM_PB:
        raise InvalidArgument(
            f"unknown mixed precision {hp.mixed_precision}", field="spec.hyperparameters.mixed_precision"
        )
    return {
        "base_model": spec.base_model,
        "identifier": spec.identifier,
        "class_noun": spec.class_noun,
        "method": METHOD_FROM_PB[spec.method],
        "dataset_id": spec.dataset_id,
        "instance_prompt": spec.instance_prompt,
        "export_kohya": spec.export_kohya,
        "display_name": spec.display_name,
        "labels": dict(spec.labels),
        "hyperparameters": {
            **{
                name: _optional(hp, name)
                for name in (
                    "max_train_steps",
                    "learning_rate",
                    "lr_warmup_steps",
                    "train_batch_size",
                    "gradient_accumulation_steps",
                    "seed",
                    "snr_gamma",
                    "noise_offset",
                    "text_encoder_learning_rate",
                )
            },
            "lr_scheduler": hp.lr_scheduler,
            "mixed_precision": PRECISION_FROM_PB[hp.mixed_precision],
            "gradient_checkpointing": hp.gradient_checkpointing,
            "random_flip": hp.random_flip,
            "center_crop": hp.center_crop,
            "resolution": hp.resolution,
            "train_text_encoder": hp.train_text_encoder,
        },
        "lora": {
            "rank": _optional(lora, "rank"),
            "alpha": _optional(lora, "alpha"),
            "dropout": _optional(lora, "dropout"),
            "target_modules": list(lora.target_modules),
        },
        "prior_preservation": {
            "enabled": prior.enabled,
            "class_prompt": prior.class_prompt,
            "num_class_images": _optional(prior, "num_class_images"),
            "prior_loss_weight": _optional(prior, "prior_loss_weight"),
            "class_dataset_id": prior.class_dataset_id,
        },
        "validation": {
            "prompts": list(validation.prompts),
            "every_n_steps": validation.every_n_steps,
            "num_inference_steps": _optional(validation, "num_inference_steps"),
            "seed": _optional(validation, "seed"),
        },
        "checkpointing": {
            "every_n_steps": _optional(checkpointing, "every_n_steps"),
            "keep_last": _optional(checkpointing, "keep_last"),
        },
    }


def spec_from_config(config: TrainingConfig) -> pb.TrainingJobSpec:
    """The resolved spec of a job: every default filled in, as the job trains it."""
    hp = pb.Hyperparameters(
        max_train_steps=config.max_train_steps,
        learning_rate=config.learning_rate,
        lr_scheduler=config.lr_scheduler,
        lr_warmup_steps=config.lr_warmup_steps,
        train_batch_size=config.train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=PRECISION_TO_PB[config.mixed_precision],
        gradient_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
        random_flip=config.random_flip,
        center_crop=config.center_crop,
        resolution=config.resolution,
        train_text_encoder=config.train_text_encoder,
    )
    for name in ("snr_gamma", "noise_offset", "text_encoder_learning_rate"):
        if getattr(config, name) is not None:
            setattr(hp, name, getattr(config, name))
    lora = pb.LoraConfig(
        rank=config.lora.rank,
        alpha=config.lora.effective_alpha,
        target_modules=config.lora.target_modules,
        dropout=config.lora.dropout,
    )
    prior = pb.PriorPreservation(
        enabled=config.prior.enabled,
        class_prompt=config.prior.class_prompt,
        num_class_images=config.prior.num_class_images,
        prior_loss_weight=config.prior.prior_loss_weight,
        class_dataset_id=config.prior.class_dataset_id,
    )
    validation = pb.ValidationConfig(
        prompts=config.validation.prompts,
        every_n_steps=config.validation.every_n_steps,
        num_inference_steps=config.validation.num_inference_steps,
        seed=config.validation.seed,
    )
    return pb.TrainingJobSpec(
        base_model=config.base_model,
        identifier=config.identifier,
        class_noun=config.class_noun,
        method=METHOD_TO_PB[config.method],
        dataset_id=config.dataset_id,
        instance_prompt=config.instance_prompt,
        hyperparameters=hp,
        lora=lora,
        prior_preservation=prior,
        validation=validation,
        checkpointing=pb.CheckpointConfig(
            every_n_steps=config.checkpointing.every_n_steps, keep_last=config.checkpointing.keep_last
        ),
        export_kohya=config.export_kohya,
        display_name=config.display_name,
        labels=config.labels,
    )


def progress_to_pb(progress: dict[str, Any]) -> pb.TrainingProgress:
    fields = ("step", "total_steps", "loss", "learning_rate", "steps_per_second", "images_per_second", "eta_seconds")
    values = {name: progress[name] for name in fields if progress.get(name) is not None}
    values = {k: v for k, v in values.items() if v == v}  # NaN (no loss yet) stays unset
    return pb.TrainingProgress(**values)


def subject_model_to_pb(model: dict[str, Any]) -> types_pb2.SubjectModel:
    prefix = model_prefix(model["tenant"], model["model_id"])
    return types_pb2.SubjectModel(
        model_id=model["model_id"],
        identifier=model["identifier"],
        class_noun=model["class_noun"],
        base_model=model["base_model"],
        method=METHOD_TO_PB.get(model["method"], types_pb2.TRAINING_METHOD_UNSPECIFIED),
        lora_rank=model.get("lora_rank") or 0,
        create_time=timestamp(model.get("created_at")),
        metrics={k: float(v) for k, v in model.get("metrics", {}).items() if isinstance(v, int | float)},
        job_id=model.get("training_config", {}).get("job_id", ""),
        sample_image_keys=[f"{prefix}/{name}" for name in model.get("sample_images", [])],
        size_bytes=int(model.get("size_bytes", 0)),
    )


def job_to_pb(record: JobRecord, queue_position: int = 0) -> pb.TrainingJob:
    job = pb.TrainingJob(
        job_id=record.job_id,
        state=STATE_TO_PB[record.state],
        spec=spec_from_config(record.training_config),
        progress=progress_to_pb(record.progress) if record.progress else None,
        queue_position=queue_position,
        subject_model_id=record.model_id if record.state == JobState.SUCCEEDED else "",
        error=record.error,
        idempotency_key=record.idempotency_key,
        create_time=timestamp(as_datetime(record.create_time)),
        last_sequence=record.last_sequence,
        last_checkpoint_step=record.last_checkpoint_step,
        resume_count=record.resume_count,
        priority=record.priority,
    )
    if record.start_time is not None:
        job.start_time.CopyFrom(timestamp(as_datetime(record.start_time)))
    if record.end_time is not None:
        job.end_time.CopyFrom(timestamp(as_datetime(record.end_time)))
    return job


def event_to_pb(storage: Storage, event: dict[str, Any]) -> pb.WatchTrainingJobResponse:
    """A stored event as a watch response; validation images are read from storage here."""
    response = pb.WatchTrainingJobResponse(sequence=event["sequence"], time=timestamp(event["time"]))
    kind = JobEventType(event["type"])
    if kind == JobEventType.STATE_CHANGED:
        response.state_changed.CopyFrom(
            pb.JobStateChanged(state=STATE_TO_PB[JobState(event["state"])], message=event["message"])
        )
    elif kind == JobEventType.PROGRESS:
        response.progress.CopyFrom(progress_to_pb(event))
    elif kind == JobEventType.CHECKPOINT_SAVED:
        response.checkpoint_saved.CopyFrom(
            pb.CheckpointSaved(step=event["step"], key=event["key"], write_seconds=event["write_seconds"])
        )
    elif kind == JobEventType.VALIDATION_IMAGES:
        images = [
            types_pb2.EncodedImage(
                format=types_pb2.IMAGE_FORMAT_PNG,
                data=storage.read_bytes(image["key"]),
                width=image["width"],
                height=image["height"],
                name=image["name"],
            )
            for image in event["images"]
        ]
        response.validation_images.CopyFrom(pb.ValidationImages(step=event["step"], images=images))
    elif kind == JobEventType.SUCCEEDED:
        response.succeeded.CopyFrom(pb.JobSucceeded(subject_model=subject_model_to_pb(event["subject_model"])))
    return response


def dataset_to_pb(manifest: Any, report: dict[str, Any]) -> pb.Dataset:
    reports = []
    for photo in report.get("photos", []):
        box = photo.get("crop_box")
        width, height = (photo.get("original_size") or [0, 0])[:2]
        reports.append(
            pb.PhotoReport(
                file_name=photo.get("name", ""),
                kept=photo.get("status") == "kept",
                reason_code=photo.get("code", ""),
                reason=photo.get("reason", ""),
                original_width=width,
                original_height=height,
                original_format=photo.get("original_format", ""),
                exif_rotated=bool(photo.get("exif_rotated")),
                crop_box=pb.CropBox(left=box[0], top=box[1], right=box[2], bottom=box[3]) if box else None,
                crop_method=photo.get("crop_method", ""),
                output_name=photo.get("output_name", ""),
            )
        )
    return pb.Dataset(
        dataset_id=manifest.dataset_id,
        resolution=manifest.resolution,
        image_count=manifest.image_count,
        create_time=timestamp(manifest.created_at),
        display_name=(report.get("options") or {}).get("display_name", ""),
        reports=reports,
    )


def receipt_to_pb(receipt: ErasureReceipt) -> pb.ErasureReceipt:
    message = pb.ErasureReceipt(
        erasure_id=receipt.erasure_id,
        tenant=receipt.tenant,
        dataset_ids=receipt.dataset_ids,
        job_ids=receipt.job_ids,
        model_ids=receipt.model_ids,
        cancelled_job_ids=receipt.cancelled_job_ids,
        gallery_entries_removed=receipt.gallery_entries_removed,
        class_image_sets_removed=receipt.class_image_sets_removed,
        files_removed=receipt.files_removed,
        events_removed=receipt.events_removed,
        api_keys_removed=receipt.api_keys_removed,
        erase_time=timestamp(as_datetime(receipt.erase_time)),
    )
    message.replica_cache_bound.FromNanoseconds(int(receipt.replica_cache_bound_seconds * 1e9))
    return message


class TrainerServicer(pb_grpc.TrainerServiceServicer):
    """Implements likeness.trainer.v1.TrainerService on the trainer's domain core."""

    def __init__(self, jobs: TrainingJobs, follower: EventFollower, eraser: Eraser) -> None:
        self.jobs = jobs
        self.follower = follower
        self.eraser = eraser
        self.storage = jobs.storage

    async def _job_to_pb(self, record: JobRecord) -> pb.TrainingJob:
        (response,) = await self._jobs_to_pb([record])
        return response

    async def _jobs_to_pb(self, records: list[JobRecord]) -> list[pb.TrainingJob]:
        positions = await asyncio.to_thread(self.jobs.queue_positions, records)
        return [job_to_pb(record, positions.get(record.job_id, 0)) for record in records]

    def _prepare_options(self, options: pb.DatasetOptions, base_model: str, resolution: int):
        return datasets.prepare_options(
            self.jobs.catalog,
            base_model=base_model or options.base_model or self.jobs.default_base_model,
            resolution=options.resolution or resolution,
            subject_type=SUBJECT_TYPE_FROM_PB.get(options.subject_type, "auto"),
            face_margin=_optional(options, "face_margin"),
            dedupe_threshold=_optional(options, "dedupe_threshold"),
        )

    async def PrepareDataset(self, request_iterator: AsyncIterator[pb.PrepareDatasetRequest], context) -> Any:
        tenant = current_tenant()
        requests = request_iterator.__aiter__()
        first = await anext(requests, None)
        if first is None or not first.HasField("options"):
            raise InvalidArgument("the first message must carry the dataset options", field="options")
        options = first.options
        collector = datasets.UploadCollector()
        async for request in requests:
            if request.HasField("options"):
                raise InvalidArgument("options may be sent only once, in the first message", field="options")
            chunk = request.photo_chunk
            collector.add(chunk.file_name, chunk.data, chunk.caption)
        if options.photo_uris:
            await asyncio.to_thread(
                datasets.photos_from_storage, self.storage, tenant, list(options.photo_uris), collector
            )
        prepare_options = await asyncio.to_thread(self._prepare_options, options, "", 0)
        catalog = self.jobs.datasets
        manifest, report = await asyncio.to_thread(
            catalog.prepare_and_publish, tenant, collector.photos(), prepare_options, options.display_name
        )
        sheet = await asyncio.to_thread(catalog.contact_sheet, tenant, manifest.dataset_id)
        return pb.PrepareDatasetResponse(
            dataset=dataset_to_pb(manifest, report),
            contact_sheet=types_pb2.EncodedImage(format=types_pb2.IMAGE_FORMAT_JPEG, data=sheet, name="contact_sheet"),
        )

    async def GetDataset(self, request: pb.GetDatasetRequest, context) -> pb.GetDatasetResponse:
        if not request.dataset_id:
            raise InvalidArgument("must not be empty", field="dataset_id")
        manifest, report = await asyncio.to_thread(self.jobs.datasets.read, current_tenant(), request.dataset_id)
        return pb.GetDatasetResponse(dataset=dataset_to_pb(manifest, report))

    async def DeleteDataset(self, request: pb.DeleteDatasetRequest, context) -> pb.DeleteDatasetResponse:
        if not request.dataset_id:
            raise InvalidArgument("must not be empty", field="dataset_id")
        removed = await asyncio.to_thread(self.jobs.delete_dataset, current_tenant(), request.dataset_id)
        return pb.DeleteDatasetResponse(dataset_id=request.dataset_id, files_removed=removed)

    async def CreateTrainingJob(self, request: pb.CreateTrainingJobRequest, context) -> pb.CreateTrainingJobResponse:
        tenant = current_tenant()
        photos = [
            PhotoInput(p.file_name or f"photo-{i:03d}", p.data, p.caption or None) for i, p in enumerate(request.photos)
        ]
        spec = spec_to_dict(request.spec)
        options = None
        if photos:
            options = await asyncio.to_thread(
                self._prepare_options,
                request.dataset_options,
                request.spec.base_model,
                request.spec.hyperparameters.resolution,
            )
        record, existing = await asyncio.to_thread(
            self.jobs.create_job,
            tenant,
            spec,
            idempotency_key=request.idempotency_key,
            priority=request.priority,
            photos=photos,
            dataset_options=options,
            dataset_name=request.dataset_options.display_name,
        )
        return pb.CreateTrainingJobResponse(job=await self._job_to_pb(record), existing=existing)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest, context) -> pb.GetTrainingJobResponse:
        record = await asyncio.to_thread(self.jobs.get_job, current_tenant(), request.job_id)
        return pb.GetTrainingJobResponse(job=await self._job_to_pb(record))

    async def ListTrainingJobs(self, request: pb.ListTrainingJobsRequest, context) -> pb.ListTrainingJobsResponse:
        states = []
        for state in request.states:
            if state not in STATE_FROM_PB:
                raise InvalidArgument(f"unknown job state {state}", field="states")
            states.append(STATE_FROM_PB[state])
        records, token = await asyncio.to_thread(
            self.jobs.list_jobs, current_tenant(), states, request.page_size, request.page_token
        )
        return pb.ListTrainingJobsResponse(jobs=await self._jobs_to_pb(records), next_page_token=token)

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest, context) -> pb.CancelTrainingJobResponse:
        record = await asyncio.to_thread(self.jobs.cancel_job, current_tenant(), request.job_id)
        return pb.CancelTrainingJobResponse(job=await self._job_to_pb(record))

    async def DeleteTrainingJob(self, request: pb.DeleteTrainingJobRequest, context) -> pb.DeleteTrainingJobResponse:
        record, removed = await asyncio.to_thread(self.jobs.delete_job, current_tenant(), request.job_id)
        return pb.DeleteTrainingJobResponse(
            job_id=record.job_id, files_removed=removed, events_removed=record.last_sequence
        )

    async def EraseSubject(self, request: pb.EraseSubjectRequest, context) -> pb.EraseSubjectResponse:
        kind = request.WhichOneof("subject")
        if kind is None or not getattr(request, kind):
            raise InvalidArgument("name the subject to erase: set dataset_id, job_id or model_id", field="subject")
        receipt = await asyncio.to_thread(
            self.eraser.erase_subject,
            current_tenant(),
            requested_by=current_key_id(),
            **{kind: getattr(request, kind)},
        )
        return pb.EraseSubjectResponse(receipt=receipt_to_pb(receipt))

    async def EraseTenant(self, request: pb.EraseTenantRequest, context) -> pb.EraseTenantResponse:
        principal = require_admin("EraseTenant")
        if not request.tenant:
            raise InvalidArgument("must name the tenant to erase", field="tenant")
        validate_tenant(request.tenant)
        receipt = await asyncio.to_thread(self.eraser.erase_tenant, request.tenant, requested_by=principal.key_id)
        return pb.EraseTenantResponse(receipt=receipt_to_pb(receipt))

    async def WatchTrainingJob(self, request: pb.WatchTrainingJobRequest, context) -> AsyncIterator[Any]:
        if request.after_sequence < 0:
            raise InvalidArgument("must not be negative", field="after_sequence")
        record = await asyncio.to_thread(self.jobs.get_job, current_tenant(), request.job_id)
        ended = record.state in TERMINAL_STATES
        async for event in self.follower.watch(record.job_id, request.after_sequence, ended=ended):
            yield await asyncio.to_thread(event_to_pb, self.storage, event)


def add_to_server(servicer: TrainerServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_TrainerServiceServicer_to_server(servicer, server)
