"""The DreamBooth training loop: a domain function driven by callbacks, run under `accelerate`.

`run_training` fine-tunes a loaded base pipeline in place (LoRA adapters or the full UNet, optionally the text
encoder(s)) and reports through `TrainingCallbacks`: progress (throttled), checkpoints, validation images, and
`should_stop` (checked before every step, so a cancelled run stops within one step). It knows nothing of gRPC,
jobs or storage; the job runner and the multi-process worker build on it.

The hot loop stays lean: prompt embeddings are computed once when the text encoders are frozen, VAE latents are
cached when crops are fixed, the loss is kept on the device (one host sync per progress report, not per step),
and nothing touches storage between checkpoints.
"""

from __future__ import annotations

import io
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params, compute_snr

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.runtime import supports_bf16
from likeness.trainer.config import TrainingConfig
from likeness.trainer.training import checkpoints
from likeness.trainer.training.data import ImageSet, StatelessSampler, TrainingData, mix_seed
from likeness.trainer.training.lora import add_lora
from likeness.trainer.training.memory import (
    MemoryPlan,
    ModelShape,
    check_plan,
    device_budget_bytes,
    make_optimizer,
    plan_memory,
)
from likeness.trainer.training.prior import lean_vae

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0
LOSS_SMOOTHING = 0.9
_SALT_INSTANCE, _SALT_CLASS, _SALT_NOISE, _SALT_AUGMENT = 1, 2, 3, 4

Pipeline = StableDiffusionPipeline | StableDiffusionXLPipeline


@dataclass
class TrainingProgress:
    """One progress report. `loss` is smoothed (exponential moving average over steps)."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    steps_per_second: float
    images_per_second: float
    eta_seconds: float


@dataclass
class ValidationImage:
    """A rendered validation image: the prompt it shows and PNG bytes."""

    name: str
    png: bytes
    width: int
    height: int


@dataclass
class TrainingCallbacks:
    """How the caller follows and steers a run; every callback is optional and runs on the main process.

    `on_checkpoint(step, folder)` receives a complete local checkpoint folder, valid until the callback returns.
    `should_stop()` is asked before every step (on every process; they agree on the answer). When it says stop
    and `checkpoint_on_stop()` is true (a preemption rather than a cancellation), a checkpoint of the current
    step is saved first, so a restarted run loses nothing.
    """

    on_progress: Callable[[TrainingProgress], None] | None = None
    on_checkpoint: Callable[[int, Path], None] | None = None
    on_validation: Callable[[int, list[ValidationImage]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint_on_stop: Callable[[], bool] | None = None
    progress_interval_seconds: float = 1.0


@dataclass
class TrainingResult:
    """What a run did. `losses[i]` is the loss of step i + 1 (the steps this process saw, resumed ones included)."""

    steps_completed: int
    total_steps: int
    cancelled: bool
    final_loss: float
    losses: list[float]
    resumed_from_step: int
    train_seconds: float
    images_per_second: float
    validation_images: list[ValidationImage] = field(default_factory=list)


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """ "auto" -> bf16 where fast, fp16 on other GPUs, no on CPU; fp16 off a GPU is refused."""
    if setting == "auto":
        if supports_bf16(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "no"
    if setting == "fp16" and device.type != "cuda":
        raise InvalidArgument(
            f"fp16 mixed precision needs a CUDA device; this trainer runs on {device.type} (use bf16 or no)",
            field="spec.hyperparameters.mixed_precision",
        )
    return setting


def make_accelerator(config: TrainingConfig, device: torch.device | None = None) -> Accelerator:
    """The Accelerator a run needs, for the given device (default: what accelerate picks)."""
    cpu = device is not None and device.type == "cpu"
    probe = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    return Accelerator(
        mixed_precision=resolve_mixed_precision(config.mixed_precision, probe),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        cpu=cpu,
    )


def _weight_dtype(accelerator: Accelerator) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def place_for_class_images(pipeline: Pipeline, config: TrainingConfig, accelerator: Accelerator) -> None:
    """Moves the pipeline to the run's device to render class images, in the precision training will hold it.

    On a GPU, a LoRA run keeps its frozen UNet and text encoders in the mixed-precision dtype anyway, so they are cast now
    (half the memory of float32, nothing lost); a full fine-tune trains in float32, so its weights stay float32
    and class images render under autocast. The VAE keeps the dtype training gives it (float32 when its config
    says `force_upcast`).
    """
    components: Any = pipeline
    dtype = _weight_dtype(accelerator)
    # Only on CUDA, where the class images render under autocast, which bridges a half-precision UNet and a
    # float32 VAE.
    frozen = accelerator.device.type == "cuda" and config.method == "lora" and dtype != torch.float32
    for name in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(components, name, None)
        if module is not None:
            _place(module, accelerator.device, dtype if frozen else torch.float32)
    vae = components.vae
    keep_float32 = getattr(vae.config, "force_upcast", False) or not frozen
    _place(vae, accelerator.device, torch.float32 if keep_float32 else dtype)


class _Conditioning:
    """Prompt embeddings by prompt index: precomputed for frozen text encoders, else encoded per step."""

    def __init__(
        self,
        pipeline: Pipeline,
        prompts: list[str],
        device: torch.device,
        dtype: torch.dtype,
        trainable: bool,
    ) -> None:
        self.sdxl = isinstance(pipeline, StableDiffusionXLPipeline)
        self.encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if self.sdxl else [])  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        tokenizers = [pipeline.tokenizer] + ([pipeline.tokenizer_2] if self.sdxl else [])  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        self.input_ids = [
            tokenizer(
                prompts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            for tokenizer in tokenizers
        ]
        self.trainable = trainable
        self.embeds: torch.Tensor | None = None
        self.pooled: torch.Tensor | None = None
        if not trainable:
            with torch.no_grad():
                embeds, pooled = self._encode(torch.arange(len(prompts), device=device))
            self.embeds = embeds.to(dtype)
            self.pooled = pooled.to(dtype) if pooled is not None else None

    def _encode(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.sdxl:
            return self.encoders[0](self.input_ids[0][indices])[0], None
        hidden, pooled = [], None
        for encoder, ids in zip(self.encoders, self.input_ids, strict=True):
            output = encoder(ids[indices], output_hidden_states=True)
            # As StableDiffusionXLPipeline.encode_prompt: penultimate hidden states, pooled output of the last.
            pooled = output[0]
            hidden.append(output.hidden_states[-2])
        return torch.cat(hidden, dim=-1), pooled

    def __call__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.trainable:
            return self._encode(indices)
        assert self.embeds is not None
        return self.embeds[indices], (self.pooled[indices] if self.pooled is not None else None)


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    # Casting only when needed: diffusers warns on every `.to(dtype=...)`, even a no-op one. Cast and move in one
    # call, tensor by tensor, so a float32 copy of the whole module never lands on the device.
    if next(module.parameters()).dtype != dtype:
        module.to(device=device, dtype=dtype)
    else:
        module.to(device)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class _Run:
    """State of one run; `run_training` is its only entry point."""

    def __init__(
        self,
        config: TrainingConfig,
        pipeline: Pipeline,
        data: TrainingData,
        callbacks: TrainingCallbacks,
        accelerator: Accelerator,
        work_dir: Path,
    ) -> None:
        if accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps:
            raise FailedPrecondition(
                "the accelerator was created for a different gradient accumulation; build it with make_accelerator"
            )
        self.config = config
        # Any: diffusers' exports type-check as dummy objects, without the components it registers at runtime.
        self.pipeline: Any = pipeline
        self.data = data
        self.callbacks = callbacks
        self.accelerator = accelerator
        self.work_dir = work_dir
        self.device = accelerator.device
        self.dtype = _weight_dtype(accelerator)
        self.sdxl = isinstance(pipeline, StableDiffusionXLPipeline)
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.prior = config.prior.enabled and bool(data.class_images)
        self.resolution = config.resolution or data.instance_images[0].width
        self.unet = pipeline.unet  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        self.text_encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if self.sdxl else [])  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        self.noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        self.prediction_type = self.noise_scheduler.config.prediction_type
        self.validation_images: list[ValidationImage] = []

    # ---- set-up -------------------------------------------------------------------------------------------

    def choose_memory_plan(self) -> MemoryPlan:
        """The memory plan of this run on its device (before adapters are added: the shape is the base's)."""
        config = self.config
        plan = plan_memory(
            ModelShape.of_pipeline(self.pipeline),
            config,
            device_type=self.device.type,
            dtype=self.dtype,
            resolution=self.resolution,
            budget_bytes=device_budget_bytes(self.device, config.memory_budget_mib or 0),
        )
        if self.accelerator.is_main_process:
            log.info("%s", plan.describe())
        check_plan(plan)
        return plan

    def setup_models(self) -> None:
        config = self.config
        self.memory = self.choose_memory_plan()
        self.pipeline.vae.requires_grad_(False)
        self.unet.requires_grad_(config.method == "full")
        for encoder in self.text_encoders:
            encoder.requires_grad_(config.train_text_encoder and config.method == "full")
        if config.method == "lora":
            add_lora(self.unet, config.lora)
            if config.train_text_encoder:
                for encoder in self.text_encoders:
                    add_lora(encoder, config.lora, text_encoder=True)
        if self.memory.options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                for encoder in self.text_encoders:
                    # transformers 5 renamed it; older releases only have the old name.
                    enable = getattr(encoder, "activation_checkpointing_enable", None)
                    (enable or encoder.gradient_checkpointing_enable)()
        # Frozen weights in the mixed-precision dtype to save memory; trained ones stay float32 (as the
        # optimizer needs), so full fine-tunes keep their trained modules in float32.
        frozen_unet_dtype = self.dtype if config.method == "lora" else torch.float32
        _place(self.unet, self.device, frozen_unet_dtype)
        encoder_dtype = self.dtype if (config.method == "lora" or not config.train_text_encoder) else torch.float32
        for encoder in self.text_encoders:
            _place(encoder, self.device, encoder_dtype)
        vae_dtype = torch.float32 if getattr(self.pipeline.vae.config, "force_upcast", False) else self.dtype
        _place(self.pipeline.vae, self.device, vae_dtype)
        self.vae_dtype = vae_dtype
        if config.method == "lora":
            cast_training_params([self.unet, *self.text_encoders], dtype=torch.float32)
        self.unet.train()
        for encoder in self.text_encoders:
            encoder.train(config.train_text_encoder)

    def setup_data(self) -> None:
        config, data = self.config, self.data
        self.instances = ImageSet(data.instance_images, self.resolution, center_crop=config.center_crop)
        self.classes = (
            ImageSet(data.class_images, self.resolution, center_crop=config.center_crop) if self.prior else None
        )
        prompts = list(dict.fromkeys([*data.instance_prompts, *([data.class_prompt] if self.prior else [])]))
        self.instance_prompt_index = torch.tensor([prompts.index(p) for p in data.instance_prompts], device=self.device)
        self.class_prompt_index = prompts.index(data.class_prompt) if self.prior else 0
        self.conditioning = _Conditioning(
            self.pipeline, prompts, self.device, self.dtype, trainable=config.train_text_encoder
        )
        for image_set in (self.instances, self.classes):
            if image_set is not None and image_set.fixed_crop:
                image_set.cache_latents(self.pipeline.vae, self.device, self.vae_dtype, flips=config.random_flip)
                assert image_set.latent_mean is not None and image_set.latent_std is not None  # set by cache_latents
                image_set.latent_mean = image_set.latent_mean.to(self.device)
                image_set.latent_std = image_set.latent_std.to(self.device)
        if self.memory.options.offload_text_encoders and not config.train_text_encoder:
            # The prompts' embeddings are cached: the frozen encoders only come back to render validation images.
            for encoder in self.text_encoders:
                encoder.to("cpu")
        needs_vae = not self.instances.fixed_crop or (self.classes is not None and not self.classes.fixed_crop)
        if not needs_vae and not config.validation.prompts:
            # Latents are cached and nothing will be rendered: the VAE would only hold device memory.
            self.pipeline.vae.to("cpu")
        batch = config.train_batch_size
        self.instance_sampler = StatelessSampler(
            len(self.instances), batch, config.seed, _SALT_INSTANCE, self.world, self.rank
        )
        self.class_sampler = (
            StatelessSampler(len(self.classes), batch, config.seed, _SALT_CLASS, self.world, self.rank)
            if self.classes is not None
            else None
        )
        self.noise_generator = torch.Generator(device=self.device)
        self.augment_generator = torch.Generator()
        self.images_per_step = batch * config.gradient_accumulation_steps * self.world * (2 if self.prior else 1)

    def setup_optimizer(self) -> None:
        config = self.config
        groups = []
        unet_params = [p for p in self.unet.parameters() if p.requires_grad]
        groups.append({"params": unet_params, "lr": config.learning_rate})
        encoder_params = [p for encoder in self.text_encoders for p in encoder.parameters() if p.requires_grad]
        if encoder_params:
            groups.append({"params": encoder_params, "lr": config.effective_text_encoder_learning_rate})
        self.trainable_params = unet_params + encoder_params
        self.optimizer = make_optimizer(self.memory.options.optimizer, groups, self.device)
        # Stepped by hand once per optimizer step (not prepared): accelerate would step it once per process.
        self.lr_scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer=self.optimizer,
            num_warmup_steps=config.lr_warmup_steps,
            num_training_steps=config.max_train_steps,
        )
        trained = [self.unet, *(e for e in self.text_encoders if any(p.requires_grad for p in e.parameters()))]
        prepared = self.accelerator.prepare(*trained, self.optimizer)
        self.trained_wrapped = list(prepared[:-1])
        self.optimizer = prepared[-1]
        self.unet_forward = self.trained_wrapped[0]

    # ---- one step -----------------------------------------------------------------------------------------

    def _latents(self, image_set: ImageSet, indices: list[int], flips: list[bool]) -> tuple[torch.Tensor, list]:
        if image_set.fixed_crop:
            assert image_set.latent_mean is not None and image_set.latent_std is not None
            index = torch.tensor(indices, device=self.device)
            orientation = torch.tensor(flips, device=self.device, dtype=torch.long) if self.config.random_flip else 0
            mean = image_set.latent_mean[index, orientation]
            std = image_set.latent_std[index, orientation]
            noise = torch.randn(mean.shape, generator=self.noise_generator, device=self.device)
            return mean + std * noise, [image_set.fixed_offsets[i] for i in indices]
        pixels, crops = [], []
        for i, flip in zip(indices, flips, strict=True):
            image = image_set.pixels[i]
            height, width = image.shape[-2:]
            top = int(torch.randint(0, height - self.resolution + 1, (1,), generator=self.augment_generator))
            left = int(torch.randint(0, width - self.resolution + 1, (1,), generator=self.augment_generator))
            crop = image[:, top : top + self.resolution, left : left + self.resolution]
            pixels.append(crop.flip(-1) if flip else crop)
            crops.append((top, left))
        batch = torch.stack(pixels).to(self.device, self.vae_dtype)
        with torch.no_grad():
            posterior = self.pipeline.vae.encode(batch).latent_dist
        scaling = float(self.pipeline.vae.config.scaling_factor)
        shift = float(getattr(self.pipeline.vae.config, "shift_factor", None) or 0.0)
        sample = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=self.noise_generator, device=self.device, dtype=posterior.mean.dtype
        )
        return ((sample.float() - shift) * scaling), crops

    def _time_ids(self, image_set: ImageSet, indices: list[int], crops: list) -> torch.Tensor:
        rows = [
            [*image_set.original_sizes[i], *crop, self.resolution, self.resolution]
            for i, crop in zip(indices, crops, strict=True)
        ]
        return torch.tensor(rows, device=self.device, dtype=self.dtype)

    def micro_step_loss(self, micro_step: int) -> torch.Tensor:
        config = self.config
        self.noise_generator.manual_seed(mix_seed(config.seed, _SALT_NOISE, micro_step, self.rank))
        self.augment_generator.manual_seed(mix_seed(config.seed, _SALT_AUGMENT, micro_step, self.rank))
        batch = config.train_batch_size
        parts = [(self.instances, self.instance_sampler.indices(micro_step))]
        if self.classes is not None and self.class_sampler is not None:
            parts.append((self.classes, self.class_sampler.indices(micro_step)))
        latents, prompt_index, time_ids = [], [], []
        for kind, (image_set, indices) in enumerate(parts):
            if config.random_flip:
                flips = (torch.rand(len(indices), generator=self.augment_generator) < 0.5).tolist()
            else:
                flips = [False] * len(indices)
            part_latents, crops = self._latents(image_set, indices, flips)
            latents.append(part_latents)
            if kind == 0:
                prompt_index.append(self.instance_prompt_index[torch.tensor(indices, device=self.device)])
            else:
                prompt_index.append(torch.full((len(indices),), self.class_prompt_index, device=self.device))
            if self.sdxl:
                time_ids.append(self._time_ids(image_set, indices, crops))
        latents_t = torch.cat(latents)
        noise = torch.randn(latents_t.shape, generator=self.noise_generator, device=self.device)
        if config.noise_offset:
            offset = torch.randn((*latents_t.shape[:2], 1, 1), generator=self.noise_generator, device=self.device)
            noise = noise + config.noise_offset * offset
        timesteps = torch.randint(
            0,
            self.noise_scheduler.config.num_train_timesteps,
            (latents_t.shape[0],),
            generator=self.noise_generator,
            device=self.device,
        ).long()
        noisy = self.noise_scheduler.add_noise(latents_t, noise, timesteps)
        embeds, pooled = self.conditioning(torch.cat(prompt_index))
        added = {"text_embeds": pooled, "time_ids": torch.cat(time_ids)} if self.sdxl else None
        prediction = self.unet_forward(
            noisy.to(self.dtype), timesteps, embeds, added_cond_kwargs=added, return_dict=False
        )[0]
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents_t, noise, timesteps)
        else:
            raise FailedPrecondition(f"unsupported prediction type {self.prediction_type!r} of the base model")
        if not self.prior:
            return self._loss(prediction, target, timesteps)
        instance_loss = self._loss(prediction[:batch], target[:batch], timesteps[:batch])
        prior_loss = self._loss(prediction[batch:], target[batch:], timesteps[batch:])
        return instance_loss + config.prior.prior_loss_weight * prior_loss

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        gamma = self.config.snr_gamma
        if gamma is None:
            return F.mse_loss(prediction.float(), target.float(), reduction="mean")
        # Min-SNR weighting (Hang et al. 2023): clamp each timestep's weight at gamma / SNR.
        snr = compute_snr(self.noise_scheduler, timesteps)
        weights = torch.clamp(snr, max=gamma)
        weights = weights / (snr + 1) if self.prediction_type == "v_prediction" else weights / snr
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * weights).mean()

    # ---- checkpoints and validation ----------------------------------------------------------------------

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        modules = {"unet": self.unet}
        names = ["text_encoder", "text_encoder_2"]
        for name, encoder in zip(names, self.text_encoders, strict=False):
            modules[name] = encoder
        return modules

    def save_checkpoint(self, step: int, losses: torch.Tensor, smoothed: float) -> None:
        folder = self.work_dir / f"checkpoint-{step:08d}"
        if self.accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        checkpoints.write_rng_state(folder, self.rank)
        if self.accelerator.is_main_process:
            checkpoints.write_checkpoint(
                folder,
                step=step,
                modules=self.trainable_modules(),
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                scaler=self.accelerator.scaler,
                training_state={
                    "seed": self.config.seed,
                    "total_steps": self.config.max_train_steps,
                    "losses": losses[:step].tolist(),
                    "smoothed_loss": smoothed,
                    "num_processes": self.world,
                },
            )
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if self.callbacks.on_checkpoint is not None:
                self.callbacks.on_checkpoint(step, folder)
            shutil.rmtree(folder, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def resume(self, folder: Path, losses: torch.Tensor) -> tuple[int, float]:
        state = checkpoints.read_checkpoint(
            folder,
            modules=self.trainable_modules(),
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
            rank=self.rank,
            scaler=self.accelerator.scaler,
        )
        step = int(state["step"])
        if step > self.config.max_train_steps:
            raise FailedPrecondition(f"checkpoint at step {step} is past the run's {self.config.max_train_steps} steps")
        history = state.get("losses", [])[:step]
        losses[: len(history)] = torch.tensor(history, dtype=torch.float32, device=losses.device)
        return step, float(state.get("smoothed_loss", float("nan")))

    @torch.no_grad()
    def validate(self, step: int) -> list[ValidationImage]:
        settings = self.config.validation
        modules = [self.unet, *self.text_encoders]
        was_training = [module.training for module in modules]
        for module in modules:
            module.eval()
        parked = [m for m in (self.pipeline.vae, *self.text_encoders) if next(m.parameters()).device != self.device]
        for module in parked:
            module.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        images = []
        # Rendering must not consume the training's random state (dropout), or resumed runs would diverge.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for prompt in settings.prompts:
                generator = torch.Generator(device=self.device).manual_seed(settings.seed)
                with self.accelerator.autocast(), lean_vae(self.pipeline, self.resolution):
                    image = self.pipeline(
                        prompt,
                        num_inference_steps=settings.num_inference_steps,
                        height=self.resolution,
                        width=self.resolution,
                        generator=generator,
                    ).images[0]
                images.append(ValidationImage(prompt, _png(image), image.width, image.height))
        for module in parked:
            module.to("cpu")
        for module, training in zip(modules, was_training, strict=True):
            module.train(training)
        if self.callbacks.on_validation is not None:
            self.callbacks.on_validation(step, images)
        return images

    # ---- the loop -----------------------------------------------------------------------------------------

    def stop_requested(self) -> bool:
        wanted = bool(self.callbacks.should_stop()) if self.callbacks.should_stop is not None else False
        if self.world == 1:
            return wanted
        flag = torch.tensor([1.0 if wanted else 0.0], device=self.device)
        # Every process must leave the loop at the same step, or the others hang in the next all-reduce.
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def train(self, resume_from: Path | None) -> TrainingResult:
        config = self.config
        total = config.max_train_steps
        losses = torch.zeros(total, device=self.device)
        start_step, smoothed_value = (0, float("nan"))
        if resume_from is not None:
            start_step, smoothed_value = self.resume(resume_from, losses)
        smoothed = torch.tensor(smoothed_value, device=self.device)
        accumulation = config.gradient_accumulation_steps
        validation_every = config.validation.every_n_steps
        checkpoint_every = config.checkpointing.every_n_steps
        interval = self.callbacks.progress_interval_seconds
        started = time.monotonic()
        last_report_time, last_report_step = started, start_step
        step = last_checkpoint_step = start_step
        cancelled = False
        while step < total:
            if self.stop_requested():
                cancelled = True
                wants_checkpoint = self.callbacks.checkpoint_on_stop is not None and self.callbacks.checkpoint_on_stop()
                if wants_checkpoint and step > last_checkpoint_step:
                    self.save_checkpoint(step, losses, float(smoothed.item()))
                break
            step_loss = torch.zeros((), device=self.device)
            for micro in range(accumulation):
                with self.accelerator.accumulate(*self.trained_wrapped):
                    loss = self.micro_step_loss(step * accumulation + micro)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(self.trainable_params, MAX_GRAD_NORM)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach() / accumulation
            self.lr_scheduler.step()
            losses[step] = step_loss
            smoothed = torch.where(
                torch.isnan(smoothed), step_loss, LOSS_SMOOTHING * smoothed + (1 - LOSS_SMOOTHING) * step_loss
            )
            step += 1
            now = time.monotonic()
            is_first, is_last = step == start_step + 1, step == total
            if (
                self.accelerator.is_main_process
                and self.callbacks.on_progress is not None
                and (is_first or is_last or now - last_report_time >= interval)
            ):
                rate = (step - last_report_step) / max(now - last_report_time, 1e-9)
                loss_value = float(smoothed.item())
                if not math.isfinite(loss_value):
                    raise FailedPrecondition(
                        f"training diverged by step {step} (the loss is {loss_value}); lower "
                        "spec.hyperparameters.learning_rate or enable gradient accumulation"
                    )
                self.callbacks.on_progress(
                    TrainingProgress(
                        step=step,
                        total_steps=total,
                        loss=loss_value,
                        learning_rate=float(self.lr_scheduler.get_last_lr()[0]),
                        steps_per_second=rate,
                        images_per_second=rate * self.images_per_step,
                        eta_seconds=(total - step) / rate if rate > 0 else 0.0,
                    )
                )
                last_report_time, last_report_step = now, step
            if checkpoint_every and step % checkpoint_every == 0 and step < total:
                self.save_checkpoint(step, losses, float(smoothed.item()))
                last_checkpoint_step = step
            if config.validation.prompts and validation_every and step % validation_every == 0 and step < total:
                if self.accelerator.is_main_process:
                    self.validate(step)
                self.accelerator.wait_for_everyone()
        elapsed = time.monotonic() - started
        if not cancelled and config.validation.prompts and self.accelerator.is_main_process:
            self.validation_images = self.validate(step)
        self.accelerator.wait_for_everyone()
        history = losses[:step].tolist()
        trained_steps = step - start_step
        return TrainingResult(
            steps_completed=step,
            total_steps=total,
            cancelled=cancelled,
            final_loss=float(smoothed.item()) if step else math.nan,
            losses=history,
            resumed_from_step=start_step,
            train_seconds=elapsed,
            images_per_second=trained_steps * self.images_per_step / elapsed if elapsed > 0 else 0.0,
            validation_images=self.validation_images,
        )


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seeds the global generators (LoRA dropout draws from them); batches and noise use their own."""
    process_seed = mix_seed(seed, rank) % (2**32)
    random.seed(process_seed)
    np.random.seed(process_seed)
    torch.manual_seed(process_seed)


def run_training(
    config: TrainingConfig,
    pipeline: Pipeline,
    data: TrainingData,
    callbacks: TrainingCallbacks | None = None,
    *,
    accelerator: Accelerator | None = None,
    resume_from: Path | None = None,
    work_dir: Path | None = None,
) -> TrainingResult:
    """Fine-tunes `pipeline` in place on `data` as `config` says and returns what happened.

    `pipeline` is a freshly loaded base model (float32); after the call it holds the trained weights (LoRA
    adapters attached, or the updated UNet) ready for `export.save_subject_weights`. `accelerator` defaults to
    `make_accelerator(config)`; pass one to run data-parallel under `accelerate launch`. `resume_from` is a local
    checkpoint folder written by an earlier run of the same config: the run continues where it stopped and
    draws the same batches and noise it would have drawn. `work_dir` holds checkpoints while they are handed to
    `callbacks.on_checkpoint` (a temporary folder by default; the same path on every process).
    """
    callbacks = callbacks or TrainingCallbacks()
    accelerator = accelerator or make_accelerator(config)
    own_work_dir = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="likeness-train-")) if work_dir is None else Path(work_dir)
    try:
        seed_everything(config.seed, accelerator.process_index)
        run = _Run(config, pipeline, data, callbacks, accelerator, work_dir)
        run.setup_models()
        run.setup_data()
        run.setup_optimizer()
        return run.train(resume_from)
    finally:
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
