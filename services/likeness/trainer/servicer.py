"""TrainerService over gRPC: protobuf <-> domain translation only.

Domain errors raised here or below are mapped to status codes by the bootstrap's interceptor. Every domain call
blocks (database, storage, photo preparation), so each runs in a worker thread and the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api import convert
from likeness.api.convert import timestamp
from likeness.dataset.options import PhotoInput
from likeness.erasure.eraser import Eraser, ErasureReceipt
from likeness.errors import InvalidArgument
from likeness.server.context import current_key_id, current_tenant, require_admin
from likeness.storage.base import Storage
from likeness.storage.layout import validate_tenant
from likeness.storage.manifest import SubjectModelManifest
from likeness.trainer import datasets
from likeness.trainer.config import TrainingConfig
from likeness.trainer.jobs import TrainingJobs
from likeness.trainer.states import TERMINAL_STATES, JobEventType, JobState
from likeness.trainer.store import JobRecord, as_datetime
from likeness.trainer.watch import EventFollower
from likeness.trainer.webhooks import DeliveryState, JobWebhook
from likeness_client.v1 import trainer_service_pb2 as pb
from likeness_client.v1 import trainer_service_pb2_grpc as pb_grpc
from likeness_client.v1 import types_pb2

STATE_TO_PB = {state: cast(pb.JobState, pb.JobState.Value(f"JOB_STATE_{state.value}")) for state in JobState}
STATE_FROM_PB = {value: name for name, value in STATE_TO_PB.items()}
METHOD_TO_PB = convert.TRAINING_METHOD_ENUMS
METHOD_FROM_PB = {types_pb2.TRAINING_METHOD_UNSPECIFIED: "", **convert.TRAINING_METHOD_NAMES}
PRECISION_FROM_PB = convert.mixed_precision_names(pb.MixedPrecision.DESCRIPTOR)
PRECISION_TO_PB = {name: value for value, name in PRECISION_FROM_PB.items()}
MEMORY_PLAN_FROM_PB = convert.enum_names(pb.MemoryPlan.DESCRIPTOR, "MEMORY_PLAN_", unspecified="auto")
MEMORY_PLAN_TO_PB = {name: value for value, name in MEMORY_PLAN_FROM_PB.items()}
OPTIMIZER_FROM_PB = convert.enum_names(pb.Optimizer.DESCRIPTOR, "OPTIMIZER_", unspecified="")
OPTIMIZER_TO_PB = {name: value for value, name in OPTIMIZER_FROM_PB.items()}
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


#: The one map per enum of the spec: enum full name -> (protobuf value -> config value, what the error calls it).
SPEC_ENUMS: dict[str, tuple[dict[int, str], str]] = {
    types_pb2.TrainingMethod.DESCRIPTOR.full_name: (METHOD_FROM_PB, "training method"),
    pb.MixedPrecision.DESCRIPTOR.full_name: (PRECISION_FROM_PB, "mixed precision"),
    pb.MemoryPlan.DESCRIPTOR.full_name: (MEMORY_PLAN_FROM_PB, "memory plan"),
    pb.Optimizer.DESCRIPTOR.full_name: (OPTIMIZER_FROM_PB, "optimizer"),
}
#: The way back, derived from the same maps (METHOD_TO_PB/PRECISION_TO_PB; UNSPECIFIED's "" is never resolved).
_SPEC_ENUMS_TO_PB: dict[str, dict[str, int]] = {
    types_pb2.TrainingMethod.DESCRIPTOR.full_name: METHOD_TO_PB,
    pb.MixedPrecision.DESCRIPTOR.full_name: PRECISION_TO_PB,
    pb.MemoryPlan.DESCRIPTOR.full_name: MEMORY_PLAN_TO_PB,
    pb.Optimizer.DESCRIPTOR.full_name: OPTIMIZER_TO_PB,
}
#: Where a spec field lives on the resolved `TrainingConfig` when the names differ: spec path -> attribute of the
#: parent's config object ("" is the parent itself: the hyperparameters are `TrainingConfig`'s own fields).
SPEC_TO_CONFIG_NAMES = {
    "hyperparameters": "",
    "prior_preservation": "prior",
    "lora.alpha": "effective_alpha",
}


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _enum_to_plain(field: Any, value: int, path: str) -> str:
    values, what = SPEC_ENUMS[field.enum_type.full_name]
    if value not in values:
        raise InvalidArgument(f"unknown {what} {value}", field=f"spec.{path}")
    return values[value]


def _message_to_dict(message: Any, prefix: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        name, path = field.name, prefix + field.name
        value = getattr(message, name)
        if _is_map(field):
            result[name] = dict(value)
        elif field.is_repeated:
            result[name] = list(value)
        elif field.message_type is not None:
            result[name] = _message_to_dict(value, path + ".")
        elif field.has_presence and not message.HasField(name):
            result[name] = None
        elif field.enum_type is not None:
            result[name] = _enum_to_plain(field, value, path)
        else:
            result[name] = _float(value) if isinstance(value, float) else value
    return result


def spec_to_dict(spec: pb.TrainingJobSpec) -> dict[str, Any]:
    """The spec as the plain values `TrainingConfig.from_spec` reads, walked from the message descriptor.

    Unset optional fields are None, nested messages dicts (always present), repeated fields lists, maps dicts,
    enums their config names (`SPEC_ENUMS`), floats as typed (float32 round-off undone).
    """
    return _message_to_dict(spec, "")


def _fill_from_config(message: Any, source: Any, prefix: str) -> None:
    for field in message.DESCRIPTOR.fields:
        name, path = field.name, prefix + field.name
        attribute = SPEC_TO_CONFIG_NAMES.get(path, name)
        value = source if attribute == "" else getattr(source, attribute)
        if _is_map(field):
            getattr(message, name).update(value)
        elif field.is_repeated:
            getattr(message, name).extend(value)
        elif field.message_type is not None:
            target = getattr(message, name)
            target.SetInParent()
            _fill_from_config(target, value, path + ".")
        elif value is None:
            continue  # an optional setting left unset (snr_gamma, noise_offset, ...)
        elif field.enum_type is not None:
            setattr(message, name, _SPEC_ENUMS_TO_PB[field.enum_type.full_name][value])
        else:
            setattr(message, name, value)


def spec_from_config(config: TrainingConfig) -> pb.TrainingJobSpec:
    """The resolved spec of a job: every default filled in, as the job trains it (walked from the descriptor)."""
    spec = pb.TrainingJobSpec()
    _fill_from_config(spec, config, "")
    return spec


def progress_to_pb(progress: dict[str, Any]) -> pb.TrainingProgress:
    fields = ("step", "total_steps", "loss", "learning_rate", "steps_per_second", "images_per_second", "eta_seconds")
    values = {name: progress[name] for name in fields if progress.get(name) is not None}
    values = {k: v for k, v in values.items() if v == v}  # NaN (no loss yet) stays unset
    return pb.TrainingProgress(**values)


def subject_model_to_pb(model: dict[str, Any]) -> types_pb2.SubjectModel:
    """A published model's record (its manifest plus `size_bytes`) through the one SubjectModel builder."""
    manifest = SubjectModelManifest.from_dict({k: v for k, v in model.items() if k != "size_bytes"})
    return convert.subject_model_to_pb(manifest, size_bytes=int(model.get("size_bytes", 0)))


DELIVERY_STATE_TO_PB = {
    state: cast(pb.WebhookDeliveryState, pb.WebhookDeliveryState.Value(f"WEBHOOK_DELIVERY_STATE_{state.value}"))
    for state in DeliveryState
}


def webhook_to_pb(job: pb.TrainingJob, hook: JobWebhook) -> None:
    """Fills a job's webhook (never its secret) and its latest deliveries, newest first."""
    job.webhook.CopyFrom(
        pb.Webhook(
            url=hook.webhook.url,
            send_progress=hook.webhook.send_progress,
            progress_interval_seconds=hook.webhook.progress_interval_seconds,
        )
    )
    for delivery in hook.deliveries:
        message = job.webhook_deliveries.add(
            delivery_id=delivery.delivery_id,
            event_type=delivery.event_type,
            sequence=delivery.sequence,
            attempts=delivery.attempts,
            state=DELIVERY_STATE_TO_PB[delivery.state],
            last_http_status=delivery.last_http_status,
            last_error=delivery.last_error,
        )
        if delivery.last_attempt_time is not None:
            message.last_attempt_time.CopyFrom(cast(Timestamp, timestamp(as_datetime(delivery.last_attempt_time))))
        if delivery.next_attempt_time is not None:
            message.next_attempt_time.CopyFrom(cast(Timestamp, timestamp(as_datetime(delivery.next_attempt_time))))


def webhook_request(request: pb.CreateTrainingJobRequest) -> dict[str, Any] | None:
    """The request's webhook as the plain values `TrainingJobs.create_job` validates; None when unset."""
    if not request.HasField("webhook"):
        return None
    hook = request.webhook
    return {
        "url": hook.url,
        "secret": hook.secret,
        "send_progress": hook.send_progress,
        "progress_interval_seconds": hook.progress_interval_seconds,
    }


def job_to_pb(record: JobRecord, queue_position: int = 0, webhook: JobWebhook | None = None) -> pb.TrainingJob:
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
        job.start_time.CopyFrom(cast(Timestamp, timestamp(as_datetime(record.start_time))))
    if record.end_time is not None:
        job.end_time.CopyFrom(cast(Timestamp, timestamp(as_datetime(record.end_time))))
    if webhook is not None:
        webhook_to_pb(job, webhook)
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


def _require_job_id(job_id: str) -> str:
    """An empty job id is a malformed request (INVALID_ARGUMENT, as for dataset_id), not an unknown job."""
    if not job_id:
        raise InvalidArgument("must not be empty", field="job_id")
    return job_id


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
        hooks = await asyncio.to_thread(self.jobs.webhooks_of, records)
        return [job_to_pb(record, positions.get(record.job_id, 0), hooks.get(record.job_id)) for record in records]

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
            await asyncio.to_thread(self.jobs.photo_sources.collect, tenant, list(options.photo_uris), collector)
        prepare_options = await asyncio.to_thread(self._prepare_options, options, "", 0)
        catalog = self.jobs.datasets
        manifest, report = await asyncio.to_thread(
            catalog.prepare_and_publish, tenant, collector.photos(), prepare_options, options.display_name
        )
        sheet = await asyncio.to_thread(catalog.contact_sheet_image, tenant, manifest.dataset_id)
        return pb.PrepareDatasetResponse(dataset=dataset_to_pb(manifest, report), contact_sheet=sheet)

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
        photo_uris = list(request.dataset_options.photo_uris)
        options = None
        if photos or photo_uris:
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
            photo_uris=photo_uris,
            webhook=webhook_request(request),
        )
        return pb.CreateTrainingJobResponse(job=await self._job_to_pb(record), existing=existing)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest, context) -> pb.GetTrainingJobResponse:
        job_id = _require_job_id(request.job_id)
        record = await asyncio.to_thread(self.jobs.get_job, current_tenant(), job_id)
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
        job_id = _require_job_id(request.job_id)
        record = await asyncio.to_thread(self.jobs.cancel_job, current_tenant(), job_id)
        return pb.CancelTrainingJobResponse(job=await self._job_to_pb(record))

    async def DeleteTrainingJob(self, request: pb.DeleteTrainingJobRequest, context) -> pb.DeleteTrainingJobResponse:
        job_id = _require_job_id(request.job_id)
        record, removed = await asyncio.to_thread(self.jobs.delete_job, current_tenant(), job_id)
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
        job_id = _require_job_id(request.job_id)
        record = await asyncio.to_thread(self.jobs.get_job, current_tenant(), job_id)
        ended = record.state in TERMINAL_STATES
        async for event in self.follower.watch(record.job_id, request.after_sequence, ended=ended):
            yield await asyncio.to_thread(event_to_pb, self.storage, event)


def add_to_server(servicer: TrainerServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_TrainerServiceServicer_to_server(servicer, server)
