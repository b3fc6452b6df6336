"""Image inputs of a generation request: img2img (`init_image`, `strength`) and inpainting (`mask_image`).

Validation is pure: it decodes the uploads with the dataset's safe decoder (header checked before decoding,
decompression-bomb limit, EXIF orientation, colour profiles to sRGB), settles the output size from the image and
the request, and resizes. The pipelines that consume the result are built from a loaded base pipeline with
diffusers' `from_pipe`, which passes the same module objects on, so no second copy of the weights exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from likeness.dataset.decode import SWAPPING_ORIENTATIONS, load_upright_rgb, open_checked
from likeness.dataset.report import PhotoRejected
from likeness.errors import InvalidArgument
from likeness.inference.params import check_size
from likeness.models.loading import ArchInfo

MODES = ("img2img", "inpaint")
DEFAULT_STRENGTH = 0.75
FORMATS = {"PNG", "JPEG", "WEBP"}
# Modes Pillow opens single-channel 8-bit images in: grayscale ("L") and bilevel ("1").
MASK_MODES = {"L", "1"}
# The dataset's default decompression-bomb limit (PrepareOptions.max_pixels): a phone photo of up to 64 MP may be
# sent with width and height set to have it resized.
MAX_INPUT_PIXELS = 64_000_000

# The pipelines diffusers builds from a base pipeline's class (ArchInfo.pipeline_class_name) for each mode.
_IMAGE_PIPELINES = {
    "StableDiffusionPipeline": {
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
    },
    "StableDiffusionXLPipeline": {
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
    },
}


@dataclass(frozen=True)
class ImageInput:
    """A validated image input, ready for the pipeline: `image` is RGB at the output's width x height, `mask`
    (inpainting only) is mode "L" of the same size, white repaints and black keeps."""

    mode: str  # "img2img" | "inpaint"
    image: Image.Image
    mask: Image.Image | None
    strength: float


def check_image_input(
    init_image: bytes,
    mask_image: bytes,
    strength: float | None,
    width: int | None,
    height: int | None,
    *,
    info: ArchInfo,
    base_model: str,
) -> tuple[ImageInput | None, int | None, int | None]:
    """Validate the request's image fields; InvalidArgument names the field to fix.

    Returns the image input (None for text-to-image) and the output width and height: the request's when given,
    otherwise init_image's (one side given: the other follows init_image's aspect ratio). Without init_image the
    width and height are returned as they came, for the caller's defaults.
    """
    if not init_image:
        if strength is not None:
            raise InvalidArgument(
                "is only used with init_image; send init_image or leave strength unset", field="strength"
            )
        if mask_image:
            raise InvalidArgument(
                "is only used with init_image; send the image to inpaint as init_image", field="mask_image"
            )
        return None, width, height
    if strength is None:
        strength = DEFAULT_STRENGTH
    # NaN fails this comparison too.
    if not 0.0 <= strength <= 1.0:
        raise InvalidArgument(
            f"must be between 0 and 1 (the share of init_image repainted), got {strength:g}", field="strength"
        )

    image, source_size, swapped = _open(init_image, "init_image")
    mask = None
    if mask_image:
        mask, mask_size, _ = _open(mask_image, "mask_image")
        # The mode is in the header: refuse a colour mask before decoding anything.
        if mask.mode not in MASK_MODES:
            # Pillow opens every WebP as RGB or RGBA: the format has no grayscale images.
            hint = "; WebP has no grayscale images" if mask.format == "WEBP" else ""
            raise InvalidArgument(
                f"is mode {mask.mode}, not grayscale{hint}; send a single-channel 8-bit grayscale PNG or JPEG "
                "(mode L or 1) where white repaints and black keeps",
                field="mask_image",
            )
        if mask_size != source_size:
            raise InvalidArgument(
                f"is {mask_size[0]}x{mask_size[1]} px but init_image is {source_size[0]}x{source_size[1]} px; "
                "send a mask of init_image's size",
                field="mask_image",
            )
    size = _output_size(source_size, width, height, info, base_model)

    if image.format == "JPEG":
        # Decode at the smallest DCT scale that still covers the output (in stored orientation): a large photo
        # resized down then costs a fraction of a full decode.
        image.draft("RGB", (size[1], size[0]) if swapped else size)
    rgb = _resized(_decoded(image, "init_image"), size, Image.Resampling.LANCZOS)
    if mask is None:
        return ImageInput("img2img", rgb, None, float(strength)), size[0], size[1]
    # RGB and back is lossless for a grayscale image; it reuses the decoder's truncation checks and orientation.
    grey = _decoded(mask, "mask_image").convert("L")
    # Bilinear, not Lanczos: no ringing at the mask's edges (diffusers thresholds the mask at half grey).
    grey = _resized(grey, size, Image.Resampling.BILINEAR)
    return ImageInput("inpaint", rgb, grey, float(strength)), size[0], size[1]


def denoising_steps(steps: int, strength: float) -> int:
    """How many of `steps` an img2img or inpainting run denoises: diffusers' own count (`get_timesteps`)."""
    return min(int(steps * strength), steps)


def check_denoising_steps(image_input: ImageInput | None, steps: int) -> None:
    """At least one step must run: diffusers refuses a strength that leaves none."""
    if image_input is None or denoising_steps(steps, image_input.strength) >= 1:
        return
    least = -(-1000 // steps) / 1000  # 1 / steps rounded up to three decimals
    raise InvalidArgument(
        f"{image_input.strength:g} with {steps} steps denoises no step (steps x strength must be at least 1); "
        f"use a strength of at least {least:g} or more steps",
        field="strength",
    )


def batch_key(image_input: ImageInput | None) -> tuple[str, float | None]:
    """What image inputs add to the batch key: one pipeline call has one mode and one strength (the strength
    decides the timesteps the whole batch starts from). Sizes are in the key already."""
    if image_input is None:
        return ("txt2img", None)
    return (image_input.mode, image_input.strength)


def pipeline_kwargs(inputs: list[ImageInput]) -> dict[str, Any]:
    """The image arguments of one batched img2img or inpainting call, one entry per generated image in order.

    Pass them with the usual prompts and per-image generators. The img2img pipelines take no width or height
    (init_image's size decides, and passing them is a TypeError); for inpainting they are included, since
    diffusers otherwise falls back to the model's native size.
    """
    if not inputs:
        raise ValueError("a batch needs at least one image input")
    keys = {batch_key(item) for item in inputs}
    if len(keys) != 1:
        raise ValueError(f"one call takes one mode and strength, got {sorted(keys)}")
    mode, strength = inputs[0].mode, inputs[0].strength
    sizes = {item.image.size for item in inputs}
    if len(sizes) != 1:
        raise ValueError(f"one call takes one image size, got {sorted(sizes)}")
    kwargs: dict[str, Any] = {"image": [item.image for item in inputs], "strength": strength}
    if mode == "inpaint":
        masks = [item.mask for item in inputs]
        if any(mask is None for mask in masks):
            raise ValueError("an inpainting input lacks its mask")
        width, height = inputs[0].image.size
        kwargs.update(mask_image=masks, width=width, height=height)
    return kwargs


def image_pipeline(base_pipeline: Any, mode: str) -> Any:
    """The img2img or inpainting pipeline over `base_pipeline`'s modules (`from_pipe`: the same UNet, VAE, text
    encoders, tokenizers and scheduler objects, nothing copied), with its progress-bar settings.

    Adapters loaded into the base's modules apply here too. The scheduler is shared by reference at build time:
    a caller that later assigns a new scheduler to the base must assign it here as well. A 4-channel (text-to-
    image) UNet inpaints by blending the kept region's noised latents back after every step.
    """
    if mode not in MODES:
        raise ValueError(f"unknown image mode {mode!r}; one of {', '.join(MODES)}")
    names = _IMAGE_PIPELINES.get(type(base_pipeline).__name__)
    if names is None:
        raise ValueError(f"no {mode} pipeline for a {type(base_pipeline).__name__}")
    # Imported here: validation above must not pull in torch and diffusers.
    import diffusers
    import torch

    dtypes = {
        parameter.dtype
        for module in base_pipeline.components.values()
        if isinstance(module, torch.nn.Module)
        for parameter in module.parameters()
        if parameter.is_floating_point()
    }
    if len(dtypes) != 1:
        raise ValueError(f"the base pipeline's modules must share one dtype, got {sorted(map(str, dtypes))}")
    # from_pipe ends with `pipeline.to(dtype=torch_dtype or float32)` over the shared modules: without the base's
    # own dtype it would turn a float16 base into float32 in place (new storages, twice the memory).
    pipeline = getattr(diffusers, names[mode]).from_pipe(base_pipeline, torch_dtype=dtypes.pop())
    pipeline.set_progress_bar_config(**getattr(base_pipeline, "_progress_bar_config", {}))
    return pipeline


def _open(data: bytes, field: str) -> tuple[Image.Image, tuple[int, int], bool]:
    """Open the header: a PNG, JPEG or WebP within the pixel limit. Returns it, its upright size and whether
    its EXIF orientation swaps width and height."""
    try:
        image, orientation = open_checked(data, max_pixels=MAX_INPUT_PIXELS)
    except PhotoRejected as exc:
        raise InvalidArgument(f"{exc.detail}; send a PNG, JPEG or WebP image", field=field) from None
    if image.format not in FORMATS:
        raise InvalidArgument(f"is {image.format or 'an unknown format'}; send a PNG, JPEG or WebP image", field=field)
    width, height = image.size
    swapped = orientation in SWAPPING_ORIENTATIONS
    return image, ((height, width) if swapped else (width, height)), swapped


def _decoded(image: Image.Image, field: str) -> Image.Image:
    """Decode fully (a truncated file fails here), upright and in sRGB."""
    try:
        rgb, _notes = load_upright_rgb(image)
    except PhotoRejected as exc:
        raise InvalidArgument(f"{exc.detail}; send the complete PNG, JPEG or WebP file", field=field) from None
    return rgb


def _resized(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    return image if image.size == size else image.resize(size, resample)


def _output_size(
    source: tuple[int, int], width: int | None, height: int | None, info: ArchInfo, base_model: str
) -> tuple[int, int]:
    """The output size, checked like any requested size (params.check_size) before any pixel is decoded."""
    source_width, source_height = source
    if width is None and height is None:
        for value, side in ((source_width, "width"), (source_height, "height")):
            try:
                check_size(value, info, "init_image", base_model)
            except InvalidArgument as exc:
                raise InvalidArgument(
                    f"is {source_width}x{source_height} px and its {side} {exc.reason}; set parameters.width and "
                    "parameters.height to have it resized",
                    field="init_image",
                ) from None
        return source_width, source_height
    if width is not None and height is not None:
        return (
            check_size(width, info, "parameters.width", base_model),
            check_size(height, info, "parameters.height", base_model),
        )
    # One side given: the other keeps init_image's aspect ratio, rounded to the architecture's multiple.
    multiple = info.resolution_multiple
    if width is not None:
        check_size(width, info, "parameters.width", base_model)
        derived = max(multiple, round(width * source_height / source_width / multiple) * multiple)
        return width, _check_derived(derived, "parameters.height", source, info, base_model)
    assert height is not None
    check_size(height, info, "parameters.height", base_model)
    derived = max(multiple, round(height * source_width / source_height / multiple) * multiple)
    return _check_derived(derived, "parameters.width", source, info, base_model), height


def _check_derived(value: int, field: str, source: tuple[int, int], info: ArchInfo, base_model: str) -> int:
    try:
        return check_size(value, info, field, base_model)
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"follows init_image's aspect ratio ({source[0]}x{source[1]} px) as {value}, which {exc.reason}; "
            "set it explicitly",
            field=field,
        ) from None
