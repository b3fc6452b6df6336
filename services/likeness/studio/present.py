"""Turning protobuf messages into what the Studio's templates show: plain dicts and strings, one place for each
label. Templates never touch protobuf; everything shown passes Jinja's autoescape."""

from __future__ import annotations

import base64
from typing import Any

from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

MEDIA_TYPES: dict[int, str] = {types_pb2.IMAGE_FORMAT_JPEG: "image/jpeg", types_pb2.IMAGE_FORMAT_WEBP: "image/webp"}


def media_type(image_format: int) -> str:
    return MEDIA_TYPES.get(image_format, "image/png")


def data_uri(data: bytes, media: str) -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def enum_label(enum: Any, value: int, prefix: str) -> str:
    """SCHEDULER_EULER_ANCESTRAL -> "euler ancestral"."""
    return enum.Name(value).removeprefix(prefix).lower().replace("_", " ")


def parameters(params: types_pb2.GenerationParameters) -> list[tuple[str, str]]:
    """Every parameter that was set, as (label, value) rows."""
    rows = []
    if params.negative_prompt:
        rows.append(("negative prompt", params.negative_prompt))
    for field, label in (
        ("num_inference_steps", "steps"),
        ("guidance_scale", "guidance"),
        ("width", "width"),
        ("height", "height"),
        ("seed", "seed"),
        ("lora_scale", "LoRA scale"),
    ):
        if params.HasField(field):
            value = getattr(params, field)
            rows.append((label, f"{value:g}" if isinstance(value, float) else str(value)))
    if params.scheduler:
        rows.append(("scheduler", enum_label(types_pb2.Scheduler, params.scheduler, "SCHEDULER_")))
    return rows


def prompt_card(record: gallery_pb.PromptRecord) -> dict[str, Any]:
    return {
        "id": record.prompt_id,
        "prompt": record.prompt,
        "base_model": record.base_model,
        "tags": list(record.tags),
        "uses": record.use_count,
        "has_thumbnail": bool(record.thumbnail_webp),
        "has_image": record.has_image,
        "source": record.source,
        "subject_model_id": record.subject_model_id,
        "parameters": parameters(record.parameters),
    }


JOB_STATES = {value: enum_label(trainer_pb.JobState, value, "JOB_STATE_") for value in trainer_pb.JobState.values()}
TERMINAL = {trainer_pb.JOB_STATE_SUCCEEDED, trainer_pb.JOB_STATE_FAILED, trainer_pb.JOB_STATE_CANCELLED}


def job(record: trainer_pb.TrainingJob) -> dict[str, Any]:
    progress = record.progress
    return {
        "id": record.job_id,
        "state": JOB_STATES[record.state],
        "ended": record.state in TERMINAL,
        "step": progress.step,
        "total_steps": progress.total_steps or record.spec.hyperparameters.max_train_steps,
        "loss": progress.loss,
        "eta_seconds": progress.eta_seconds,
        "error": record.error,
        "model_id": record.subject_model_id,
        "class_noun": record.spec.class_noun,
    }


def job_event(event: trainer_pb.WatchTrainingJobResponse) -> dict[str, Any] | None:
    """One watch event as the JSON the job page's script reads (None for events it does not show)."""
    kind = event.WhichOneof("event")
    base: dict[str, Any] = {"sequence": event.sequence, "type": kind}
    if kind == "state_changed":
        base.update(state=JOB_STATES[event.state_changed.state], message=event.state_changed.message)
    elif kind == "progress":
        p = event.progress
        base.update(step=p.step, total=p.total_steps, loss=round(p.loss, 5), eta=round(p.eta_seconds, 1))
    elif kind == "validation_images":
        base.update(
            step=event.validation_images.step,
            images=[data_uri(i.data, media_type(i.format)) for i in event.validation_images.images],
        )
    elif kind == "succeeded":
        base.update(model_id=event.succeeded.subject_model.model_id)
    else:
        return None
    return base


def photo_report(report: trainer_pb.PhotoReport, preview: str) -> dict[str, Any]:
    """A photo with its verdict and crop box as percentages of the original (drawn over the preview)."""
    width, height = max(report.original_width, 1), max(report.original_height, 1)
    box = report.crop_box
    crop = None
    if report.HasField("crop_box") and box.right > box.left and box.bottom > box.top:
        crop = {
            "left": 100 * box.left / width,
            "top": 100 * box.top / height,
            "width": 100 * (box.right - box.left) / width,
            "height": 100 * (box.bottom - box.top) / height,
        }
    return {
        "name": report.file_name,
        "kept": report.kept,
        "reason": report.reason,
        "size": f"{report.original_width}x{report.original_height}" if report.original_width else "",
        "crop": crop,
        "crop_method": report.crop_method,
        "preview": preview,
    }


def subject(status: inference_pb.SubjectModelStatus) -> dict[str, Any]:
    model = status.model
    return {
        "id": model.model_id,
        "name": f"{model.identifier} {model.class_noun}".strip(),
        "base_model": model.base_model,
        "method": enum_label(types_pb2.TrainingMethod, model.method, "TRAINING_METHOD_"),
        "state": enum_label(inference_pb.LoadState, status.state, "LOAD_STATE_"),
        "job_id": model.job_id,
    }
