"""Image encoding with A1111-style parameters, chunk splitting, and latent previews."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.api.chunks import split_chunks
from likeness.inference.encoding import ImageMetadata, encode_image, read_parameters
from likeness.inference.previews import LatentPreviewer, decode_latents
from likeness.models.tiny import create_tiny_pipeline

METADATA = ImageMetadata(
    prompt="a photo of sks dog, on a beach",
    negative_prompt="blurry",
    steps=20,
    sampler="Euler a",
    guidance_scale=7.5,
    seed=42,
    width=64,
    height=64,
    base_model="tiny-sd15",
    subject_model_id="model-1",
    lora_scale=0.8,
    extra={"Version": "likeness test"},
)


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_png_carries_a1111_parameters_and_json() -> None:
    data = encode_image(_image(), "png", METADATA)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert image.info["parameters"] == (
        "a photo of sks dog, on a beach\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: tiny-sd15, "
        "Subject model: model-1, Lora scale: 0.8, Version: likeness test"
    )
    assert json.loads(image.info["likeness"])["seed"] == 42
    assert np.array_equal(np.asarray(image), np.asarray(_image()))  # lossless


def test_a1111_omits_an_empty_negative_prompt_and_quotes_awkward_values() -> None:
    metadata = ImageMetadata("p", "", 4, "DDIM", 7.0, 1, 64, 64, "base,with:comma")
    assert (
        metadata.a1111_text()
        == 'p\nSteps: 4, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 64x64, Model: "base,with:comma"'
    )


@pytest.mark.parametrize(("image_format", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_lossy_formats_carry_the_parameters_in_exif(image_format: str, pil_format: str) -> None:
    data = encode_image(_image(), image_format, METADATA)
    assert Image.open(io.BytesIO(data)).format == pil_format
    assert read_parameters(data) == METADATA.a1111_text()


def test_chunks_split_and_join_back() -> None:
    data = bytes(range(256)) * 40
    chunks = split_chunks(data, 1000)
    assert [len(c) for c in chunks] == [1000] * 10 + [240]
    assert b"".join(chunks) == data
    assert split_chunks(b"", 10) == [b""]


class LinearDecoder(torch.nn.Module):
    """A stand-in VAE whose decoder is exactly linear per latent pixel (real SD VAEs are close to it; the random
    tiny test VAEs are not, so they cannot show whether the fit works)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            "mix", torch.tensor([[0.3, -0.2, 0.1], [0.05, 0.25, -0.1], [-0.2, 0.1, 0.3], [0.1, 0.1, 0.1]])
        )
        self.register_buffer("offset", torch.tensor([0.1, -0.05, 0.0]))
        self.config = SimpleNamespace(latent_channels=4, scaling_factor=0.5, force_upcast=False)

    def decode(self, latents: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        rgb = torch.einsum("nchw,cr->nrhw", latents, self.mix) + self.offset[None, :, None, None]
        return (torch.nn.functional.interpolate(rgb, scale_factor=8, mode="nearest"),)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


def test_preview_fit_recovers_a_linear_decoder() -> None:
    decoder = LinearDecoder()
    previewer = LatentPreviewer.fit(decoder)
    # In-loop latents are scaled: the decoder sees latents / scaling_factor.
    assert torch.allclose(previewer.weights, decoder.mix / 0.5, atol=1e-4)
    assert torch.allclose(previewer.bias, decoder.offset, atol=1e-4)
    coarse = torch.randn(1, 4, 3, 4, generator=torch.Generator().manual_seed(3))
    latent = torch.nn.functional.interpolate(coarse, size=(16, 24), mode="bilinear")[0]
    with torch.no_grad():
        decoded = decode_latents(decoder, latent[None])
    preview = previewer.render(latent)
    image = Image.open(io.BytesIO(preview.data))
    assert image.format == "JPEG" and image.size == (preview.width, preview.height) == (64, 43)
    expected = ((decoded[0, :, ::8, ::8].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    shrunk = np.asarray(image.resize((24, 16), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(shrunk - expected).mean() < 12  # JPEG and resampling blur, the colours match


def test_preview_of_a_tiny_model_is_a_small_jpeg() -> None:
    vae = create_tiny_pipeline("sd15").vae
    preview = LatentPreviewer.fit(vae).render(torch.randn(4, 32, 32))
    assert Image.open(io.BytesIO(preview.data)).size == (64, 64)
