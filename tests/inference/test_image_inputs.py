"""Image inputs: img2img and inpainting validation, sizes, pipeline arguments, shared weights, batch independence."""

from __future__ import annotations

import ctypes
import gc
import io
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.errors import InvalidArgument
from likeness.inference.image_inputs import (
    ImageInput,
    batch_key,
    check_image_input,
    image_pipeline,
    pipeline_kwargs,
)
from likeness.inference.params import GenerationSpec, validate
from likeness.models.loading import arch_info
from likeness.models.tiny import create_tiny_pipeline
from likeness.models.tokenizer import clip_tokenizer

INFO = arch_info("sd15", tiny=True)
SIDE = 64
# Pixels in [0, 1]: an image denoised alone and in a batch of two differ by float rounding of the batched
# matrix products only (measured: under 1e-5 on two CPU cores), far below one 8-bit level (1 / 255).
BATCH_TOLERANCE = 1e-4


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(width: int = SIDE, height: int = SIDE, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def square_mask(width: int = SIDE, height: int = SIDE) -> Image.Image:
    """White (repaint) in the middle, black (keep) around it."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return mask


def check(
    init: bytes = b"",
    mask: bytes = b"",
    strength: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> tuple[ImageInput | None, int | None, int | None]:
    return check_image_input(init, mask, strength, width, height, info=INFO, base_model="tiny-sd15")


def field_of(error: pytest.ExceptionInfo[InvalidArgument]) -> str | None:
    return error.value.field


# ---- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"init": encode(photo()), "strength": 1.5}, "strength", "between 0 and 1"),
        ({"init": encode(photo()), "strength": -0.1}, "strength", "between 0 and 1"),
        ({"init": encode(photo()), "strength": math.nan}, "strength", "between 0 and 1"),
        ({"strength": 0.5}, "strength", "only used with init_image"),
        ({"mask": encode(square_mask())}, "mask_image", "only used with init_image"),
        ({"init": b"not an image at all"}, "init_image", "not image data"),
        ({"init": encode(photo())[:40]}, "init_image", "PNG"),
        ({"init": encode(photo()), "mask": b"\x89PNG\r\n\x1a\nbroken"}, "mask_image", "damaged"),
        ({"init": encode(photo(), "GIF")}, "init_image", "is GIF"),
        ({"init": encode(photo()), "mask": encode(square_mask().convert("RGB"))}, "mask_image", "grayscale"),
        ({"init": encode(photo()), "mask": encode(square_mask().convert("RGBA"))}, "mask_image", "mode RGBA"),
        ({"init": encode(photo()), "mask": encode(square_mask().convert("P"))}, "mask_image", "mode P"),
        ({"init": encode(photo()), "mask": encode(square_mask(), "WEBP")}, "mask_image", "WebP has no grayscale"),
        (
            {"init": encode(photo()), "mask": encode(square_mask(64, 32))},
            "mask_image",
            "64x32 px but init_image is 64x64",
        ),
        ({"init": encode(photo(100, 64))}, "init_image", "width must be a multiple of 8"),
        ({"init": encode(photo(64, 512))}, "init_image", "height must be between 32 and 256"),
        ({"init": encode(photo()), "width": 60}, "parameters.width", "multiple of 8"),
        ({"init": encode(photo()), "width": 64, "height": 512}, "parameters.height", "between 32 and 256"),
        # A 16:1 panorama at width 256 leaves a 16 px height, below the tiny model's 32.
        ({"init": encode(photo(256, 16)), "width": 256}, "parameters.height", "aspect ratio"),
    ],
)
def test_bad_image_inputs_name_their_field(kwargs: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        check(**kwargs)
    assert field_of(error) == field
    assert words in str(error.value)


def test_a_truncated_image_is_refused_while_decoding() -> None:
    # The header is intact (size and mode readable), the pixel data is cut short.
    data = encode(photo())
    with pytest.raises(InvalidArgument) as error:
        check(data[: len(data) // 2])
    assert field_of(error) == "init_image" and "truncated" in str(error.value)


def test_strength_must_leave_at_least_one_denoising_step() -> None:
    tokenizer = clip_tokenizer()

    def run(strength: float, steps: int):
        spec = GenerationSpec(
            prompt="a photo", init_image=encode(photo()), strength=strength, num_inference_steps=steps
        )
        return validate(
            spec,
            arch="sd15",
            info=INFO,
            base_model="tiny-sd15",
            subject=None,
            count_tokens=lambda text: len(tokenizer(text)["input_ids"]),
            max_tokens=77,
            rng=random.Random(0),
        )[0]

    with pytest.raises(InvalidArgument) as error:
        run(0.0, 30)
    assert field_of(error) == "strength" and "at least 0.034" in str(error.value)
    with pytest.raises(InvalidArgument):
        run(0.24, 4)
    assert run(0.25, 4).image_input is not None


# ---- sizes and decoding -----------------------------------------------------------------------------------


def test_without_width_and_height_the_output_takes_the_image_size() -> None:
    image_input, width, height = check(encode(photo(96, 48)))
    assert (width, height) == (96, 48)
    assert image_input is not None and image_input.mode == "img2img" and image_input.mask is None
    assert image_input.image.size == (96, 48) and image_input.image.mode == "RGB"
    assert image_input.strength == 0.75


def test_width_and_height_resize_the_image_and_the_mask() -> None:
    image_input, width, height = check(encode(photo(96, 48)), encode(square_mask(96, 48)), 0.5, 32, 64)
    assert (width, height) == (32, 64)
    assert image_input is not None and image_input.mode == "inpaint" and image_input.strength == 0.5
    assert image_input.image.size == (32, 64) and image_input.mask is not None
    assert image_input.mask.size == (32, 64) and image_input.mask.mode == "L"


def test_one_side_given_keeps_the_aspect_ratio() -> None:
    # 2:1 at width 128 gives height 64; at height 40, width 80.
    assert check(encode(photo(96, 48)), width=128)[1:] == (128, 64)
    assert check(encode(photo(96, 48)), height=40)[1:] == (80, 40)
    # 3:2 at width 200 gives 133.3, rounded to 136.
    assert check(encode(photo(96, 64)), width=200)[1:] == (200, 136)


def test_without_an_init_image_the_requested_size_passes_through() -> None:
    assert check(width=48, height=None) == (None, 48, None)


def test_exif_orientation_is_applied_before_sizes_are_compared() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 64 wide and 32 high, shown 32 wide and 64 high
    stored = photo(64, 32)
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    image_input, width, height = check(data, encode(square_mask(32, 64)))
    assert (width, height) == (32, 64)
    assert image_input is not None and image_input.image.size == (32, 64)
    with pytest.raises(InvalidArgument) as error:
        check(data, encode(square_mask(64, 32)))
    assert field_of(error) == "mask_image"


def test_bilevel_masks_are_accepted_as_grayscale() -> None:
    bilevel = square_mask().convert("1")
    image_input, _, _ = check(encode(photo(), "WEBP", lossless=True), encode(bilevel))
    assert image_input is not None and image_input.mask is not None and image_input.mask.mode == "L"
    assert sorted(np.unique(np.asarray(image_input.mask)).tolist()) == [0, 255]
    assert np.array_equal(np.asarray(image_input.mask), np.asarray(square_mask()))


def test_validate_takes_the_output_size_from_the_init_image() -> None:
    tokenizer = clip_tokenizer()

    def run(spec: GenerationSpec):
        return validate(
            spec,
            arch="sd15",
            info=INFO,
            base_model="tiny-sd15",
            subject=None,
            count_tokens=lambda text: len(tokenizer(text)["input_ids"]),
            max_tokens=77,
            rng=random.Random(0),
        )[0]

    params = run(
        GenerationSpec(prompt="a photo", init_image=encode(photo(48, 96)), mask_image=encode(square_mask(48, 96)))
    )
    assert (params.width, params.height) == (48, 96)
    assert params.image_input is not None and params.image_input.mode == "inpaint"
    text = run(GenerationSpec(prompt="a photo"))
    assert text.image_input is None and (text.width, text.height) == (INFO.default_resolution,) * 2
    with pytest.raises(InvalidArgument) as error:
        run(GenerationSpec(prompt="a photo", strength=0.5))
    assert field_of(error) == "strength"


# ---- batch keys and pipeline arguments --------------------------------------------------------------------


def test_requests_share_a_batch_only_with_the_same_mode_and_strength() -> None:
    img2img = check(encode(photo()), strength=0.5)[0]
    other_image = check(encode(photo(seed=1)), strength=0.5)[0]
    stronger = check(encode(photo()), strength=0.6)[0]
    inpaint = check(encode(photo()), encode(square_mask()), strength=0.5)[0]
    assert batch_key(img2img) == batch_key(other_image) == ("img2img", 0.5)
    assert len({batch_key(img2img), batch_key(stronger), batch_key(inpaint), batch_key(None)}) == 4


def test_pipeline_kwargs_list_one_entry_per_image_in_order() -> None:
    first, second = (check(encode(photo(seed=seed)), strength=0.5)[0] for seed in (0, 1))
    assert first is not None and second is not None
    kwargs = pipeline_kwargs([first, first, second])
    assert set(kwargs) == {"image", "strength"} and kwargs["strength"] == 0.5
    assert kwargs["image"] == [first.image, first.image, second.image]

    inpaint = check(encode(photo()), encode(square_mask()), strength=0.5)[0]
    assert inpaint is not None
    kwargs = pipeline_kwargs([inpaint, inpaint])
    assert kwargs["mask_image"] == [inpaint.mask, inpaint.mask]
    assert (kwargs["width"], kwargs["height"]) == (SIDE, SIDE)

    stronger = check(encode(photo()), strength=0.6)[0]
    assert stronger is not None
    for mixed in ([first, stronger], [first, inpaint]):
        with pytest.raises(ValueError, match="one mode and strength"):
            pipeline_kwargs(mixed)
    with pytest.raises(ValueError):
        pipeline_kwargs([])


# ---- pipelines over the base's modules --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd15():
    return create_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def tiny_sdxl():
    return create_tiny_pipeline("sdxl")


def _modules(pipeline) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in pipeline.components.items() if isinstance(module, torch.nn.Module)}


def _storage_bytes(pipelines) -> int:
    """Bytes of the distinct tensor storages of every module of `pipelines`: a copy of a weight counts twice."""
    storages: dict[int, int] = {}
    for pipeline in pipelines:
        for module in _modules(pipeline).values():
            for tensor in [*module.parameters(), *module.buffers()]:
                storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_bytes() -> int:
    """Bytes glibc's malloc has handed out and not taken back (torch's CPU tensors come from it).

    Not the resident set size: a copy of the tiny models fits in memory the allocator freed while building them,
    so RSS barely moves (measured: 1.2 MB for a 13 MB copy), while this counts the copy in full.
    """
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_image_pipelines_share_the_base_weights(arch: str, mode: str, tiny_sd15, tiny_sdxl) -> None:
    base = tiny_sd15 if arch == "sd15" else tiny_sdxl
    base_bytes = _storage_bytes([base])
    gc.collect()
    before = _heap_bytes()
    pipeline = image_pipeline(base, mode)
    grown = _heap_bytes() - before
    expected = {"sd15": "StableDiffusion", "sdxl": "StableDiffusionXL"}[arch]
    assert type(pipeline).__name__ == f"{expected}{'Img2Img' if mode == 'img2img' else 'Inpaint'}Pipeline"
    modules = _modules(pipeline)
    assert set(modules) == set(_modules(base)) >= {"unet", "vae", "text_encoder"}
    for name, module in modules.items():
        assert module is getattr(base, name), name
        ours = [tensor.data_ptr() for tensor in module.parameters()]
        assert ours == [tensor.data_ptr() for tensor in getattr(base, name).parameters()], name
    assert pipeline.scheduler is base.scheduler and pipeline.tokenizer is base.tokenizer
    assert _storage_bytes([base, pipeline]) == base_bytes
    # A copy of the weights would add all of base_bytes (13 MB for tiny SD 1.x, 20 MB for tiny SDXL); building the
    # pipeline object itself allocates well under a megabyte.
    assert grown < base_bytes // 10


def test_a_half_precision_base_stays_half_precision() -> None:
    """diffusers' from_pipe casts the shared modules to float32 unless told the dtype; on a GPU that would
    replace a float16 base's weights by float32 copies."""
    base = create_tiny_pipeline("sd15").to(dtype=torch.float16)
    pointers = {name: [p.data_ptr() for p in module.parameters()] for name, module in _modules(base).items()}
    pipeline = image_pipeline(base, "inpaint")
    for name, module in _modules(base).items():
        assert {p.dtype for p in module.parameters()} == {torch.float16}, name
        assert [p.data_ptr() for p in module.parameters()] == pointers[name], name
    assert pipeline.unet is base.unet


def test_a_base_of_mixed_dtypes_is_refused_rather_than_cast() -> None:
    base = create_tiny_pipeline("sd15")
    base.vae.to(dtype=torch.float16)
    with pytest.raises(ValueError, match="one dtype"):
        image_pipeline(base, "img2img")
    assert base.unet.dtype == torch.float32 and base.vae.dtype == torch.float16


def test_image_pipeline_refuses_unknown_modes(tiny_sd15) -> None:
    with pytest.raises(ValueError, match="unknown image mode"):
        image_pipeline(tiny_sd15, "outpaint")


def _generate(pipeline, inputs: list[ImageInput], prompts: list[str], seeds: list[int], output_type: str = "np"):
    return pipeline(
        prompt=prompts,
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        output_type=output_type,
        **pipeline_kwargs(inputs),
    ).images


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_a_text_to_image_unet_inpaints_only_the_masked_region(arch: str, tiny_sd15, tiny_sdxl) -> None:
    """A 4-channel UNet: diffusers blends init_image's noised latents back outside the mask after each step, so
    at the end the kept region holds init_image's latents whatever the prompt."""
    base = tiny_sd15 if arch == "sd15" else tiny_sdxl
    inpaint = image_pipeline(base, "inpaint")
    assert inpaint.unet.config.in_channels == 4
    image_input = check_image_input(
        encode(photo()), encode(square_mask()), 1.0, None, None, info=arch_info(arch, tiny=True), base_model="tiny"
    )[0]
    assert image_input is not None
    latents = _generate(inpaint, [image_input] * 2, ["a red cat", "a blue dog on a beach"], [3, 3], "latent")
    scale = SIDE // latents.shape[-1]
    keep = torch.from_numpy(np.asarray(image_input.mask.resize((SIDE // scale,) * 2, Image.Resampling.NEAREST)) == 0)
    assert torch.equal(latents[0][:, keep], latents[1][:, keep])
    assert not torch.allclose(latents[0][:, ~keep], latents[1][:, ~keep], atol=1e-3)


@pytest.mark.parametrize("masked", [False, True], ids=["img2img", "inpaint"])
def test_an_image_does_not_depend_on_its_batch(masked: bool, tiny_sd15) -> None:
    mode = "inpaint" if masked else "img2img"
    pipeline = image_pipeline(tiny_sd15, mode)
    image_input = check(encode(photo()), encode(square_mask()) if masked else b"", 0.6)[0]
    other = check(encode(photo(seed=1)), encode(square_mask()) if masked else b"", 0.6)[0]
    assert image_input is not None and other is not None
    alone = _generate(pipeline, [image_input], ["a red cat"], [5])
    batch = _generate(pipeline, [other, image_input], ["a blue dog on a beach", "a red cat"], [9, 5])
    assert np.abs(alone[0] - batch[1]).max() <= BATCH_TOLERANCE
    # The other sample is a different image: the comparison above is not trivially true.
    assert np.abs(batch[0] - batch[1]).max() > 0.1


# ---- the wire ---------------------------------------------------------------------------------------------


def test_the_request_fields_reach_the_spec() -> None:
    from likeness.inference.servicer import spec_from_request
    from likeness_client.v1 import inference_service_pb2 as pb

    init, mask = encode(photo()), encode(square_mask())
    spec = spec_from_request(pb.GenerateImagesRequest(prompt="p", init_image=init, mask_image=mask, strength=0.5))
    assert (spec.init_image, spec.mask_image, spec.strength) == (init, mask, 0.5)
    unset = spec_from_request(pb.GenerateImagesRequest(prompt="p", init_image=init))
    assert (unset.mask_image, unset.strength) == (b"", None)
    # The images stay out of the spec's repr (logs): they may be megabytes.
    assert "init_image" not in repr(spec) and "strength=0.5" in repr(spec)


def test_the_largest_image_and_mask_fit_one_request_message() -> None:
    """SDXL's largest size, 2048 px, as incompressible noise (the worst case for PNG) plus a noise mask."""
    from likeness.server.settings import Settings

    rng = np.random.default_rng(0)
    side = arch_info("sdxl").max_resolution
    init = encode(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)), compress_level=1)
    mask = encode(Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)), compress_level=1)
    # 64 KiB leaves room for the prompt and every other field.
    assert len(init) + len(mask) + 64 * 1024 <= Settings().max_message_mb * 1024 * 1024
