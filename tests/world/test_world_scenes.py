"""The synthetic world: deterministic pictures, captions that say what is drawn, distinct subjects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from likeness.world.scenes import (
    CLASSES,
    CONTEXT_PHRASES,
    IMAGE_SIZE,
    SUBJECT_PATTERNS,
    WORLD_PATTERNS,
    Scene,
    draw_scene,
    with_context,
    world_sample,
)
from likeness.world.subjects import DEMO_SUBJECT, SUBJECTS, demo_subject_photos, subject_prompt


def test_world_samples_are_deterministic_and_32px() -> None:
    first, again, other = world_sample(3, 17), world_sample(3, 17), world_sample(3, 18)
    assert first.image.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert first.caption == again.caption
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def test_captions_name_the_class_and_mostly_the_context_and_colour() -> None:
    samples = [world_sample(0, index) for index in range(200)]
    for sample in samples:
        assert sample.scene.look.cls in sample.caption.split()
    with_context_phrase = [s for s in samples if CONTEXT_PHRASES[s.scene.context] in s.caption]
    with_colour = [s for s in samples if s.scene.look.colour_name in s.caption.split()]
    assert 0.65 < len(with_context_phrase) / len(samples) < 0.95
    assert 0.65 < len(with_colour) / len(samples) < 0.95
    assert {s.scene.look.cls for s in samples} == set(CLASSES)
    assert {s.scene.context for s in samples} == set(CONTEXT_PHRASES)


def test_pretraining_world_never_uses_subject_patterns() -> None:
    patterns = {world_sample(1, index).scene.look.pattern for index in range(300)}
    assert patterns <= set(WORLD_PATTERNS)
    assert not patterns & set(SUBJECT_PATTERNS)
    assert all(subject.look.pattern in SUBJECT_PATTERNS for subject in SUBJECTS)


def test_contexts_differ_where_the_object_is_not() -> None:
    scene = Scene(DEMO_SUBJECT.look, "beach")
    beach = np.asarray(draw_scene(scene), dtype=np.float32)
    snow = np.asarray(draw_scene(with_context(scene, "snow")), dtype=np.float32)
    # Top rows are background in both: sky over the sea versus grey snow sky.
    assert np.abs(beach[:4] - snow[:4]).mean() > 20


def test_unknown_context_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown context"):
        draw_scene(Scene(DEMO_SUBJECT.look, "moon"))


def test_demo_photos_are_pngs_of_the_demo_subject() -> None:
    photos = demo_subject_photos()
    assert 4 <= len(photos) <= 6
    assert len({name for name, _ in photos}) == len(photos)
    images = [Image.open(io.BytesIO(data)) for _, data in photos]
    assert all(image.format == "PNG" and image.size == (64, 64) for image in images)
    assert subject_prompt("a {subject} on the beach", "ohwx", DEMO_SUBJECT.class_noun) == "a ohwx toy on the beach"
