"""An evaluation backend without servers: the trainer's training loop and a diffusers pipeline, in this process.

For quick experiments and for the trainer's personalization test; `likeness eval` uses the gRPC services.
Both run the same training code (`likeness.trainer.training.loop.run_training`) on the same base model.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from likeness.inference.params import generation
from likeness.world.base_model import committed_weights_dir
from likeness.world.evaluation import EvalSettings, Variant, class_prompt
from likeness.world.subjects import Subject, subject_prompt


def load_toy_pipeline(weights_dir: str | Path | None = None):
    """The toy base model as a float32 CPU pipeline."""
    from likeness.models.loading import load_base_pipeline

    return load_base_pipeline(weights_dir or committed_weights_dir(), arch="sd15", device="cpu")


def use_scheduler(pipeline, name: str) -> None:
    """Swaps the pipeline's sampler for `name` ("default" keeps the base model's own), built from its config.

    The names are the Scheduler enum's (likeness.api.generation) and the classes the inference service's.
    """
    from likeness.inference.pipeline_runner import SCHEDULER_CLASSES

    name = generation.check_scheduler(name, field="scheduler")
    if name == generation.DEFAULT_SCHEDULER:
        return
    scheduler_class = SCHEDULER_CLASSES[name]
    if type(pipeline.scheduler) is not scheduler_class:
        pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)


@torch.no_grad()
def generate(
    pipeline, prompt: str, seeds: Sequence[int], steps: int, guidance_scale: float, scheduler: str = "default"
) -> list[Image.Image]:
    """One picture per seed at the model's native size, seeded like the inference service (a CPU generator
    per image)."""
    use_scheduler(pipeline, scheduler)
    size = int(pipeline.unet.config.sample_size) * 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    output = pipeline(
        [prompt] * len(generators),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        height=size,
        width=size,
        generator=generators,
    )
    return [image.convert("RGB") for image in output.images]


# The trainer's class-image settings (likeness.trainer.training.prior), so both backends train alike.
CLASS_IMAGE_STEPS = 30


class InProcessBackend:
    """Trains with `run_training` on a fresh copy of the base pipeline; models are kept in memory by name."""

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        self.base = load_toy_pipeline(weights_dir)
        self.models: dict[str, object] = {}
        self.class_images: dict[tuple[str, int], list[Image.Image]] = {}
        self._names = itertools.count(1)

    def _class_images(self, prompt: str, count: int, settings: EvalSettings) -> list[Image.Image]:
        key = (prompt, count)
        if key not in self.class_images:
            # As the trainer does: the base model's own sampler and default guidance.
            self.class_images[key] = generate(self.base, prompt, range(count), CLASS_IMAGE_STEPS, 7.5, "ddpm")
        return self.class_images[key]

    def train(self, subject: Subject, variant: Variant, settings: EvalSettings) -> str:
        from likeness.trainer.config import TrainingConfig
        from likeness.trainer.training.data import TrainingData
        from likeness.trainer.training.loop import run_training

        config = TrainingConfig.from_spec(settings.job_spec(subject, variant), identifier=settings.identifier)
        photos = subject.photos()
        prompt = subject_prompt("a photo of {subject}", settings.identifier, subject.class_noun)
        data = TrainingData(
            instance_images=photos,
            instance_prompts=[prompt] * len(photos),
            class_images=self._class_images(class_prompt(subject), settings.num_class_images, settings)
            if variant.prior
            else [],
            class_prompt=class_prompt(subject) if variant.prior else "",
        )
        pipeline = copy.deepcopy(self.base)
        run_training(config, pipeline, data)
        pipeline.unet.eval()
        name = f"{subject.name}-{variant.name}-{next(self._names)}"
        self.models[name] = pipeline
        return name

    def generate(
        self, model: str | None, prompt: str, seeds: Sequence[int], settings: EvalSettings
    ) -> list[Image.Image]:
        pipeline = self.base if model is None else self.models[model]
        return generate(pipeline, prompt, seeds, settings.inference_steps, settings.guidance_scale, settings.scheduler)
