"""Tiny, randomly initialised Stable Diffusion pipelines for tests, CI and CPU-only development.

They have the real architectures (SD 1.x: one CLIP text encoder; SDXL: CLIP + CLIP-with-projection and the
`text_time` micro-conditioning), the real 49,408-token CLIP vocabulary, and widths small enough that a 64 px image
takes about a second on a CPU. Native size: 64 px images, 32 x 32 x 4 latents (the 2-level VAE downsamples by 2,
not 8 like the real one).

Creation is seeded and bit-for-bit deterministic. A random VAE would make training impossible (its posterior is
almost pure noise, see `calibrate_vae`), so the VAE is calibrated before the pipeline is returned.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# mypy resolves diffusers' top-level exports to its dummy placeholder classes (no Module or pipeline
# attributes), hence the type: ignore comments on diffusers attribute uses below.
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from likeness.errors import InvalidArgument
from likeness.models.arch import TINY_ARCHS, TINY_FORMAT_VERSION, TINY_RESOLUTION, check_tiny_arch
from likeness.models.loading import disable_progress_bars
from likeness.models.tokenizer import (
    CLIP_VOCAB_SIZE,
    TOKENIZER_FILES,
    clip_tokenizer,
    clip_tokenizer_dir,
)

__all__ = [
    "SCHEDULER_CONFIG",
    "TINY_ARCHS",
    "TINY_FORMAT_VERSION",
    "TINY_LATENT_SIZE",
    "TINY_RESOLUTION",
    "calibrate_vae",
    "create_tiny_pipeline",
    "save_tiny_pipeline",
]

TINY_LATENT_SIZE = 32

TEXT_HIDDEN_SIZE = 32
TEXT_PROJECTION_DIM = 32
UNET_CHANNELS = (32, 64)
ADDITION_TIME_EMBED_DIM = 8
# A log-variance of -20 gives a posterior std of exp(-10) ~ 4.5e-5: sampling is effectively the mean.
VAE_POSTERIOR_LOGVAR = -20.0
VAE_CALIBRATION_IMAGES = 16

# Stable Diffusion's own noise schedule. `steps_offset=1` matches the released SD configs; with it DDPM accepts at
# most 999 inference steps. DDIM, Euler, DPM++ etc. can all be built from this config with `from_config`.
SCHEDULER_CONFIG: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # Fork the CPU RNG so building a model neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _text_encoder_config(*, projection: bool) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=4 * TEXT_HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_PROJECTION_DIM,
        # SD 1.x's CLIP ViT-L uses quick_gelu, SDXL's OpenCLIP bigG uses gelu.
        hidden_act="gelu" if projection else "quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
    )


def _unet(*, sdxl: bool) -> UNet2DConditionModel:
    common: dict[str, object] = {
        "sample_size": TINY_LATENT_SIZE,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": UNET_CHANNELS,
        "layers_per_block": 1,
        "norm_num_groups": 32,
    }
    if not sdxl:
        return UNet2DConditionModel(**common, cross_attention_dim=TEXT_HIDDEN_SIZE, attention_head_dim=8)
    return UNet2DConditionModel(
        **common,
        # SDXL concatenates the hidden states of both text encoders.
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        # Six size/crop numbers, each embedded in addition_time_embed_dim, plus the pooled text projection.
        projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + TEXT_PROJECTION_DIM,
    )


def _vae(*, sdxl: bool) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=TINY_RESOLUTION,
        # SDXL's real VAE overflows in fp16 and is upcast; keep the flag so pipelines behave like with the real one.
        force_upcast=sdxl,
    )


def _calibration_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random colour fields in [-1, 1]: low-frequency content like photos, not white noise."""
    coarse = torch.rand(count, 3, 4, 4, generator=generator) * 2 - 1
    medium = torch.rand(count, 3, 16, 16, generator=generator) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    images = images + 0.3 * torch.nn.functional.interpolate(medium, size=size, mode="bilinear", align_corners=False)
    return images.clamp(-1, 1)


@torch.no_grad()
def calibrate_vae(vae: AutoencoderKL, seed: int = 0) -> AutoencoderKL:
    """Make a random-weight VAE usable for training, in place.

    A random `AutoencoderKL` has log-variance ~ 0, so `latent_dist.sample()` is the mean plus unit noise that
    dwarfs it: the latents carry no image and nothing trains. Here the posterior becomes near-deterministic (a
    very negative log-variance), each latent channel is centred on calibration images (the decoder's input
    convolution is shifted back so decoding is unchanged), and `scaling_factor` is set to 1/std of the centred
    latents so `latents * scaling_factor` has unit variance, as the noise schedule assumes.
    """
    latent_channels = vae.config.latent_channels  # type: ignore[attr-defined]
    quant_conv = vae.quant_conv  # type: ignore[attr-defined]
    post_quant_conv = vae.post_quant_conv  # type: ignore[attr-defined]
    if quant_conv is None or post_quant_conv is None:
        raise InvalidArgument("calibrate_vae needs a VAE with quant_conv and post_quant_conv", field="vae")

    quant_conv.weight[latent_channels:] = 0
    quant_conv.bias[latent_channels:] = VAE_POSTERIOR_LOGVAR

    generator = torch.Generator().manual_seed(seed)
    images = _calibration_images(VAE_CALIBRATION_IMAGES, vae.config.sample_size, generator)  # type: ignore[attr-defined]
    means = vae.encode(images).latent_dist.mean  # type: ignore[attr-defined]
    channel_mean = means.mean(dim=(0, 2, 3))
    quant_conv.bias[:latent_channels] -= channel_mean
    # post_quant_conv(z + m) == post_quant_conv(z) + W m: restore what the decoder saw before centring.
    post_quant_conv.bias += post_quant_conv.weight[:, :, 0, 0] @ channel_mean

    centred_std = float((means - channel_mean[None, :, None, None]).std())
    vae.register_to_config(scaling_factor=1.0 / centred_std)  # type: ignore[attr-defined]
    return vae


def create_tiny_pipeline(arch: str, seed: int = 0) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """A tiny random SD 1.x (`"sd15"`) or SDXL (`"sdxl"`) pipeline on the CPU in float32, native size 64 px.

    The same `seed` gives bit-for-bit identical weights. The scheduler is a `DDPMScheduler` with Stable
    Diffusion's schedule; swap it with e.g. `EulerDiscreteScheduler.from_config(pipe.scheduler.config)`.
    """
    check_tiny_arch(arch)
    sdxl = arch == "sdxl"
    # Each component gets its own derived seed so changing one never shifts the others' weights.
    with _seeded(seed):
        unet = _unet(sdxl=sdxl)
    with _seeded(seed + 1):
        vae = calibrate_vae(_vae(sdxl=sdxl), seed=seed)
    with _seeded(seed + 2):
        text_encoder = CLIPTextModel(_text_encoder_config(projection=False))
    # from_config keeps DDIM-only keys (set_alpha_to_one) in the saved config so DDIM built from it matches SD.
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    for module in (unet, vae, text_encoder):
        module.eval()  # type: ignore[union-attr]

    if not sdxl:
        pipeline = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=clip_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
        return pipeline

    with _seeded(seed + 3):
        text_encoder_2 = CLIPTextModelWithProjection(_text_encoder_config(projection=True)).eval()
    tokenizer_2 = clip_tokenizer()
    # SDXL's second tokenizer pads with "!" (id 0), as released by Stability AI.
    tokenizer_2.pad_token = "!"
    pipeline = StableDiffusionXLPipeline(  # type: ignore[assignment]
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(),
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipeline.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipeline


def save_tiny_pipeline(arch: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny pipeline to `directory` in diffusers format, safetensors only, and return the path.

    Each tokenizer folder also gets CLIP's `vocab.json` + `merges.txt`, so `from_pretrained(directory,
    local_files_only=True)` works offline with any transformers version.
    """
    directory = Path(directory)
    pipeline = create_tiny_pipeline(arch, seed=seed)
    disable_progress_bars()
    pipeline.save_pretrained(directory, safe_serialization=True)  # type: ignore[union-attr]
    vocabulary_dir = clip_tokenizer_dir()
    for tokenizer_folder in ("tokenizer", "tokenizer_2"):
        if (directory / tokenizer_folder).is_dir():
            for name in TOKENIZER_FILES:
                shutil.copyfile(vocabulary_dir / name, directory / tokenizer_folder / name)
    return directory
