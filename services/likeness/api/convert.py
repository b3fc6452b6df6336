"""Protobuf <-> domain conversions used by more than one servicer (generation parameters, timestamps)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api.generation import DICT_KEYS, SCHEDULER_ENUMS, SCHEDULER_NAMES, scheduler_name
from likeness.type.v1 import types_pb2

# Re-exported: the one scheduler map, derived from the proto's Scheduler enum (likeness.api.generation).
__all__ = ["SCHEDULER_ENUMS", "SCHEDULER_NAMES", "params_from_dict", "params_to_dict", "timestamp"]


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
        message.scheduler = SCHEDULER_ENUMS[values["scheduler"]]
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
