"""The bounds of `likeness.type.v1.GenerationParameters`: one table that the gallery and inference both check.

A prompt recorded in the gallery must be one the inference service takes unchanged, so both validate its
parameters here and name the wire field paths of the request (`parameters.num_inference_steps`, ...) in errors.
Scheduler names are derived from the proto's `Scheduler` enum, so the enum is the only list of them.

Width and height bounds here are the widest any base model takes; the inference service also checks the
requested base model's own bounds (`likeness.models.arch.ArchInfo`), which lie within these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import EnumDescriptor

from likeness.errors import InvalidArgument
from likeness_client.v1 import types_pb2

#: The message field of a request holding its GenerationParameters (GenerateImagesRequest, RecordPromptRequest).
PARAMETERS_FIELD = "parameters"

# ---- schedulers ---------------------------------------------------------------------------------------------

_SCHEDULER_PREFIX = "SCHEDULER_"
#: The name of SCHEDULER_UNSPECIFIED: the base model's own scheduler.
DEFAULT_SCHEDULER = "default"


def _scheduler_name(value: int) -> str:
    if value == types_pb2.SCHEDULER_UNSPECIFIED:
        return DEFAULT_SCHEDULER
    # SCHEDULER_EULER_ANCESTRAL -> "euler_ancestral".
    return types_pb2.Scheduler.Name(value).removeprefix(_SCHEDULER_PREFIX).lower()


#: Scheduler enum value -> the lower-case name the domain cores use; every value but SCHEDULER_UNSPECIFIED.
SCHEDULER_NAMES: dict[int, str] = {
    value.number: _scheduler_name(value.number)
    for value in types_pb2.Scheduler.DESCRIPTOR.values
    if value.number != types_pb2.SCHEDULER_UNSPECIFIED
}
#: Name -> enum value (the inverse of SCHEDULER_NAMES).
SCHEDULER_ENUMS: dict[str, int] = {name: value for value, name in SCHEDULER_NAMES.items()}
#: The explicit scheduler names, in enum order (without DEFAULT_SCHEDULER).
SCHEDULERS: tuple[str, ...] = tuple(SCHEDULER_NAMES.values())


def scheduler_name(value: int, *, field: str = f"{PARAMETERS_FIELD}.scheduler") -> str:
    """The name of a Scheduler enum value (DEFAULT_SCHEDULER for unspecified); InvalidArgument for unknown ones."""
    if value == types_pb2.SCHEDULER_UNSPECIFIED:
        return DEFAULT_SCHEDULER
    name = SCHEDULER_NAMES.get(value)
    if name is None:
        raise InvalidArgument(f"unknown scheduler value {value}", field=field)
    return name


def check_scheduler(value: Any, *, field: str = f"{PARAMETERS_FIELD}.scheduler", allow_default: bool = True) -> str:
    """A scheduler name, trimmed and lower-cased; one of SCHEDULERS (or DEFAULT_SCHEDULER where allowed)."""
    known = (DEFAULT_SCHEDULER, *SCHEDULERS) if allow_default else SCHEDULERS
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in known:
        raise InvalidArgument(f"unknown scheduler {value!r}; use one of {', '.join(known)}", field=field)
    return name


# ---- enum vocabularies --------------------------------------------------------------------------------------


def enum_names(enum: EnumDescriptor, prefix: str, *, unspecified: str | None = None) -> dict[int, str]:
    """Enum value -> lower-case name without `prefix` (TRAINING_METHOD_LORA -> "lora"), in enum order.

    The zero (UNSPECIFIED) value maps to `unspecified`, or is left out when that is None. Every map of an enum to
    the names the domain uses is built here from the enum's descriptor, so the proto stays the only list.
    """
    names: dict[int, str] = {}
    for value in enum.values:
        if value.number == 0:
            if unspecified is not None:
                names[0] = unspecified
            continue
        names[value.number] = value.name.removeprefix(prefix).lower()
    return names


# ---- image formats ------------------------------------------------------------------------------------------

#: The name of IMAGE_FORMAT_UNSPECIFIED's encoding: PNG.
DEFAULT_IMAGE_FORMAT = "png"
#: ImageFormat enum value -> encoding name ("png", "jpeg", "webp"); every value but IMAGE_FORMAT_UNSPECIFIED.
IMAGE_FORMAT_NAMES: dict[int, str] = enum_names(types_pb2.ImageFormat.DESCRIPTOR, "IMAGE_FORMAT_")
#: Encoding name -> enum value (the inverse of IMAGE_FORMAT_NAMES).
IMAGE_FORMAT_ENUMS: dict[str, int] = {name: value for value, name in IMAGE_FORMAT_NAMES.items()}
#: The explicit image format names, in enum order.
IMAGE_FORMATS: tuple[str, ...] = tuple(IMAGE_FORMAT_NAMES.values())
# File extensions that differ from the format name.
_EXTENSION_OVERRIDES = {"jpeg": "jpg"}
#: Format name -> media type ("image/jpeg").
IMAGE_MEDIA_TYPES: dict[str, str] = {name: f"image/{name}" for name in IMAGE_FORMATS}
#: Format name -> file extension without the dot ("jpg").
IMAGE_EXTENSIONS: dict[str, str] = {name: _EXTENSION_OVERRIDES.get(name, name) for name in IMAGE_FORMATS}


def image_format_name(value: int, *, field: str = "output_format") -> str:
    """The encoding name of an ImageFormat value (DEFAULT_IMAGE_FORMAT for unspecified); InvalidArgument if unknown."""
    if value == types_pb2.IMAGE_FORMAT_UNSPECIFIED:
        return DEFAULT_IMAGE_FORMAT
    name = IMAGE_FORMAT_NAMES.get(value)
    if name is None:
        raise InvalidArgument(f"unknown image format value {value}", field=field)
    return name


# ---- numeric fields -----------------------------------------------------------------------------------------

#: The proto's int64: the largest seed of any image (image i of a request uses seed + i).
MAX_SEED = 2**63 - 1
#: Widest image sizes of any base model: the tiny test models go down to 32 px, SDXL up to 2048 px.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, IMAGE_SIZE_MULTIPLE = 32, 2048, 8


@dataclass(frozen=True)
class Bound:
    """The accepted values of one numeric GenerationParameters field."""

    kind: type  # int or float
    low: int | float
    high: int | float
    multiple_of: int = 1
    unit: str = ""


#: GenerationParameters field -> its bounds. The proto's field comments state the same ranges.
BOUNDS: dict[str, Bound] = {
    "num_inference_steps": Bound(int, 1, 150, unit="steps"),
    "guidance_scale": Bound(float, 0.0, 30.0),
    "width": Bound(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, multiple_of=IMAGE_SIZE_MULTIPLE, unit="pixels"),
    "height": Bound(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, multiple_of=IMAGE_SIZE_MULTIPLE, unit="pixels"),
    "seed": Bound(int, 0, MAX_SEED),
    "lora_scale": Bound(float, 0.0, 2.0),
}

#: GenerationParameters field -> the key the domain uses in parameter dictionaries (gallery records).
DICT_KEYS: dict[str, str] = {
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "lora_scale": "lora_scale",
}
#: The inverse: parameter dictionary key -> GenerationParameters field ("scheduler" included).
FIELDS_BY_KEY: dict[str, str] = {key: name for name, key in DICT_KEYS.items()} | {"scheduler": "scheduler"}


def field_path(name: str) -> str:
    """The wire path of a GenerationParameters field in a request, e.g. "parameters.num_inference_steps"."""
    return f"{PARAMETERS_FIELD}.{name}"


def _show(number: int | float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def check_number(name: str, value: Any) -> int | float:
    """`value` of GenerationParameters field `name` as int or float within its bounds.

    Integral floats (30.0, from JSON or a protobuf Struct) are accepted for int fields. InvalidArgument names the
    wire path (`parameters.<name>`).
    """
    bound = BOUNDS[name]
    path = field_path(name)
    # bool is an int subclass; True as a step count is a caller bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"must be a number, got {type(value).__name__}", field=path)
    if not math.isfinite(value):
        raise InvalidArgument("must be a finite number", field=path)
    number: int | float
    if bound.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidArgument(f"must be a whole number, got {value:g}", field=path)
        number = int(value)
    else:
        number = float(value)
    if not bound.low <= number <= bound.high:
        unit = f" {bound.unit}" if bound.unit else ""
        raise InvalidArgument(
            f"must be between {_show(bound.low)} and {_show(bound.high)}{unit}, got {_show(number)}", field=path
        )
    if bound.multiple_of > 1 and int(number) % bound.multiple_of:
        raise InvalidArgument(f"must be a multiple of {bound.multiple_of}, got {_show(number)}", field=path)
    return number
