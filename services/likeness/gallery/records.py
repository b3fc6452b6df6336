"""The gallery's prompt record: its fields and the validation of what callers send."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from likeness.api import generation
from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument
from likeness.text import check_plain_text

# Owner of the built-in seed collection. The leading underscore keeps it out of the tenant name space.
SEED_TENANT = "_builtin"

MAX_PROMPT_CHARS = 1000
MAX_BASE_MODEL_CHARS = 200
MAX_SUBJECT_MODEL_ID_CHARS = 128
MAX_TAGS = 20
MAX_TAG_CHARS = 40
_TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9 _.+-]*$")

# The bounds of every parameter are those of likeness.type.v1.GenerationParameters (likeness.api.generation), the
# same the inference service checks, so a recorded prompt can be sent to it unchanged. Re-exported for callers.
SCHEDULERS = generation.SCHEDULERS
MAX_SEED = generation.MAX_SEED
#: The keys of a record's `params` (the domain names of the GenerationParameters fields).
PARAM_NAMES = tuple(generation.FIELDS_BY_KEY)


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


def validate_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked, normalized generation parameters (ints as int, floats as float, scheduler lower-case).

    The bounds are those of GenerationParameters (likeness.api.generation) and errors name its wire fields
    (`parameters.num_inference_steps`), because the gallery's callers send that message. Unknown keys are
    rejected so that a misspelt parameter is not silently recorded and lost; None and the "default" scheduler
    mean unset (the base model's default applies).
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidArgument(f"must be a mapping, got {type(params).__name__}", field=generation.PARAMETERS_FIELD)
    normalized: dict[str, Any] = {}
    for name, value in params.items():
        wire_name = generation.FIELDS_BY_KEY.get(name)
        if wire_name is None:
            raise InvalidArgument(f"unknown parameter; use {', '.join(PARAM_NAMES)}", field=generation.field_path(name))
        if value is None:
            continue  # unset: the base model's default applies
        if name == "scheduler":
            scheduler = generation.check_scheduler(value)
            if scheduler != generation.DEFAULT_SCHEDULER:
                normalized[name] = scheduler
        else:
            normalized[name] = generation.check_number(wire_name, value)
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
