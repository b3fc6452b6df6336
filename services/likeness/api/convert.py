"""Protobuf <-> domain conversions used by more than one servicer (generation parameters, enums, subject models).

Each enum's names are derived here (or in `likeness.api.generation`) from the enum descriptor, so the proto is
the one list: scheduler, image format, training method and mixed precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api.generation import (
    DICT_KEYS,
    IMAGE_FORMAT_ENUMS,
    IMAGE_FORMAT_NAMES,
    SCHEDULER_ENUMS,
    SCHEDULER_NAMES,
    enum_names,
    scheduler_name,
)
from likeness.errors import InvalidArgument
from likeness_client.v1 import types_pb2

# Re-exported: the one scheduler and image format maps, derived from the proto's enums (likeness.api.generation).
__all__ = [
    "IMAGE_FORMAT_ENUMS",
    "IMAGE_FORMAT_NAMES",
    "MIXED_PRECISION_PREFIX",
    "MIXED_PRECISION_UNSPECIFIED_NAME",
    "MODEL_ORIGIN_ENUMS",
    "MODEL_ORIGIN_NAMES",
    "SCHEDULER_ENUMS",
    "SCHEDULER_NAMES",
    "SUBJECT_KIND_ENUMS",
    "SUBJECT_KIND_NAMES",
    "TRAINING_METHODS",
    "TRAINING_METHOD_ENUMS",
    "TRAINING_METHOD_NAMES",
    "mixed_precision_names",
    "params_from_dict",
    "params_to_dict",
    "subject_kind_name",
    "subject_model_to_pb",
    "timestamp",
    "training_method_enum",
    "training_method_name",
]

# ---- training method ----------------------------------------------------------------------------------------

#: TrainingMethod enum value -> the method name manifests and configs use ("lora", "full"); no UNSPECIFIED.
TRAINING_METHOD_NAMES: dict[int, str] = enum_names(types_pb2.TrainingMethod.DESCRIPTOR, "TRAINING_METHOD_")
#: Method name -> enum value (the inverse of TRAINING_METHOD_NAMES).
TRAINING_METHOD_ENUMS: dict[str, int] = {name: value for value, name in TRAINING_METHOD_NAMES.items()}
#: The method names, in enum order.
TRAINING_METHODS: tuple[str, ...] = tuple(TRAINING_METHOD_NAMES.values())


def training_method_enum(name: str) -> int:
    """The TrainingMethod value of a method name; TRAINING_METHOD_UNSPECIFIED for "" or an unknown name."""
    return TRAINING_METHOD_ENUMS.get(name, types_pb2.TRAINING_METHOD_UNSPECIFIED)


def training_method_name(value: int, *, field: str = "method") -> str:
    """The method name of a TrainingMethod value ("" for unspecified); InvalidArgument for unknown values."""
    if value == types_pb2.TRAINING_METHOD_UNSPECIFIED:
        return ""
    name = TRAINING_METHOD_NAMES.get(value)
    if name is None:
        raise InvalidArgument(f"unknown training method value {value}", field=field)
    return name


# ---- subject kinds and model origins ---------------------------------------------------------------------

#: SubjectKind enum value -> the kind name manifests use ("subject", "style"); no UNSPECIFIED.
SUBJECT_KIND_NAMES: dict[int, str] = enum_names(types_pb2.SubjectKind.DESCRIPTOR, "SUBJECT_KIND_")
SUBJECT_KIND_ENUMS: dict[str, int] = {name: value for value, name in SUBJECT_KIND_NAMES.items()}
#: ModelOrigin enum value -> the origin name manifests use ("trained", "imported"); no UNSPECIFIED.
MODEL_ORIGIN_NAMES: dict[int, str] = enum_names(types_pb2.ModelOrigin.DESCRIPTOR, "MODEL_ORIGIN_")
MODEL_ORIGIN_ENUMS: dict[str, int] = {name: value for value, name in MODEL_ORIGIN_NAMES.items()}


def subject_kind_name(value: int, *, field: str = "kind") -> str:
    """The kind name of a SubjectKind value ("" for unspecified); InvalidArgument for unknown values."""
    if value == types_pb2.SUBJECT_KIND_UNSPECIFIED:
        return ""
    name = SUBJECT_KIND_NAMES.get(value)
    if name is None:
        raise InvalidArgument(f"unknown subject kind value {value}", field=field)
    return name


# ---- mixed precision ----------------------------------------------------------------------------------------

MIXED_PRECISION_PREFIX = "MIXED_PRECISION_"
#: The name of MIXED_PRECISION_UNSPECIFIED: let the trainer pick for the device.
MIXED_PRECISION_UNSPECIFIED_NAME = "auto"


def mixed_precision_names(enum: EnumDescriptor) -> dict[int, str]:
    """`likeness.trainer.v1.MixedPrecision` value -> config name ("auto", "no", "fp16", "bf16").

    The enum lives in the trainer's proto, which this layer does not import: pass `pb.MixedPrecision.DESCRIPTOR`.
    """
    return enum_names(enum, MIXED_PRECISION_PREFIX, unspecified=MIXED_PRECISION_UNSPECIFIED_NAME)


def params_to_dict(params: types_pb2.GenerationParameters) -> dict[str, Any]:
    """Only the fields the caller set, so unset ones keep meaning "the model's default"."""
    out: dict[str, Any] = {}
    for field, key in DICT_KEYS.items():
        if params.HasField(field):
            value = getattr(params, field)
            out[key] = round(value, 6) if isinstance(value, float) else value
    if params.scheduler:
        out["scheduler"] = scheduler_name(params.scheduler)
    return out


def params_from_dict(values: dict[str, Any], negative_prompt: str = "") -> types_pb2.GenerationParameters:
    message = types_pb2.GenerationParameters(negative_prompt=negative_prompt)
    for field, key in DICT_KEYS.items():
        if key in values and values[key] is not None:
            setattr(message, field, values[key])
    if values.get("scheduler"):
        message.scheduler = SCHEDULER_ENUMS[values["scheduler"]]  # type: ignore[assignment]  # enum values are ints
    return message


def timestamp(value: str | datetime | None) -> Timestamp | None:
    """An RFC 3339 string or datetime as a protobuf Timestamp (None stays None)."""
    if not value:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    message = Timestamp()
    message.FromDatetime(value)
    return message


# ---- subject models -----------------------------------------------------------------------------------------


class SubjectModelSource(Protocol):
    """What a SubjectModel is built from: `likeness.storage.manifest.SubjectModelManifest`."""

    model_id: str
    identifier: str
    class_noun: str
    base_model: str
    method: str
    lora_rank: int | None
    created_at: str
    metrics: dict[str, Any]
    training_config: dict[str, Any]
    kind: str
    origin: str

    @property
    def sample_image_keys(self) -> list[str]: ...


def _metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def subject_model_to_pb(manifest: SubjectModelSource, *, size_bytes: int = 0) -> types_pb2.SubjectModel:
    """The one SubjectModel message of a published subject model (trainer and inference both build it here).

    `size_bytes` is the total size of the published weight files (`likeness.inference.subject_files` computes it;
    the trainer records it when it publishes).
    """
    job_id = manifest.training_config.get("job_id")
    return types_pb2.SubjectModel(
        model_id=manifest.model_id,
        identifier=manifest.identifier,
        class_noun=manifest.class_noun,
        base_model=manifest.base_model,
        method=training_method_enum(manifest.method),  # type: ignore[arg-type]  # enum values are ints
        lora_rank=manifest.lora_rank or 0,
        create_time=timestamp(manifest.created_at),
        metrics=_metric_values(manifest.metrics),
        job_id=job_id if isinstance(job_id, str) else "",
        sample_image_keys=manifest.sample_image_keys,
        size_bytes=int(size_bytes),
        kind=SUBJECT_KIND_ENUMS.get(manifest.kind, types_pb2.SUBJECT_KIND_UNSPECIFIED),  # type: ignore[arg-type]  # enum values are ints
        origin=MODEL_ORIGIN_ENUMS.get(manifest.origin, types_pb2.MODEL_ORIGIN_UNSPECIFIED),  # type: ignore[arg-type]  # enum values are ints
    )
