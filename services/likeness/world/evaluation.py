"""DreamBooth's Table 1 on the toy world: train each subject several ways, generate, and measure.

A `Backend` trains a subject and generates pictures; `ServiceBackend` (in `likeness.world.service_backend`) goes
through the real trainer and inference gRPC services, `InProcessBackend` calls the training loop and the
pipeline directly (for quick experiments). `evaluate` runs every (subject, variant), asks the judge, and
returns an `EvalReport` with per-run results, per-variant means and sample pictures for grids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from likeness.errors import InvalidArgument
from likeness.world.base_model import TOY_MODEL_ID
from likeness.world.judge import Judge, judge_images, load_judge
from likeness.world.metrics import (
    ceiling_similarity,
    identification_rate,
    label_accuracy,
    mean_similarity,
    paired_drift,
    personalization_score,
)
from likeness.world.scenes import IMAGE_SIZE, draw_scene, random_scene
from likeness.world.subjects import (
    DEFAULT_IDENTIFIER,
    EVAL_PROMPTS,
    SUBJECTS,
    Subject,
    distractor_looks,
    subject_prompt,
)

LOG = logging.getLogger("likeness.world.evaluation")
CROWD_SIZE = 12
CROWD_PHOTOS = 4


@dataclass(frozen=True)
class Variant:
    """One column of the paper's comparison: training method and whether prior preservation is on."""

    method: str
    prior: bool

    @property
    def name(self) -> str:
        return f"{self.method}{'+prior' if self.prior else ''}"


VARIANTS: tuple[Variant, ...] = (
    Variant("lora", True),
    Variant("lora", False),
    Variant("full", True),
    Variant("full", False),
)


@dataclass(frozen=True)
class EvalSettings:
    """Training and sampling settings of an evaluation. Defaults learn a subject in well under a minute of
    training per variant on 2 CPU cores."""

    base_model: str = TOY_MODEL_ID
    identifier: str = DEFAULT_IDENTIFIER
    lora_steps: int = 300
    lora_learning_rate: float = 3e-3
    lora_rank: int = 16
    full_steps: int = 300
    full_learning_rate: float = 5e-4
    batch_size: int = 4
    num_class_images: int = 32
    prior_loss_weight: float = 1.0
    seeds_per_prompt: int = 4
    drift_seeds: int = 8
    inference_steps: int = 25
    # The toy model's native size; asked for explicitly because a server's default may differ.
    resolution: int = IMAGE_SIZE
    guidance_scale: float = 4.0
    # Deterministic sampling: a same-seed picture then moves only as far as the model did, which is what
    # `same_seed_change` compares (a stochastic sampler would amplify any change into a different picture).
    scheduler: str = "ddim"
    seed: int = 0
    prompts: tuple[tuple[str, str | None, str | None], ...] = EVAL_PROMPTS

    def steps(self, variant: Variant) -> int:
        return self.lora_steps if variant.method == "lora" else self.full_steps

    def learning_rate(self, variant: Variant) -> float:
        return self.lora_learning_rate if variant.method == "lora" else self.full_learning_rate

    def job_spec(self, subject: Subject, variant: Variant) -> dict[str, Any]:
        """The training job, as the plain-dict form of `TrainingJobSpec` (what `TrainingConfig.from_spec` reads)."""
        return {
            "base_model": self.base_model,
            "identifier": self.identifier,
            "class_noun": subject.class_noun,
            "method": variant.method,
            "display_name": f"eval {subject.name} {variant.name}",
            "hyperparameters": {
                "max_train_steps": self.steps(variant),
                "learning_rate": self.learning_rate(variant),
                "train_batch_size": self.batch_size,
                "seed": self.seed,
                "mixed_precision": "no",
            },
            "lora": {"rank": self.lora_rank},
            "prior_preservation": {
                "enabled": variant.prior,
                "num_class_images": self.num_class_images,
                "prior_loss_weight": self.prior_loss_weight,
            },
            "checkpointing": {"every_n_steps": 0},
        }


class Backend(Protocol):
    """Trains subjects and generates pictures; `model` None generates with the base model alone."""

    def train(self, subject: Subject, variant: Variant, settings: EvalSettings) -> str: ...

    def generate(
        self, model: str | None, prompt: str, seeds: Sequence[int], settings: EvalSettings
    ) -> list[Image.Image]: ...


@dataclass
class SubjectResult:
    """The measures of one (subject, variant) run; see `likeness.world.metrics` for their definitions."""

    subject: str
    variant: str
    subject_fidelity: float
    subject_fidelity_ceiling: float
    identification: float
    prompt_fidelity: float
    class_fidelity: float
    class_prompt_fidelity: float
    class_identified_as_subject: float
    identifier_vs_class_gap: float
    class_subject_similarity: float
    class_subject_similarity_base: float
    drift: float
    same_seed_change: float
    personalization_before: float
    personalization_after: float
    train_seconds: float
    per_prompt: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, list[Image.Image]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("samples")
        return data


NUMERIC_FIELDS = (
    "subject_fidelity",
    "subject_fidelity_ceiling",
    "identification",
    "prompt_fidelity",
    "class_fidelity",
    "class_prompt_fidelity",
    "class_identified_as_subject",
    "identifier_vs_class_gap",
    "class_subject_similarity",
    "class_subject_similarity_base",
    "drift",
    "same_seed_change",
    "personalization_before",
    "personalization_after",
    "train_seconds",
)


@dataclass
class EvalReport:
    settings: EvalSettings
    results: list[SubjectResult]
    base_samples: dict[str, list[Image.Image]] = field(default_factory=dict, repr=False)

    def by_variant(self) -> dict[str, dict[str, float]]:
        """Mean of every measure over subjects, per variant, in evaluation order."""
        table: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(result.variant for result in self.results):
            rows = [result for result in self.results if result.variant == name]
            table[name] = {key: float(np.mean([getattr(row, key) for row in rows])) for key in NUMERIC_FIELDS}
            table[name]["subjects"] = float(len(rows))
        return table

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings["prompts"] = [prompt for prompt, _, _ in self.settings.prompts]
        return {
            "settings": settings,
            "by_variant": self.by_variant(),
            "results": [result.to_dict() for result in self.results],
        }


@dataclass
class _SubjectReferences:
    photos: np.ndarray
    ceiling: float
    crowd: list[np.ndarray]


def _references(subject: Subject, judge: Judge) -> _SubjectReferences:
    photos = judge_images(subject.photos(), judge).embeddings
    further = judge_images(subject.reference_photos(), judge).embeddings
    crowd = []
    rng = np.random.default_rng([sum(map(ord, subject.name)), 5])
    for look in distractor_looks(subject.class_noun, CROWD_SIZE):
        pictures = [draw_scene(random_scene(rng, look)) for _ in range(CROWD_PHOTOS)]
        crowd.append(judge_images(pictures, judge).embeddings)
    for other in SUBJECTS:
        if other.name != subject.name:
            crowd.append(judge_images(other.photos(), judge).embeddings)
    return _SubjectReferences(photos, ceiling_similarity(photos, further), crowd)


def load_toy_vae() -> torch.nn.Module:
    """The committed toy model's autoencoder, frozen, on the CPU."""
    from diffusers import AutoencoderKL

    from likeness.world.base_model import committed_weights_dir

    vae = AutoencoderKL.from_pretrained(str(committed_weights_dir() / "vae"), local_files_only=True)
    return vae.eval().requires_grad_(False)


def class_prompt(subject: Subject) -> str:
    """The prompt of prior preservation and of the drift measurement, as the trainer writes it by default."""
    return f"a photo of {subject.class_noun}"


def evaluate_subject(
    backend: Backend,
    subject: Subject,
    variant: Variant,
    settings: EvalSettings,
    *,
    judge: Judge,
    base_class_pictures: list[Image.Image],
    base_subject_pictures: list[Image.Image],
    vae: torch.nn.Module,
) -> SubjectResult:
    """Trains `subject` as `variant` says, generates the held-out prompts and the class prompt, and measures."""
    references = _references(subject, judge)
    started = time.monotonic()
    model = backend.train(subject, variant, settings)
    train_seconds = time.monotonic() - started
    seeds = [settings.seed + index for index in range(settings.seeds_per_prompt)]

    samples: dict[str, list[Image.Image]] = {}
    per_prompt: dict[str, dict[str, float]] = {}
    identifier_embeddings: list[np.ndarray] = []
    bare_pictures: list[Image.Image] | None = None
    bare_embeddings = np.zeros((0, 0))
    class_hits, prompt_hits = [], []
    for template, context, colour in settings.prompts:
        prompt = subject_prompt(template, settings.identifier, subject.class_noun)
        pictures = backend.generate(model, prompt, seeds, settings)
        samples[prompt] = pictures
        verdicts = judge_images(pictures, judge)
        identifier_embeddings.append(verdicts.embeddings)
        if bare_pictures is None:  # the first prompt names the bare subject ("a photo of {subject}")
            bare_pictures, bare_embeddings = pictures, verdicts.embeddings
        class_ok = label_accuracy(verdicts.classes, subject.class_noun)
        class_hits.append(class_ok)
        row = {"class": class_ok, "subject_fidelity": mean_similarity(verdicts.embeddings, references.photos)}
        if context is not None:
            row["context"] = label_accuracy(verdicts.contexts, context)
            prompt_hits.append(row["context"])
        if colour is not None:
            row["colour"] = label_accuracy(verdicts.colours, colour)
            prompt_hits.append(row["colour"])
        per_prompt[prompt] = row

    drift_seeds = [settings.seed + index for index in range(settings.drift_seeds)]
    class_pictures = backend.generate(model, class_prompt(subject), drift_seeds, settings)
    samples[class_prompt(subject)] = class_pictures
    class_verdicts = judge_images(class_pictures, judge)
    base_verdicts = judge_images(base_class_pictures, judge)
    all_identifier = np.concatenate(identifier_embeddings)
    class_similarity = mean_similarity(class_verdicts.embeddings, references.photos)
    base_class_similarity = mean_similarity(base_verdicts.embeddings, references.photos)
    return SubjectResult(
        subject=subject.name,
        variant=variant.name,
        subject_fidelity=mean_similarity(all_identifier, references.photos),
        subject_fidelity_ceiling=references.ceiling,
        identification=identification_rate(all_identifier, references.photos, references.crowd),
        prompt_fidelity=float(np.mean(prompt_hits)) if prompt_hits else 0.0,
        class_fidelity=float(np.mean(class_hits)),
        class_prompt_fidelity=label_accuracy(class_verdicts.classes, subject.class_noun),
        class_identified_as_subject=identification_rate(class_verdicts.embeddings, references.photos, references.crowd),
        identifier_vs_class_gap=mean_similarity(bare_embeddings, references.photos) - class_similarity,
        class_subject_similarity=class_similarity,
        class_subject_similarity_base=base_class_similarity,
        drift=class_similarity - base_class_similarity,
        same_seed_change=paired_drift(base_verdicts.embeddings, class_verdicts.embeddings),
        personalization_before=personalization_score(vae, base_subject_pictures, subject.photos(), judge),
        personalization_after=personalization_score(vae, bare_pictures or [], subject.photos(), judge),
        train_seconds=train_seconds,
        per_prompt=per_prompt,
        samples=samples,
    )


def evaluate(
    backend: Backend,
    subjects: Sequence[Subject] = SUBJECTS,
    variants: Sequence[Variant] = VARIANTS,
    settings: EvalSettings | None = None,
    *,
    judge: Judge | None = None,
    vae: torch.nn.Module | None = None,
    on_result: Callable[[SubjectResult], None] | None = None,
) -> EvalReport:
    """Every subject trained as every variant; base-model pictures are generated once per subject.

    `vae` (for the personalization score) defaults to the committed toy model's autoencoder.
    """
    settings = settings or EvalSettings()
    if not settings.prompts or settings.prompts[0][1:] != (None, None):
        raise InvalidArgument(
            "the first prompt must name the bare subject, e.g. 'a photo of {subject}'", field="settings.prompts"
        )
    judge = judge or load_judge()
    vae = vae if vae is not None else load_toy_vae()
    report = EvalReport(settings, [])
    drift_seeds = [settings.seed + index for index in range(settings.drift_seeds)]
    seeds = [settings.seed + index for index in range(settings.seeds_per_prompt)]
    for subject in subjects:
        base_pictures = backend.generate(None, class_prompt(subject), drift_seeds, settings)
        report.base_samples[class_prompt(subject)] = base_pictures
        bare_prompt = subject_prompt(settings.prompts[0][0], settings.identifier, subject.class_noun)
        base_subject_pictures = backend.generate(None, bare_prompt, seeds, settings)
        report.base_samples[bare_prompt] = base_subject_pictures
        for variant in variants:
            LOG.info("evaluating %s as %s", subject.name, variant.name)
            result = evaluate_subject(
                backend,
                subject,
                variant,
                settings,
                judge=judge,
                base_class_pictures=base_pictures,
                base_subject_pictures=base_subject_pictures,
                vae=vae,
            )
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    return report
