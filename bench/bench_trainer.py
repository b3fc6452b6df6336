"""Benchmark: the trainer's DreamBooth loop against a minimal reference loop on diffusers + peft.

Same tiny SD 1.x model, same four 64 px photos, same settings (LoRA rank 4 on the attention projections, batch 1,
AdamW at 1e-4, gradient clipping at 1.0, seed 0), 30 measured steps after 5 warm-up steps. The two loops run
in one process in lock-step, one step of each in turn (the machines this runs on are shared and noisy; a load
spike then hits both loops alike), and the figure is the median of the per-step time ratios. Peak memory (max RSS) of each is measured in its own subprocess, so neither inherits the
other's allocations. Goal: the Likeness loop is no slower than 1.05x the reference.

The reference is what the diffusers DreamBooth LoRA example does per step, written plainly: VAE-encode the batch,
encode the prompt with the frozen text encoder, add noise, predict, MSE, step, and log `loss.item()`.

Run: `python bench/bench_trainer.py` (prints the figures) or import `run()`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from peft import LoraConfig
from PIL import Image, ImageDraw

from likeness.models.loading import disable_progress_bars
from likeness.models.tiny import create_tiny_pipeline
from likeness.trainer.config import DEFAULT_LORA_TARGETS, TrainingConfig
from likeness.trainer.training.data import TrainingData, to_tensor
from likeness.trainer.training.loop import TrainingCallbacks, run_training

WARMUP_STEPS = 5
MEASURED_STEPS = 30
ROUNDS = 2
RESOLUTION = 64
RANK = 4
LEARNING_RATE = 1e-4
SEED = 0
PHOTOS = 4
PROMPT = "a photo of ohwx dog"


def photos() -> list[Image.Image]:
    images = []
    for index in range(PHOTOS):
        rng = np.random.default_rng(index)
        image = Image.new("RGB", (RESOLUTION, RESOLUTION), tuple(int(v) for v in rng.integers(0, 255, 3)))
        ImageDraw.Draw(image).ellipse([12, 12 + index, 50, 52], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        images.append(image)
    return images


def likeness_run(pipeline, on_step) -> None:
    """`run_training` on the benchmark's data; `on_step()` after every step (via the per-step progress report)."""
    config = TrainingConfig.from_spec(
        {
            "base_model": "tiny-sd15",
            "class_noun": "dog",
            "hyperparameters": {"max_train_steps": WARMUP_STEPS + MEASURED_STEPS, "seed": SEED,
                                "learning_rate": LEARNING_RATE, "mixed_precision": "no"},
            "lora": {"rank": RANK},
            "checkpointing": {"every_n_steps": 0},
        },
        identifier="ohwx",
    )  # fmt: skip
    callbacks = TrainingCallbacks(on_progress=lambda _: on_step(), progress_interval_seconds=0)
    images = photos()
    run_training(config, pipeline, TrainingData(images, [PROMPT] * len(images)), callbacks)


def reference_run(pipeline, before_step, on_step) -> None:
    """The minimal diffusers + peft loop; `before_step()` / `on_step()` around every step."""
    torch.manual_seed(SEED)
    unet, vae, text_encoder = pipeline.unet, pipeline.vae, pipeline.text_encoder
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", target_modules=list(DEFAULT_LORA_TARGETS))
    )
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    pixels = torch.stack([to_tensor(image) for image in photos()])
    input_ids = pipeline.tokenizer(
        PROMPT, padding="max_length", max_length=pipeline.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    for step in range(WARMUP_STEPS + MEASURED_STEPS):
        before_step()
        batch = pixels[step % len(pixels)][None]
        with torch.no_grad():
            latents = vae.encode(batch).latent_dist.sample() * vae.config.scaling_factor
            encoder_hidden_states = text_encoder(input_ids)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # logged every step, as the diffusers example does
        on_step()


def interleaved_step_times() -> tuple[list[float], list[float]]:
    """Both loops in lock-step, one step each in turn, so a load spike on this shared machine hits both alike.

    Returns the measured steps' durations (warm-up dropped): (likeness, reference), pair i taken back to back.
    """
    ours_turn, reference_turn = threading.Semaphore(1), threading.Semaphore(0)
    ours: list[float] = []
    reference: list[float] = []
    started = [0.0]

    def our_step_done() -> None:
        ours.append(time.perf_counter() - started[0])
        reference_turn.release()
        ours_turn.acquire()
        started[0] = time.perf_counter()

    def ours_thread() -> None:
        ours_turn.acquire()
        started[0] = time.perf_counter()
        likeness_run(create_tiny_pipeline("sd15"), our_step_done)
        reference_turn.release()

    thread = threading.Thread(target=ours_thread, name="likeness-loop")
    thread.start()
    reference_started = [0.0]

    def reference_before() -> None:
        reference_turn.acquire()
        reference_started[0] = time.perf_counter()

    def reference_done() -> None:
        reference.append(time.perf_counter() - reference_started[0])
        ours_turn.release()

    reference_run(create_tiny_pipeline("sd15"), reference_before, reference_done)
    thread.join()
    return ours[WARMUP_STEPS:], reference[WARMUP_STEPS:]


LOOPS = {
    "likeness": lambda pipeline: likeness_run(pipeline, lambda: None),
    "reference": lambda pipeline: reference_run(pipeline, lambda: None, lambda: None),
}


def _reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def peak_rss_mb(loop: str) -> float:
    """Peak RSS while one loop trains, in a fresh process (imports and the loaded model included, the transient
    peak of building the model excluded)."""
    done = subprocess.run(
        [sys.executable, __file__, "--peak-rss", loop], capture_output=True, text=True, check=True, timeout=900
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def run() -> list[dict]:
    disable_progress_bars()
    ours: list[float] = []
    reference: list[float] = []
    for _ in range(ROUNDS):
        round_ours, round_reference = interleaved_step_times()
        ours += round_ours
        reference += round_reference
    ratio = statistics.median(a / b for a, b in zip(ours, reference, strict=True))
    return [
        {
            "name": "trainer.step_time_ratio_vs_reference",
            "value": round(ratio, 3),
            "unit": "x",
            "goal": "<= 1.05",
            "note": f"median of per-step ratios; median step {statistics.median(ours) * 1000:.1f} ms vs reference "
            f"{statistics.median(reference) * 1000:.1f} ms ({ROUNDS} rounds x {MEASURED_STEPS} steps in lock-step, "
            f"tiny SD 1.x, LoRA r{RANK}, 64 px, batch 1)",
        },
        {"name": "trainer.peak_rss_mb", "value": round(peak_rss_mb("likeness"), 1), "unit": "MB", "goal": "report"},
        {
            "name": "trainer.reference_peak_rss_mb",
            "value": round(peak_rss_mb("reference"), 1),
            "unit": "MB",
            "goal": "report",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--peak-rss", choices=list(LOOPS), help="run one loop once and print its max RSS (internal)")
    args = parser.parse_args()
    if args.peak_rss:
        disable_progress_bars()
        pipeline = create_tiny_pipeline("sd15")
        _reset_peak_rss()
        LOOPS[args.peak_rss](pipeline)
        print(json.dumps({"peak_rss_mb": _peak_rss_kib() / 1024}))
        return
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
