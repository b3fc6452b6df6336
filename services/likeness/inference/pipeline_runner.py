"""Runs one batch of compatible requests through a diffusers pipeline.

All images of the batch are denoised in one pipeline call: prompts, negative prompts and generators are lists
with one entry per image. Image i of a request uses its own CPU `torch.Generator` seeded with `seed + i`, so an
image's pixels do not depend on which other requests shared its batch (up to floating-point rounding of batched
matrix products, at most one 8-bit level).

What differs per image besides: its LoRAs and their weights (the base model's router, `lora_routing`) and its
guidance scale (`PerSampleGuidance`), so requests for different subjects share one batch.

Per step, `callback_on_step_end` streams progress (and previews) to each request and checks for cancellation and
deadlines: when no request of the batch is still wanted it sets the pipeline's `_interrupt` flag, so diffusers
skips every remaining step. A request cancelled while others in its batch continue stops receiving events at once
and its images are never decoded; its denoising shares the batch's UNet calls, so it costs nothing extra.

The pipeline returns latents (`output_type="latent"`); each image is then VAE-decoded on its own and handed to the
encoder thread, so the client receives image 0 while image 1 is still decoding.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from likeness import __version__
from likeness.errors import DeadlineExceeded
from likeness.inference import metrics
from likeness.inference.encoding import ImageMetadata, encode_image, sampler_name
from likeness.inference.image_inputs import image_pipeline, pipeline_kwargs
from likeness.inference.jobs import GenerationJob, ImageEvent, ProgressEvent, SummaryEvent
from likeness.inference.lora_routing import SampleLoras
from likeness.inference.previews import decode_latents, upcast_for_decoding
from likeness.inference.repository import BaseModel, ModelRepository, SubjectEntry

SCHEDULER_CLASSES: dict[str, Any] = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "dpm_solver_multistep": DPMSolverMultistepScheduler,
    "uni_pc": UniPCMultistepScheduler,
    "ddpm": DDPMScheduler,
}


def scheduler_for(base: BaseModel, name: str) -> Any:
    """The base model's scheduler of kind `name` ("default": its own), built once from its config and reused.

    Reuse is safe: `set_timesteps` resets a scheduler's state and one batch at a time runs per base model.
    """
    scheduler = base.schedulers.get(name)
    if scheduler is None:
        if not base.schedulers:
            base.schedulers["default"] = base.pipeline.scheduler  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
        scheduler = base.schedulers.get(name)
        if scheduler is None:
            scheduler = SCHEDULER_CLASSES[name].from_config(base.schedulers["default"].config)
            base.schedulers[name] = scheduler
    return scheduler


class PerSampleGuidance(float):
    """A guidance scale per image that diffusers' pipelines use unchanged.

    The pipelines test `guidance_scale > 1` to turn classifier-free guidance on (a batch shares that: see
    `GenerationJob.batch_key`) and compute `uncond + guidance_scale * (text - uncond)`. As a float this is the
    largest scale of the batch; multiplied with a tensor of the batch's rows it scales each row by its own image's.
    """

    scales: torch.Tensor

    def __new__(cls, scales: list[float]) -> PerSampleGuidance:
        guidance = super().__new__(cls, max(scales))
        guidance.scales = torch.tensor(scales, dtype=torch.float32)
        return guidance

    def __mul__(self, other: Any) -> Any:
        if isinstance(other, torch.Tensor) and other.ndim > 0 and other.shape[0] == len(self.scales):
            shape = (-1,) + (1,) * (other.ndim - 1)
            return other * self.scales.to(other.device, other.dtype).view(shape)
        return float(self) * other

    __rmul__ = __mul__


def sample_loras(jobs: list[GenerationJob], loras: dict[str, SubjectEntry]) -> list[SampleLoras]:
    """One `SampleLoras` per image of the batch, in the order of the pipeline's prompts."""
    samples = []
    for job in jobs:
        pairs = []
        for model_id, weight in job.lora_weights:
            entry = loras[model_id]
            assert entry.lora is not None, f"subject {model_id} is pinned but has no LoRA layers"
            pairs.append((entry.lora.layers, weight))
        samples.extend([SampleLoras(tuple(pairs))] * job.params.num_images)
    return samples


class _StepCallback:
    """`callback_on_step_end`: progress, previews, cancellation and deadlines for every request of the batch."""

    def __init__(self, base: BaseModel, jobs: list[GenerationJob], offsets: list[int]) -> None:
        self.base = base
        self.jobs = jobs
        self.offsets = offsets

    def __call__(self, pipeline: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        latents = tensors["latents"]
        total = int(getattr(pipeline, "_num_timesteps", 0) or 0)
        step = step_index + 1
        still_wanted = 0
        for job, offset in zip(self.jobs, self.offsets, strict=True):
            if not job.active:
                continue
            if job.expired:
                job.fail(DeadlineExceeded(f"the deadline passed at step {step} of {total}; allow more time"))
                metrics.REQUESTS.labels("deadline_exceeded").inc()
                continue
            still_wanted += 1
            every = job.params.preview_every_n_steps
            preview = None
            if every and (step % every == 0 or step == total):
                preview = self.base.previewer.render(latents[offset])
            job.emit(ProgressEvent(step, total, preview))
        if still_wanted == 0:
            # diffusers checks this flag at the top of each step and skips the rest.
            pipeline._interrupt = True
        return {}


def run_batch(
    repository: ModelRepository,
    base: BaseModel,
    full_fine_tune: SubjectEntry | None,
    loras: dict[str, SubjectEntry],
    jobs: list[GenerationJob],
    encoder: Executor,
) -> None:
    """Denoise, decode and hand every image of `jobs` to `encoder` (which encodes, streams and summarises).

    `full_fine_tune` is the batch's subject when it is a full fine-tune; `loras` holds the pinned LoRA subjects
    and styles the jobs name.
    """
    head = jobs[0].params
    prompts: list[str] = []
    negatives: list[str] = []
    guidance: list[float] = []
    generators: list[torch.Generator] = []
    offsets: list[int] = []
    for job in jobs:
        offsets.append(len(prompts))
        for seed in job.params.seeds:
            prompts.append(job.params.prompt)
            negatives.append(job.params.negative_prompt)
            guidance.append(job.params.guidance_scale)
            generators.append(torch.Generator(device="cpu").manual_seed(seed))
    samples = sample_loras(jobs, loras)
    if base.compiled is not None:
        # Blank images fill the batch to a compiled bucket; nothing decodes or streams them.
        padding = base.compiled.options.bucket(len(prompts)) - len(prompts)
        prompts += [""] * padding
        negatives += [""] * padding
        guidance += [head.guidance_scale] * padding
        generators += [torch.Generator(device="cpu").manual_seed(0) for _ in range(padding)]
        samples += [SampleLoras()] * padding
    started = time.perf_counter()
    for job in jobs:
        job.started_at = started
        job.batch_size = len(jobs)
        metrics.QUEUE_WAIT_SECONDS.labels(base.id).observe(started - job.accepted_at)

    adapters = len({model_id for job in jobs for model_id, _ in job.lora_weights})
    with base.lock, base.router.route(samples, dtype=repository.dtype):
        pipeline = repository.activate(base, full_fine_tune)
        size: dict[str, Any] = {"width": head.width, "height": head.height}
        if head.image_input is not None:
            pipeline = _image_variant(base, pipeline, head.image_input.mode, shared=full_fine_tune is None)
            inputs = [job.params.image_input for job in jobs for _ in range(job.params.num_images)]
            size = pipeline_kwargs([item for item in inputs if item is not None])
            # The padding of a compiled batch starts from the first image.
            size["image"] += [size["image"][0]] * (len(prompts) - len(inputs))
            if "mask_image" in size:
                size["mask_image"] += [size["mask_image"][0]] * (len(prompts) - len(inputs))
        pipeline.scheduler = scheduler_for(base, head.scheduler)  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
        sampler = sampler_name(type(pipeline.scheduler).__name__)  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
        # no_grad, not inference_mode: the VAE upcast below must not turn its weights into inference tensors.
        with torch.no_grad():
            latents = pipeline(  # type: ignore[operator]  # diffusers' exports type-check as dummy objects
                prompt=prompts,
                # None (not [""] * n) lets SDXL use its zeroed negative embedding, as diffusers does by default.
                negative_prompt=negatives if any(negatives) else None,
                num_inference_steps=head.steps,
                guidance_scale=PerSampleGuidance(guidance),
                **size,
                generator=generators,
                output_type="latent",
                callback_on_step_end=_StepCallback(base, jobs, offsets),
                callback_on_step_end_tensor_inputs=["latents"],
                return_dict=False,
            )[0]
            denoised = time.perf_counter()
            denoise_seconds = denoised - started
            if not getattr(pipeline, "_interrupt", False):
                metrics.STEPS_PER_SECOND.labels(base.id).observe(head.steps / max(denoise_seconds, 1e-9))
            metrics.BATCH_REQUESTS.observe(len(jobs))
            metrics.BATCH_IMAGES.labels(metrics.adapter_label(adapters)).observe(len(prompts))
            with upcast_for_decoding(pipeline.vae):  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
                for job, offset in zip(jobs, offsets, strict=True):
                    job.denoise_seconds = denoise_seconds
                    if not job.active:
                        continue
                    for index in range(job.params.num_images):
                        if not job.active:
                            break
                        decode_started = time.perf_counter()
                        image = decode_latents(pipeline.vae, latents[offset + index : offset + index + 1])  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
                        pil = pipeline.image_processor.postprocess(image, output_type="pil")[0]  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
                        job.decode_seconds += time.perf_counter() - decode_started
                        encoder.submit(_encode_and_send, job, index, pil, _metadata(job, index, sampler))
                    encoder.submit(_summarise, job)


def _image_variant(base: BaseModel, pipeline: Any, mode: str, *, shared: bool) -> Any:
    """The img2img or inpainting pipeline over `pipeline`'s modules: kept per base model, built per batch for a
    full fine-tune (`from_pipe` copies nothing, so that costs microseconds)."""
    if not shared:
        return image_pipeline(pipeline, mode)
    variant = base.variants.get(mode)
    if variant is None:
        variant = base.variants[mode] = image_pipeline(pipeline, mode)
    return variant


def _metadata(job: GenerationJob, index: int, sampler: str) -> ImageMetadata:
    p = job.params
    return ImageMetadata(
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        steps=p.steps,
        sampler=sampler,
        guidance_scale=p.guidance_scale,
        seed=p.seed + index,
        width=p.width,
        height=p.height,
        base_model=job.base_model,
        subject_model_id=job.subject_model_id,
        lora_scale=p.lora_scale if job.lora_scale_applies else None,
        extra={"Version": f"likeness {__version__}"}
        | ({"Denoising strength": f"{p.image_input.strength:g}"} if p.image_input is not None else {}),
    )


def _encode_and_send(job: GenerationJob, index: int, image: Image.Image, metadata: ImageMetadata) -> None:
    """Encoder thread: encode one image and stream it (skipped when the request went away meanwhile)."""
    if not job.active:
        return
    started = time.perf_counter()
    data = encode_image(image, job.params.output_format, metadata)
    job.decode_seconds += time.perf_counter() - started
    job.emit(ImageEvent(index, data, metadata.seed, job.params.output_format, image.width, image.height))
    metrics.IMAGES.labels(job.base_model).inc()


def _summarise(job: GenerationJob) -> None:
    """Encoder thread, after the job's images: the summary ends the stream."""
    if not job.active:
        return
    finished = time.perf_counter()
    metrics.GENERATION_SECONDS.labels(job.base_model).observe(finished - job.accepted_at)
    metrics.REQUESTS.labels("ok").inc()
    job.complete(
        SummaryEvent(
            num_images=job.params.num_images,
            seeds=job.params.seeds,
            queue_ms=(job.started_at - job.accepted_at) * 1000,
            load_ms=job.load_seconds * 1000,
            denoise_ms=job.denoise_seconds * 1000,
            decode_ms=job.decode_seconds * 1000,
            total_ms=(finished - job.accepted_at) * 1000,
            batch_size=job.batch_size,
        )
    )
