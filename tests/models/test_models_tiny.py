"""Tiny pipelines: the right architecture, seeded bit for bit, saved in safetensors, and a VAE that can learn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from transformers import CLIPTextModelWithProjection

from likeness.errors import InvalidArgument
from likeness.models.tiny import calibrate_vae, create_tiny_pipeline

PROMPT = "a photo of sks dog"


def generate(pipeline: DiffusionPipeline, seed: int, steps: int = 2) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipeline(PROMPT, num_inference_steps=steps, generator=generator, output_type="np").images


def test_sd15_architecture() -> None:
    pipeline = create_tiny_pipeline("sd15")
    assert tuple(pipeline.unet.config.block_out_channels) == (32, 64)
    assert pipeline.unet.config.layers_per_block == 1
    assert pipeline.unet.config.cross_attention_dim == 32
    assert pipeline.text_encoder.config.hidden_size == 32
    assert pipeline.text_encoder.config.num_hidden_layers == 2
    assert pipeline.text_encoder.config.vocab_size == 49408
    assert len(pipeline.vae.config.block_out_channels) == 2
    assert pipeline.unet.config.sample_size * pipeline.vae_scale_factor == 64


def test_sdxl_architecture() -> None:
    pipeline = create_tiny_pipeline("sdxl")
    assert isinstance(pipeline.text_encoder_2, CLIPTextModelWithProjection)
    assert pipeline.unet.config.addition_embed_type == "text_time"
    assert pipeline.unet.config.cross_attention_dim == 64
    assert pipeline.tokenizer_2.pad_token == "!"


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="sd15, sdxl"):
        create_tiny_pipeline("sd3")


def test_same_seed_gives_identical_weights_and_keeps_the_callers_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = create_tiny_pipeline("sd15", seed=7)
    assert torch.equal(torch.rand(3), expected_next)

    second = create_tiny_pipeline("sd15", seed=7)
    other = create_tiny_pipeline("sd15", seed=8)
    for component in ("unet", "vae", "text_encoder"):
        first_state = getattr(first, component).state_dict()
        second_state = getattr(second, component).state_dict()
        assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    assert not torch.equal(first.unet.conv_in.weight, other.unet.conv_in.weight)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_saved_pipeline_reloads_offline_and_generates_deterministically(
    arch: str, saved_tiny: Callable[[str], Path]
) -> None:
    folder = saved_tiny(arch)
    weight_files = {path.suffix for path in folder.rglob("*") if path.is_file() and path.parent != folder}
    assert ".safetensors" in weight_files
    assert not weight_files & {".bin", ".ckpt", ".pt", ".pth", ".pkl"}
    assert (folder / "tokenizer" / "vocab.json").is_file()

    pipeline = DiffusionPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    pipeline.set_progress_bar_config(disable=True)
    created = create_tiny_pipeline(arch)
    assert torch.equal(pipeline.unet.conv_in.weight, created.unet.conv_in.weight)
    assert pipeline.vae.config.scaling_factor == created.vae.config.scaling_factor

    first = generate(pipeline, seed=3)
    assert first.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(first, generate(pipeline, seed=3))
    assert not np.array_equal(first, generate(pipeline, seed=4))


def test_scheduler_config_serves_other_samplers() -> None:
    pipeline = create_tiny_pipeline("sd15")
    config = pipeline.scheduler.config
    for scheduler_class in (DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler):
        pipeline.scheduler = scheduler_class.from_config(config)
        image = generate(pipeline, seed=0)
        assert np.isfinite(image).all()
    assert DDIMScheduler.from_config(config).config.set_alpha_to_one is False


def test_vae_fix_gives_near_deterministic_unit_scale_latents() -> None:
    vae = create_tiny_pipeline("sd15").vae
    # Photos-like test images different from the calibration set: smooth colour gradients.
    ramp = torch.linspace(-1, 1, 64)
    images = torch.stack(
        [
            torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), -ramp[None, :].expand(64, 64)]),
            torch.stack([ramp[:, None].expand(64, 64) * 0.5, torch.zeros(64, 64), ramp[None, :].expand(64, 64)]),
            torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(11)) * 0.4 - 0.2,
        ]
    )
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
    latents = posterior.mean * vae.config.scaling_factor
    posterior_std = posterior.std * vae.config.scaling_factor
    assert float(posterior_std.max()) < 1e-3
    assert 0.3 < float(latents.std()) < 3.0
    assert float(latents.mean(dim=(0, 2, 3)).abs().max()) < 1.0

    # Without the fix, sampling adds unit noise (log-variance ~ 0) that swamps the latent signal.
    raw = AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
    )
    with torch.no_grad():
        raw_posterior = raw.encode(images).latent_dist
    assert float(raw_posterior.std.mean()) > 0.5
    assert float(raw_posterior.std.mean()) > 2 * float(raw_posterior.mean.std())


def test_calibration_keeps_decoding_unchanged() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
    )
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(image).latent_dist.mean).sample
        calibrate_vae(vae)
        after = vae.decode(vae.encode(image).latent_dist.mean).sample
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
