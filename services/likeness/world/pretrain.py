"""Pretrains the toy base model on the synthetic world: `python -m likeness.world.pretrain --out DIR`.

Two stages, like Stable Diffusion itself:

1. An autoencoder (`AutoencoderKL`, near-deterministic posterior) learns to map 32 px world pictures to
   16 x 16 x 4 latents and back. Small noise is added to latents while it trains, so the decoder forgives the
   imperfect latents a tiny diffusion model produces. Latents are then centred per channel and scaled to unit
   variance (`scaling_factor`), as the noise schedule assumes.
2. The UNet and the CLIP text encoder learn, from scratch, to denoise those latents given the captions, with
   10% empty captions so classifier-free guidance works, min-SNR loss weighting, and an exponential moving
   average of the weights (what gets saved).

Everything is seeded and runs on one thread by default: the same command gives the same weights.
The result is a diffusers folder (safetensors, tokenizer, scheduler config) plus `training.json`, the record of
the command, seed, steps, durations and final losses.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from likeness.world.base_model import (
    TRAINING_RECORD,
    assemble_pipeline,
    build_text_encoder,
    build_unet,
    build_vae,
    save_pipeline_folder,
)
from likeness.world.scenes import caption_for, world_rng, world_sample

LOG = logging.getLogger("likeness.world.pretrain")
# Posterior log-variance of the near-deterministic autoencoder: std exp(-10), so sampling is the mean.
POSTERIOR_LOGVAR = -20.0
# Index offsets keep the autoencoder's, the diffusion model's and the calibration pictures apart.
AUTOENCODER_STREAM = 10_000_000
CALIBRATION_STREAM = 20_000_000


@dataclass
class PretrainConfig:
    """Everything that determines the weights (plus `threads`, which can change float rounding)."""

    seed: int = 0
    autoencoder_steps: int = 1000
    autoencoder_batch: int = 32
    autoencoder_lr: float = 2e-3
    latent_noise: float = 0.1
    images: int = 20_000
    steps: int = 4000
    batch: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    empty_caption_rate: float = 0.1
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    # One thread: the weights then depend on nothing but the seed (float sums can differ with the thread
    # count), and a shared 2-core machine never stalls on oversubscribed threads (2 threads measured slower
    # there: busy-waiting threads lose their core to other processes).
    threads: int = 1
    log_every: int = 50


def _pixels(images: list) -> torch.Tensor:
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def world_pixels(seed: int, start: int, count: int) -> torch.Tensor:
    """World samples `start .. start + count` of `seed` as a (count, 3, 32, 32) tensor in [-1, 1]."""
    return _pixels([world_sample(seed, index).image for index in range(start, start + count)])


def _fix_posterior(vae: Any) -> None:
    latent_channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[latent_channels:] = 0
        vae.quant_conv.bias[latent_channels:] = POSTERIOR_LOGVAR


def train_autoencoder(vae: Any, config: PretrainConfig) -> dict[str, float]:
    """Stage 1: reconstruction training on fresh world pictures every step; returns final losses."""
    _fix_posterior(vae)
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.autoencoder_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / config.autoencoder_steps)))
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    smoothed = None
    started = time.monotonic()
    for step in range(config.autoencoder_steps):
        start = AUTOENCODER_STREAM + step * config.autoencoder_batch
        pixels = world_pixels(config.seed, start, config.autoencoder_batch)
        latents = vae.encode(pixels).latent_dist.mean
        noise = torch.randn(latents.shape, generator=generator) * latents.detach().std() * config.latent_noise
        reconstruction = vae.decode(latents + noise).sample
        loss = F.mse_loss(reconstruction, pixels) + 0.1 * F.l1_loss(reconstruction, pixels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        if (step + 1) % config.log_every == 0 or step + 1 == config.autoencoder_steps:
            _log_progress("autoencoder", step + 1, config.autoencoder_steps, smoothed, started)
    _fix_posterior(vae)
    vae.eval()
    with torch.no_grad():
        pixels = world_pixels(config.seed, CALIBRATION_STREAM, 256)
        reconstruction = vae.decode(vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
        mse = float(F.mse_loss(reconstruction, pixels))
    psnr = 10 * math.log10(4.0 / mse)  # pixel range [-1, 1] has peak-to-peak 2
    LOG.info("autoencoder: held-out reconstruction PSNR %.1f dB", psnr)
    return {"autoencoder_loss": float(smoothed or 0.0), "autoencoder_psnr_db": psnr}


@torch.no_grad()
def calibrate_latents(vae: Any, seed: int) -> float:
    """Centres every latent channel on world pictures and sets `scaling_factor` to 1 / std; returns it.

    The decoder's input convolution is shifted back, so decoding a latent gives the same picture as before.
    """
    latent_channels = vae.config.latent_channels
    means = vae.encode(world_pixels(seed, CALIBRATION_STREAM, 512)).latent_dist.mean
    channel_mean = means.mean(dim=(0, 2, 3))
    vae.quant_conv.bias[:latent_channels] -= channel_mean
    vae.post_quant_conv.bias += vae.post_quant_conv.weight[:, :, 0, 0] @ channel_mean
    scaling = 1.0 / float((means - channel_mean[None, :, None, None]).std())
    vae.register_to_config(scaling_factor=scaling)
    return scaling


@torch.no_grad()
def encode_world(vae: Any, seed: int, count: int, batch: int = 256) -> torch.Tensor:
    """Scaled latents of world samples 0 .. count - 1 (the diffusion training set)."""
    scaling = float(vae.config.scaling_factor)
    chunks = []
    for start in range(0, count, batch):
        pixels = world_pixels(seed, start, min(batch, count - start))
        chunks.append(vae.encode(pixels).latent_dist.mean * scaling)
    return torch.cat(chunks)


class CaptionTokens:
    """Token ids of captions, memoised: the world's captions come from a small set of phrasings."""

    def __init__(self) -> None:
        from likeness.models.tokenizer import clip_tokenizer

        self.tokenizer = clip_tokenizer()
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [caption for caption in dict.fromkeys(captions) if caption not in self._cache]
        if missing:
            ids = self.tokenizer(
                missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            self._cache.update(zip(missing, ids, strict=True))
        return torch.stack([self._cache[caption] for caption in captions])


def _ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for target, source in zip(average.parameters(), model.parameters(), strict=True):
            target.lerp_(source, 1.0 - decay)


def train_diffusion(
    unet: torch.nn.Module, text_encoder: torch.nn.Module, latents: torch.Tensor, config: PretrainConfig
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, float]]:
    """Stage 2: text-conditioned denoising; returns the moving-average UNet and text encoder and final losses."""
    from diffusers import DDPMScheduler

    from likeness.models.tiny import SCHEDULER_CONFIG

    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=config.snr_gamma) / snr  # min-SNR-gamma for epsilon prediction
    tokens = CaptionTokens()
    scenes = [world_sample(config.seed, index).scene for index in range(latents.shape[0])]

    unet.train()
    text_encoder.train()
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    embedding = text_encoder.get_input_embeddings().weight  # type: ignore[operator]
    other_text = [parameter for parameter in text_encoder.parameters() if parameter is not embedding]
    optimizer = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "weight_decay": 1e-2},
            {"params": other_text, "weight_decay": 1e-2},
            # Without decay, tokens the world never uses (identifiers such as "ohwx") keep their initial
            # random embeddings: rare words with a weak prior, as in a real CLIP.
            {"params": [embedding], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )

    def learning_rate_factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    generator = torch.Generator().manual_seed(config.seed + 2)
    count = latents.shape[0]
    smoothed = None
    started = time.monotonic()
    for step in range(config.steps):
        epoch, offset = divmod(step * config.batch, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        indices = [int(order[(offset + k) % count]) for k in range(config.batch)]
        captions = []
        for index in indices:
            rng = world_rng(config.seed, index + 1_000_003 * (epoch + 1))
            empty = rng.uniform() < config.empty_caption_rate
            captions.append("" if empty else caption_for(scenes[index], rng))
        batch_latents = latents[indices]
        noise = torch.randn(batch_latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch,), generator=generator)
        noisy = scheduler.add_noise(batch_latents, noise, timesteps)
        hidden = text_encoder(tokens(captions))[0]
        prediction = unet(noisy, timesteps, hidden).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weights[timesteps]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_encoder.parameters()], 1.0)
        optimizer.step()
        schedule.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        plain_loss = float(per_sample.detach().mean())
        smoothed = plain_loss if smoothed is None else 0.98 * smoothed + 0.02 * plain_loss
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            _log_progress("diffusion", step + 1, config.steps, smoothed, started)
    return ema_unet, ema_text, {"diffusion_loss": float(smoothed or 0.0)}


def _log_progress(stage: str, step: int, total: int, loss: float | None, started: float) -> None:
    elapsed = time.monotonic() - started
    eta = elapsed / step * (total - step)
    LOG.info("%s step %d/%d loss %.4f elapsed %.0fs eta %.0fs", stage, step, total, loss or 0.0, elapsed, eta)


def pretrain(out: str | Path, config: PretrainConfig, command: str = "") -> dict[str, object]:
    """Runs both stages and writes the diffusers folder and its training record to `out`; returns the record.

    Uses `config.threads` torch threads meanwhile and restores the caller's setting after.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _pretrain(Path(out), config, command)
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(out: Path, config: PretrainConfig, command: str) -> dict[str, object]:
    started = time.monotonic()
    vae = build_vae()
    unet = build_unet()
    text_encoder = build_text_encoder()

    LOG.info("stage 1: autoencoder, %d steps of %d pictures", config.autoencoder_steps, config.autoencoder_batch)
    autoencoder_metrics = train_autoencoder(vae, config)
    scaling = calibrate_latents(vae, config.seed)
    vae.requires_grad_(False)  # type: ignore[attr-defined]
    autoencoder_seconds = time.monotonic() - started

    LOG.info("stage 2: drawing and encoding %d world pictures", config.images)
    latents = encode_world(vae, config.seed, config.images)
    LOG.info("stage 2: diffusion, %d steps of %d pictures", config.steps, config.batch)
    diffusion_started = time.monotonic()
    ema_unet, ema_text, diffusion_metrics = train_diffusion(unet, text_encoder, latents, config)  # type: ignore[arg-type]
    diffusion_seconds = time.monotonic() - diffusion_started

    pipeline = assemble_pipeline(ema_unet, vae, ema_text)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    save_pipeline_folder(pipeline, out)
    record: dict[str, object] = {
        "command": command or f"python -m likeness.world.pretrain --out {out}",
        "config": asdict(config),
        "latent_scaling_factor": scaling,
        **autoencoder_metrics,
        **diffusion_metrics,
        "autoencoder_seconds": round(autoencoder_seconds, 1),
        "diffusion_seconds": round(diffusion_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {config.threads} threads",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    LOG.info("wrote %s in %.0fs", out, record["total_seconds"])
    return record


def build_arg_parser() -> argparse.ArgumentParser:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m likeness.world.pretrain", description="Pretrain the toy base model on the synthetic world."
    )
    parser.add_argument("--out", required=True, help="folder to write the diffusers pipeline into")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    values = {name: getattr(args, name) for name in asdict(PretrainConfig())}
    command = "python -m likeness.world.pretrain " + shlex.join(argv)
    pretrain(args.out, PretrainConfig(**values), command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
