"""Evaluation subjects: unique objects the base model has never seen, and DreamBench-style prompts for them.

Each subject is one object of a world class with a surface pattern reserved for subjects (checkered, dotted,
diagonal stripes, quarters) in colours of its own and fixed proportions: "this toy", not "a toy". Its photos
show it in a few contexts at varied positions and sizes, like a handful of phone photos. The held-out prompts
follow DreamBench: recontextualisation ("a {subject} on the beach"), the bare subject, and property
modification ("a red {subject}").
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from likeness.world.scenes import CONTEXT_PHRASES, IMAGE_SIZE, ObjectLook, Scene, draw_scene, random_look, random_scene

DEFAULT_IDENTIFIER = "ohwx"
PHOTOS_PER_SUBJECT = 5
UPLOAD_SIZE = 64
# Contexts of a subject's photos: mostly at home (plain backdrop, wooden floor) plus one outdoor place.
HOME_CONTEXTS = ("plain", "floor", "plain", "floor")


@dataclass(frozen=True)
class Subject:
    """One evaluation subject. `outdoor` is the one outdoor context its photos include."""

    name: str
    look: ObjectLook
    outdoor: str

    @property
    def class_noun(self) -> str:
        return self.look.cls

    def photo_scenes(self, count: int = PHOTOS_PER_SUBJECT) -> list[Scene]:
        contexts = [*HOME_CONTEXTS[: max(0, count - 1)], self.outdoor][:count]
        rng = np.random.default_rng([sum(map(ord, self.name)), 42])
        return [random_scene(rng, self.look, context) for context in contexts]

    def photos(self, count: int = PHOTOS_PER_SUBJECT, size: int = IMAGE_SIZE) -> list[Image.Image]:
        """The subject's photos (32 px unless asked otherwise), the same on every call."""
        return [draw_scene(scene, size) for scene in self.photo_scenes(count)]

    def reference_photos(self, count: int = 8) -> list[Image.Image]:
        """Further photos of the subject in every context, never trained on: the real-vs-real ceiling's second set."""
        rng = np.random.default_rng([sum(map(ord, self.name)), 43])
        contexts = list(CONTEXT_PHRASES)
        return [draw_scene(random_scene(rng, self.look, contexts[index % len(contexts)])) for index in range(count)]


SUBJECTS: tuple[Subject, ...] = (
    Subject(
        "checkered-toy",
        ObjectLook("toy", (250, 200, 40), pattern="checkered", accent=(40, 60, 200), proportions=(0.8, -0.6, 0.0)),
        outdoor="snow",
    ),
    Subject(
        "dotted-cup",
        ObjectLook("cup", (200, 30, 120), pattern="dotted", accent=(250, 250, 250), proportions=(0.5, 0.8, -0.8)),
        outdoor="beach",
    ),
    Subject(
        "candy-ball",
        ObjectLook("ball", (230, 30, 30), pattern="diagonal", accent=(250, 250, 250), proportions=(0.6, -0.4, 0.0)),
        outdoor="jungle",
    ),
    Subject(
        "quartered-box",
        ObjectLook("box", (30, 150, 150), pattern="quartered", accent=(250, 210, 60), proportions=(0.2, 0.9, -0.5)),
        outdoor="beach",
    ),
    Subject(
        "spotted-dog",
        ObjectLook("dog", (240, 240, 235), pattern="dotted", accent=(25, 25, 25), proportions=(0.5, 0.3, 0.6)),
        outdoor="snow",
    ),
)
SUBJECTS_BY_NAME = {subject.name: subject for subject in SUBJECTS}
DEMO_SUBJECT = SUBJECTS[0]

# DreamBench-style held-out prompts; "{subject}" becomes "<identifier> <class noun>". Each carries what a
# faithful picture shows: a context and/or a named colour.
EVAL_PROMPTS: tuple[tuple[str, str | None, str | None], ...] = (
    ("a photo of {subject}", None, None),
    ("a {subject} on the beach", "beach", None),
    ("a {subject} in the snow", "snow", None),
    ("a {subject} in the jungle", "jungle", None),
    ("a {subject} on a wooden floor", "floor", None),
    ("a red {subject}", None, "red"),
    ("a blue {subject}", None, "blue"),
)


def subject_prompt(template: str, identifier: str, class_noun: str) -> str:
    return template.replace("{subject}", f"{identifier} {class_noun}")


def distractor_looks(cls: str, count: int, seed: int = 0) -> list[ObjectLook]:
    """Other objects of the same class (pretraining-world looks): the crowd a subject must stand out from."""
    rng = np.random.default_rng([seed, 99])
    return [random_look(rng, cls) for _ in range(count)]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def subject_photo_files(
    subject: Subject, count: int = PHOTOS_PER_SUBJECT, size: int = UPLOAD_SIZE
) -> list[tuple[str, bytes]]:
    """The subject's photos as (file name, PNG bytes), ready to upload (64 px: dataset preparation's minimum;
    square and already framed, so preparation keeps the whole picture and scales it to 32 px)."""
    photos = subject.photos(count, size)
    return [(f"{subject.name}-{index + 1}.png", _png(image)) for index, image in enumerate(photos)]


def demo_subject_photos() -> list[tuple[str, bytes]]:
    """Photos of the subject `make demo` trains on (a yellow-and-blue checkered toy), as (name, 64 px PNG bytes)."""
    return subject_photo_files(DEMO_SUBJECT)


@dataclass(frozen=True)
class DemoTrainingSettings:
    """Training settings that visibly learn the demo subject on the toy base model in ~2-3 minutes on 2 cores."""

    base_model: str = "toy-sd15"
    class_noun: str = DEMO_SUBJECT.class_noun
    identifier: str = DEFAULT_IDENTIFIER
    method: str = "lora"
    max_train_steps: int = 300
    learning_rate: float = 3e-3
    lora_rank: int = 16
    train_batch_size: int = 4
    prior_preservation: bool = True
    num_class_images: int = 32
    resolution: int = 32
    num_inference_steps: int = 25
    guidance_scale: float = 4.0


DEMO_TRAINING = DemoTrainingSettings()
