"""DreamBooth's evaluation measures, computed with the world's judge instead of DINO and CLIP.

- Subject fidelity: mean cosine similarity, in the judge's instance embedding, between every generated picture
  and every real photo of the subject (the paper's DINO score). The ceiling is the same measure between the
  subject's training photos and further real photos of it (real vs real).
- Identification: the share of generated pictures that are closer to the subject than to any of a crowd of
  other objects of the same class (mean similarity to each candidate's photos).
- Prompt fidelity: the share of pictures in which the judge sees what the prompt asked for (context or
  colour); class fidelity likewise for the object class (the paper's CLIP-T score, made into an accuracy).
- Language drift: how far the class prompt's pictures moved towards the subject, relative to the base model:
  the paper's PRES (mean similarity of class-prompt pictures to the subject's photos) of the fine-tuned model
  minus that of the base model. Positive: "a photo of toy" started to render this toy.
- Same-seed change: 1 - the mean cosine similarity of same-seed class-prompt pictures of the base and the
  fine-tuned model. Any fine-tune, with or without prior preservation, re-rolls the instance a seed draws, so
  this shows that the class prompt changed, not whether it collapsed onto the subject.
- Personalization score (the trainer's test): mean over identifier-prompt pictures of the best judge-embedding
  cosine with a VAE round trip of a training photo, before vs after training with the same seeds. (Latent
  Pearson correlation, tried first, follows the backdrop colour more than the object on 32 px pictures.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from likeness.world.judge import Judge, Verdicts, judge_images, to_pixels


def mean_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of rows of two unit-norm embedding matrices."""
    return float((a @ b.T).mean())


def ceiling_similarity(photos: np.ndarray, other_photos: np.ndarray) -> float:
    """Real-vs-real subject fidelity: the training photos against further photos of the same subject."""
    return mean_similarity(photos, other_photos)


def identification_rate(generated: np.ndarray, subject_photos: np.ndarray, crowd: Sequence[np.ndarray]) -> float:
    """Share of generated pictures more similar (on average) to the subject's photos than to any crowd member's."""
    if generated.shape[0] == 0:
        return 0.0
    subject_scores = (generated @ subject_photos.T).mean(axis=1)
    crowd_scores = np.stack([(generated @ member.T).mean(axis=1) for member in crowd], axis=1)
    return float((subject_scores > crowd_scores.max(axis=1)).mean())


def label_accuracy(predicted: Sequence[str], expected: str) -> float:
    return float(np.mean([label == expected for label in predicted])) if predicted else 0.0


def paired_drift(base: np.ndarray, tuned: np.ndarray) -> float:
    """1 - mean cosine similarity of same-seed picture pairs (0: unchanged; larger: drifted further)."""
    if base.shape != tuned.shape:
        raise ValueError(f"drift needs same-seed pairs, got {base.shape[0]} and {tuned.shape[0]} pictures")
    return float(1.0 - np.mean(np.sum(base * tuned, axis=1)))


def embed(images: Sequence[Image.Image], judge: Judge | None = None) -> Verdicts:
    return judge_images(list(images), judge)


@torch.no_grad()
def vae_round_trip(vae: Any, images: Sequence[Image.Image]) -> list[Image.Image]:
    """`images` encoded and decoded by `vae` (at its size): what the model can at best reproduce of them."""
    size = int(vae.config.sample_size)
    pixels = to_pixels([image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC) for image in images])
    parameter = next(vae.parameters())
    latents = vae.encode(pixels.to(parameter.device, parameter.dtype)).latent_dist.mean
    decoded = vae.decode(latents).sample.float().clamp(-1, 1).cpu()
    arrays = ((decoded.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    return [Image.fromarray(array, "RGB") for array in arrays]


def personalization_score(
    vae: torch.nn.Module,
    generated: Sequence[Image.Image],
    training_photos: Sequence[Image.Image],
    judge: Judge | None = None,
) -> float:
    """Mean over `generated` of the highest judge-embedding cosine with a VAE round trip of a training photo.

    Higher is closer to the subject. The round trip makes the reference as soft as anything the model can
    generate, so the score compares like with like; the judge's embedding ignores where the object stands and
    what is behind it, which latent or pixel distances do not (on 32 px pictures the backdrop dominates them).
    """
    references = judge_images(vae_round_trip(vae, training_photos), judge).embeddings
    pictures = judge_images(list(generated), judge).embeddings
    return float((pictures @ references.T).max(axis=1).mean())
