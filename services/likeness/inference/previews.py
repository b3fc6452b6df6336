"""Cheap previews of the denoising in progress: a linear latent-to-RGB map instead of a VAE decode.

Each latent pixel maps to roughly one 8x8 (tiny models: 2x2) patch of the decoded image, and the mean colour of
that patch is close to a linear function of the latent channels (the trick behind A1111's "Approx cheap" and
ComfyUI's latent previews). The map is fitted once per base model, at load time, by least squares on a few
VAE-decoded random latents, so it works for any VAE (SD 1.x, SDXL, tiny test models) without published factors.
Rendering is one small matrix product, an upscale to at most 64 px and a JPEG encode.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

PREVIEW_MAX_SIDE = 64
PREVIEW_JPEG_QUALITY = 80
# Latent side of the fitting samples: small enough that the decode is cheap even for SDXL on a CPU.
FIT_LATENT_SIZE = 16
FIT_SAMPLES = 4


@dataclass(frozen=True)
class EncodedPreview:
    """A JPEG preview small enough for one stream message."""

    data: bytes
    width: int
    height: int


def _smooth_latents(count: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random latents with low-frequency structure, closer to real image latents than white noise."""
    coarse = torch.randn(count, channels, 4, 4, generator=generator)
    fine = torch.randn(count, channels, size, size, generator=generator)
    upsampled = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return upsampled + 0.3 * fine


@contextmanager
def upcast_for_decoding(vae: torch.nn.Module) -> Iterator[None]:
    """Run an fp16 VAE whose config asks for it (SDXL's overflows in fp16) in float32 for the block's decodes."""
    needs_upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if needs_upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if needs_upcast:
            vae.to(torch.float16)


def decode_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode in-loop (scaled) latents into images in [-1, 1], as the diffusers pipelines do.

    Honours SDXL-style `latents_mean`/`latents_std` and upcasts an fp16 VAE whose config asks for it (wrap many
    decodes in `upcast_for_decoding` to upcast once).
    """
    with upcast_for_decoding(vae):
        return _decode(vae, latents)


def _decode(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    config: Any = vae.config
    latents = latents.to(device=vae.device, dtype=vae.dtype)  # type: ignore[call-overload]  # diffusers ModelMixin properties
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        channels = latents.shape[1]
        mean_t = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, channels, 1, 1)
        std_t = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, channels, 1, 1)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor
    return vae.decode(latents, return_dict=False)[0]  # type: ignore[operator]  # AutoencoderKL method


class LatentPreviewer:
    """Renders in-loop latents of one base model as small JPEG previews."""

    def __init__(self, weights: torch.Tensor, bias: torch.Tensor) -> None:
        # weights: (latent channels, 3); bias: (3,). Kept on the CPU in float32: previews are tiny.
        self.weights = weights.float().cpu()
        self.bias = bias.float().cpu()

    @classmethod
    @torch.no_grad()
    def fit(cls, vae: torch.nn.Module, seed: int = 0) -> LatentPreviewer:
        """Fit the latent-to-RGB map of `vae` on a few decoded random latents (least squares)."""
        generator = torch.Generator().manual_seed(seed)
        channels = int(vae.config.latent_channels)  # type: ignore[union-attr,arg-type]  # diffusers config attribute
        latents = _smooth_latents(FIT_SAMPLES, channels, FIT_LATENT_SIZE, generator)
        images = decode_latents(vae, latents).float().cpu()
        # Mean colour of the patch each latent pixel becomes.
        targets = torch.nn.functional.adaptive_avg_pool2d(images, FIT_LATENT_SIZE)
        inputs = latents.permute(0, 2, 3, 1).reshape(-1, channels)
        outputs = targets.permute(0, 2, 3, 1).reshape(-1, 3)
        design = torch.cat([inputs, torch.ones(inputs.shape[0], 1)], dim=1)
        solution = torch.linalg.lstsq(design, outputs).solution
        return cls(solution[:channels], solution[channels])

    @torch.no_grad()
    def render(self, latent: torch.Tensor) -> EncodedPreview:
        """JPEG of one latent (channels, height, width), longest side at most 64 px."""
        latent = latent.detach().float().cpu()
        rgb = torch.einsum("chw,cr->hwr", latent, self.weights) + self.bias
        pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        image = Image.fromarray(pixels)
        height, width = pixels.shape[:2]
        scale = PREVIEW_MAX_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (width, height):
            image = image.resize(size, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
        return EncodedPreview(buffer.getvalue(), image.width, image.height)
