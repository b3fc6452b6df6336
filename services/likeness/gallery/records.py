"""The gallery's prompt record: its fields and the validation of what callers send."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument
from likeness.models.arch import TINY_MIN_RESOLUTION
from likeness.text import check_plain_text

# Owner of the built-in seed collection. The leading underscore keeps it out of the tenant name space.
SEED_TENANT = "_builtin"

MAX_PROMPT_CHARS = 1000
MAX_BASE_MODEL_CHARS = 200
MAX_SUBJECT_MODEL_ID_CHARS = 128
MAX_TAGS = 20
MAX_TAG_CHARS = 40
_TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9 _.+-]*$")

# Names follow likeness.type.v1.Scheduler without the SCHEDULER_ prefix, lower-cased.
SCHEDULERS = ("ddim", "euler", "euler_ancestral", "dpm_solver_multistep", "uni_pc", "ddpm")
MAX_SEED = 2**63 - 1  # the proto's int64


@dataclass(frozen=True)
class _NumberRule:
    kind: type  # int or float
    low: float
    high: float
    multiple_of: int = 1


# Ranges match likeness.type.v1.GenerationParameters; width/height bounds are the widest any base model takes
# (the tiny test models go down to TINY_MIN_RESOLUTION, SDXL up to 2048).
_PARAM_RULES: dict[str, _NumberRule] = {
    "steps": _NumberRule(int, 1, 150),
    "guidance": _NumberRule(float, 0.0, 30.0),
    "width": _NumberRule(int, TINY_MIN_RESOLUTION, 2048, multiple_of=8),
    "height": _NumberRule(int, TINY_MIN_RESOLUTION, 2048, multiple_of=8),
    "seed": _NumberRule(int, 0, MAX_SEED),
    "lora_scale": _NumberRule(float, 0.0, 2.0),
}
PARAM_NAMES = (*_PARAM_RULES, "scheduler")


class PromptSource(ValueEnum):
    """Where a gallery entry came from (stored by value in `gallery_prompts.source`)."""

    RECORD = "record"
    GENERATION = "generation"
    IMPORT = "import"
    SEED = "seed"


@dataclass
class PromptRecord:
    """A prompt with the parameters it was generated with.

    `params` holds only keys of PARAM_NAMES; a missing key means "the base model's default".
    `uses` counts how often the identical prompt was recorded (a first recording counts 1).
    An empty `base_model` means the prompt suits any base model (the built-in seeds).
    `created_at` is seconds since the epoch. `shared` entries are visible to every tenant.
    """

    prompt_id: str
    tenant: str
    prompt: str
    negative_prompt: str = ""
    base_model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    subject_model_id: str = ""
    created_at: float = 0.0
    uses: int = 1
    shared: bool = False
    source: PromptSource = PromptSource.RECORD
    image_key: str | None = None
    thumbnail_key: str | None = None

    @property
    def builtin(self) -> bool:
        """True for the read-only seed collection every tenant sees."""
        return self.tenant == SEED_TENANT

    @property
    def has_image(self) -> bool:
        return self.image_key is not None


def _check_text(value: str, field_name: str, max_chars: int) -> str:
    """`value` without surrounding whitespace, at most `max_chars` long."""
    if not isinstance(value, str):
        raise InvalidArgument(f"must be a string, got {type(value).__name__}", field=field_name)
    value = value.strip()
    check_plain_text(value, field_name)
    if len(value) > max_chars:
        raise InvalidArgument(f"must be at most {max_chars} characters, got {len(value)}", field=field_name)
    return value


def validate_prompt(prompt: str) -> str:
    """The prompt without surrounding whitespace; non-empty and at most 1000 characters."""
    prompt = _check_text(prompt, "prompt", MAX_PROMPT_CHARS)
    if not prompt:
        raise InvalidArgument("must not be empty", field="prompt")
    return prompt


def validate_negative_prompt(negative_prompt: str) -> str:
    return _check_text(negative_prompt, "negative_prompt", MAX_PROMPT_CHARS)


def validate_base_model(base_model: str) -> str:
    return _check_text(base_model, "base_model", MAX_BASE_MODEL_CHARS)


def validate_subject_model_id(subject_model_id: str) -> str:
    return _check_text(subject_model_id, "subject_model_id", MAX_SUBJECT_MODEL_ID_CHARS)


def normalize_tag(tag: str, field_name: str) -> str:
    """Lower-case, trim and collapse inner whitespace; reject characters outside [a-z0-9 _.+-]."""
    if not isinstance(tag, str):
        raise InvalidArgument(f"must be a string, got {type(tag).__name__}", field=field_name)
    normalized = " ".join(tag.lower().split())
    if not normalized:
        raise InvalidArgument("must not be empty", field=field_name)
    if len(normalized) > MAX_TAG_CHARS:
        raise InvalidArgument(f"must be at most {MAX_TAG_CHARS} characters", field=field_name)
    if not _TAG_PATTERN.match(normalized):
        raise InvalidArgument(
            f"{tag!r} may only use letters, digits, spaces and _ . + - (starting with a letter or digit)",
            field=field_name,
        )
    return normalized


def validate_tags(tags: Iterable[str] | None, field_name: str = "tags") -> list[str]:
    """Normalized tags without duplicates, in the order given."""
    if tags is None:
        return []
    if isinstance(tags, str):
        raise InvalidArgument("must be a list of tags, not one string", field=field_name)
    normalized = [normalize_tag(tag, f"{field_name}[{index}]") for index, tag in enumerate(tags)]
    unique = list(dict.fromkeys(normalized))
    if len(unique) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} tags, got {len(unique)}", field=field_name)
    return unique


def _validate_number(name: str, value: Any, rule: _NumberRule) -> int | float:
    field_name = f"params.{name}"
    # bool is an int subclass; True as a step count is a caller bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"must be a number, got {type(value).__name__}", field=field_name)
    if not math.isfinite(value):
        raise InvalidArgument("must be a finite number", field=field_name)
    number: int | float
    if rule.kind is int:
        # Integral floats (30.0) arrive from JSON or protobuf Struct and are accepted as ints.
        if isinstance(value, float) and not value.is_integer():
            raise InvalidArgument(f"must be a whole number, got {value}", field=field_name)
        number = int(value)
    else:
        number = float(value)
    if not rule.low <= number <= rule.high:
        low = int(rule.low) if rule.kind is int else rule.low
        high = int(rule.high) if rule.kind is int else rule.high
        raise InvalidArgument(f"must be between {low} and {high}, got {number}", field=field_name)
    if rule.multiple_of > 1 and int(number) % rule.multiple_of:
        raise InvalidArgument(f"must be a multiple of {rule.multiple_of}, got {number}", field=field_name)
    return number


def validate_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked, normalized generation parameters (ints as int, floats as float, scheduler lower-case).

    Unknown keys are rejected so that a misspelt parameter is not silently recorded and lost.
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidArgument(f"must be a mapping, got {type(params).__name__}", field="params")
    normalized: dict[str, Any] = {}
    for name, value in params.items():
        if name not in PARAM_NAMES:
            raise InvalidArgument(f"unknown parameter; use {', '.join(PARAM_NAMES)}", field=f"params.{name}")
        if value is None:
            continue  # unset: the base model's default applies
        if name == "scheduler":
            if not isinstance(value, str) or value.strip().lower() not in SCHEDULERS:
                raise InvalidArgument(f"must be one of {', '.join(SCHEDULERS)}", field="params.scheduler")
            normalized[name] = value.strip().lower()
        else:
            normalized[name] = _validate_number(name, value, _PARAM_RULES[name])
    return dict(sorted(normalized.items()))


def dedupe_key(prompt: str, negative_prompt: str, base_model: str, params: Mapping[str, Any]) -> str:
    """Identity of a generation recipe: text (whitespace-insensitive), negative prompt, base model, params."""
    canonical = json.dumps(
        [
            " ".join(prompt.split()),
            " ".join(negative_prompt.split()),
            base_model,
            dict(sorted(params.items())),
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def recipe_prompt_id(tenant: str, recipe: str) -> str:
    """The id of a tenant's record of one recipe (see dedupe_key).

    Ids are derived from the content, so replicas recording the same prompt at once race on one storage key
    (create-if-absent) instead of writing duplicates.
    """
    digest = hashlib.sha256(f"{tenant}\n{recipe}".encode()).hexdigest()
    return f"pr-{digest[:32]}"
