"""Validation of generation requests: ranges, defaults, `{subject}` expansion and prompt truncation.

Everything here is pure (no models, no storage): the engine resolves the subject and base model first and passes
what validation needs (the subject's identifier and class noun, the base model's size bounds, its tokenizer).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING

from likeness.api import generation
from likeness.errors import InvalidArgument
from likeness.models.loading import ArchInfo
from likeness.text import check_plain_text

if TYPE_CHECKING:
    from likeness.inference.image_inputs import ImageInput

MIN_IMAGES, MAX_IMAGES = 1, 8
#: LoRAs a request may add to its subject model (`loras`), and the range of their weights.
MAX_LORAS = 4
LORA_WEIGHT_RANGE = (-2.0, 2.0)
DEFAULT_LORA_WEIGHT = 1.0
# The bounds of the GenerationParameters fields (steps, guidance, seed, LoRA scale, schedulers) are
# likeness.api.generation's, the table the gallery checks too.
DEFAULT_STEPS = 30
DEFAULT_LORA_SCALE = 1.0
# SDXL is tuned for lower guidance than SD 1.x/2.x (its model cards and diffusers' examples use 5).
DEFAULT_GUIDANCE = {"sd15": 7.5, "sd2": 7.5, "sdxl": 5.0}
MAX_PREVIEW_EVERY = 1000
# Seeds are 64-bit and image i uses seed + i: every image's seed must fit, so the first one of n images is at most
# MAX_SEED - (n - 1). One image may use any seed the gallery records.
MAX_SEED = generation.MAX_SEED
RANDOM_SEED_LIMIT = 2**32 - 1
SUBJECT_PLACEHOLDER = "{subject}"
SCHEDULERS = (generation.DEFAULT_SCHEDULER, *generation.SCHEDULERS)
_WORD_BOUNDARY = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class GenerationSpec:
    """A generation request as the client sent it; None means "not set" (the base model's default applies)."""

    prompt: str
    negative_prompt: str = ""
    num_images: int = 0
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    scheduler: str = "default"
    seed: int | None = None
    lora_scale: float | None = None
    output_format: str = "png"
    preview_every_n_steps: int = 0
    subject_model_id: str = ""
    base_model: str = ""
    # img2img and inpainting: the encoded images (empty: none; kept out of repr, they may be megabytes) and the
    # strength (None: the default, only with init_image).
    init_image: bytes = dataclass_field(default=b"", repr=False)
    mask_image: bytes = dataclass_field(default=b"", repr=False)
    strength: float | None = None
    # (lora id, weight or None for the default) in request order.
    loras: tuple[tuple[str, float | None], ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    """A validated request with every default filled in; `prompt` is the effective (expanded, truncated) one."""

    prompt: str
    negative_prompt: str
    num_images: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    seed: int
    lora_scale: float
    output_format: str
    preview_every_n_steps: int
    # img2img or inpainting: the decoded, resized image (and mask) and the strength; None for text-to-image.
    image_input: ImageInput | None = None
    # (lora id, weight) in request order, checked by `check_loras`.
    loras: tuple[tuple[str, float], ...] = ()

    @property
    def seeds(self) -> list[int]:
        return [self.seed + index for index in range(self.num_images)]


@dataclass(frozen=True)
class SubjectNames:
    """How prompts name a subject: "{subject}" expands to "<identifier> <class noun>"."""

    identifier: str
    class_noun: str

    @property
    def phrase(self) -> str:
        return f"{self.identifier} {self.class_noun}"


def _check_range(value: float, low: float, high: float, field: str, what: str) -> None:
    if not low <= value <= high:
        unit = f" {what}" if what else ""
        raise InvalidArgument(f"must be between {low:g} and {high:g}{unit}, got {value:g}", field=field)


def check_size(value: int, info: ArchInfo, field: str, base_model: str) -> int:
    """A width or height: a multiple of the architecture's factor within its bounds."""
    if value % info.resolution_multiple != 0:
        raise InvalidArgument(f"must be a multiple of {info.resolution_multiple}, got {value}", field=field)
    if not info.min_resolution <= value <= info.max_resolution:
        raise InvalidArgument(
            f"must be between {info.min_resolution} and {info.max_resolution} pixels for base model "
            f"{base_model!r}, got {value}",
            field=field,
        )
    return value


def check_loras(loras: Sequence[tuple[str, float | None]], subject_model_id: str) -> tuple[tuple[str, float], ...]:
    """The request's extra LoRAs with their weights: at most `MAX_LORAS`, each id once, weights in range.

    Whether each id exists, belongs to the caller and fits the base model is the engine's check (it reads storage).
    """
    if len(loras) > MAX_LORAS:
        raise InvalidArgument(f"names {len(loras)} LoRAs; at most {MAX_LORAS} may be combined", field="loras")
    checked: list[tuple[str, float]] = []
    for index, (lora_id, weight) in enumerate(loras):
        if not lora_id:
            raise InvalidArgument("must name a subject model or style", field=f"loras[{index}].lora_id")
        if lora_id == subject_model_id:
            raise InvalidArgument(
                f"{lora_id!r} is the request's subject_model_id already; set its strength with "
                "parameters.lora_scale instead",
                field=f"loras[{index}].lora_id",
            )
        if any(lora_id == seen for seen, _ in checked):
            raise InvalidArgument(f"{lora_id!r} is listed twice", field=f"loras[{index}].lora_id")
        value = DEFAULT_LORA_WEIGHT if weight is None else weight
        low, high = LORA_WEIGHT_RANGE
        if not (low <= value <= high):  # also false for NaN
            raise InvalidArgument(
                f"must be between {low:g} and {high:g}, got {value:g}", field=f"loras[{index}].weight"
            )
        checked.append((lora_id, float(value)))
    return tuple(checked)


def expand_prompt(prompt: str, subject: SubjectNames | None) -> tuple[str, list[str]]:
    """Replace "{subject}" with "<identifier> <class noun>"; returns the prompt and warnings to stream."""
    if not prompt.strip():
        raise InvalidArgument(
            "must not be empty; describe the image, e.g. 'a photo of {subject} on a beach'", field="prompt"
        )
    if subject is None:
        if SUBJECT_PLACEHOLDER in prompt:
            raise InvalidArgument(
                "uses {subject} but no subject_model_id was given; name a subject model or remove the placeholder",
                field="prompt",
            )
        return prompt, []
    expanded = prompt.replace(SUBJECT_PLACEHOLDER, subject.phrase)
    warnings = []
    if not re.search(rf"(?<!\w){re.escape(subject.identifier)}(?!\w)", expanded, flags=re.IGNORECASE):
        warnings.append(
            f"the prompt does not mention the subject's identifier {subject.identifier!r}, so the subject may not "
            f"appear; write {SUBJECT_PLACEHOLDER} or {subject.identifier!r} where it belongs"
        )
    return expanded, warnings


def truncate_prompt(prompt: str, count_tokens: Callable[[str], int], max_tokens: int) -> tuple[str, bool]:
    """The longest prefix of whole words whose token count (start and end tokens included) fits `max_tokens`.

    Cutting at word boundaries keeps the effective prompt a readable prefix of what the client wrote, which the
    stream reports back. Returns (prompt, was_truncated).
    """
    if count_tokens(prompt) <= max_tokens:
        return prompt, False
    words: Sequence[str] = _WORD_BOUNDARY.findall(prompt.lstrip())
    low, high = 0, len(words)
    # Binary search on the number of words: token counts grow monotonically with the prefix.
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens("".join(words[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return "".join(words[:low]).rstrip(), True


def validate(
    spec: GenerationSpec,
    *,
    arch: str,
    info: ArchInfo,
    base_model: str,
    subject: SubjectNames | None,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    rng: random.Random | None = None,
) -> tuple[GenerationParams, list[str]]:
    """Check every field (InvalidArgument naming the field), fill defaults, expand and truncate the prompts.

    Returns the parameters and the warnings to stream (truncation, a prompt missing the subject).
    """
    num_images = spec.num_images or MIN_IMAGES
    _check_range(num_images, MIN_IMAGES, MAX_IMAGES, "num_images", "images")
    steps: int | float = DEFAULT_STEPS if spec.num_inference_steps is None else spec.num_inference_steps
    steps = generation.check_number("num_inference_steps", steps)
    guidance = DEFAULT_GUIDANCE.get(arch, 7.5) if spec.guidance_scale is None else spec.guidance_scale
    guidance = generation.check_number("guidance_scale", guidance)
    lora_scale = DEFAULT_LORA_SCALE if spec.lora_scale is None else spec.lora_scale
    lora_scale = generation.check_number("lora_scale", lora_scale)
    scheduler = generation.check_scheduler(spec.scheduler)
    loras = check_loras(spec.loras, spec.subject_model_id)
    if spec.output_format not in ("png", "jpeg", "webp"):
        raise InvalidArgument(f"unknown format {spec.output_format!r}", field="output_format")
    _check_range(spec.preview_every_n_steps, 0, MAX_PREVIEW_EVERY, "preview_every_n_steps", "steps (0 disables)")
    if spec.seed is None:
        seed: int | float = (rng or random.SystemRandom()).randint(0, RANDOM_SEED_LIMIT)
    else:
        seed = generation.check_number("seed", spec.seed)
        last = MAX_SEED - (int(num_images) - 1)
        if seed > last:
            raise InvalidArgument(
                f"must be at most {last} for {num_images} images (image i uses seed + i, at most {MAX_SEED}), "
                f"got {seed}",
                field="parameters.seed",
            )

    # Last, as decoding an image costs more than every check above. Imported here: image_inputs imports
    # check_size from this module. Without width and height an init image gives the output its size.
    from likeness.inference.image_inputs import check_denoising_steps, check_image_input

    image_input, requested_width, requested_height = check_image_input(
        spec.init_image, spec.mask_image, spec.strength, spec.width, spec.height, info=info, base_model=base_model
    )
    check_denoising_steps(image_input, int(steps))
    # The base model's own bounds (within generation.BOUNDS, which the gallery checks without knowing the model).
    width = check_size(
        info.default_resolution if requested_width is None else requested_width, info, "parameters.width", base_model
    )
    height = check_size(
        info.default_resolution if requested_height is None else requested_height,
        info,
        "parameters.height",
        base_model,
    )
    check_plain_text(spec.prompt, "prompt")
    check_plain_text(spec.negative_prompt, "parameters.negative_prompt")
    prompt, warnings = expand_prompt(spec.prompt, subject)
    prompt, truncated = truncate_prompt(prompt, count_tokens, max_tokens)
    if truncated:
        warnings.append(f"the prompt is longer than the text encoder's {max_tokens} tokens and was cut to: {prompt!r}")
    negative = spec.negative_prompt.replace(SUBJECT_PLACEHOLDER, subject.phrase) if subject else spec.negative_prompt
    negative, negative_truncated = truncate_prompt(negative, count_tokens, max_tokens)
    if negative_truncated:
        warnings.append(
            f"the negative prompt is longer than the text encoder's {max_tokens} tokens and was cut to: {negative!r}"
        )
    params = GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        num_images=int(num_images),
        steps=int(steps),
        guidance_scale=guidance,
        width=width,
        height=height,
        scheduler=scheduler,
        seed=int(seed),
        lora_scale=lora_scale,
        output_format=spec.output_format,
        preview_every_n_steps=int(spec.preview_every_n_steps),
        image_input=image_input,
        loras=loras,
    )
    return params, warnings
