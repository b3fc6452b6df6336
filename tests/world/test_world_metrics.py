"""The evaluation measures on known inputs: real photos, other objects, and controlled changes."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.world.evaluation import load_toy_vae
from likeness.world.judge import judge_images
from likeness.world.metrics import (
    ceiling_similarity,
    identification_rate,
    mean_similarity,
    paired_drift,
    personalization_score,
)
from likeness.world.scenes import draw_scene, random_scene
from likeness.world.subjects import SUBJECTS, distractor_looks


def _unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_similarity_identification_and_drift_on_known_vectors() -> None:
    subject = _unit([[1, 0, 0], [0.9, 0.1, 0]])
    crowd = [_unit([[0, 1, 0]]), _unit([[0, 0, 1]])]
    generated = _unit([[1, 0.05, 0], [0, 1, 0.1], [0.2, 0, 1]])
    assert identification_rate(generated, subject, crowd) == pytest.approx(1 / 3)
    assert mean_similarity(subject, subject) > mean_similarity(generated, subject)
    assert paired_drift(generated, generated) == pytest.approx(0.0, abs=1e-6)
    assert paired_drift(generated, generated[::-1]) > 0.5
    with pytest.raises(ValueError, match="same-seed pairs"):
        paired_drift(generated, generated[:2])


def test_judge_embedding_recognises_each_subject_among_the_others() -> None:
    for subject in SUBJECTS:
        photos = judge_images(subject.photos()).embeddings
        further = judge_images(subject.reference_photos()).embeddings
        rng = np.random.default_rng(0)
        crowd = [
            judge_images([draw_scene(random_scene(rng, look)) for _ in range(4)]).embeddings
            for look in distractor_looks(subject.class_noun, 6)
        ]
        others = [judge_images(other.photos()).embeddings for other in SUBJECTS if other is not subject]
        ceiling = ceiling_similarity(photos, further)
        assert ceiling > 0.7
        similarities = [mean_similarity(photos, other) for other in crowd + others]
        assert max(similarities) < ceiling
        assert np.mean(similarities) < ceiling - 0.5
        assert identification_rate(further, photos, crowd + others) == 1.0


def test_personalization_score_prefers_the_subject_to_other_objects() -> None:
    vae = load_toy_vae()
    subject = SUBJECTS[0]
    rng = np.random.default_rng(1)
    others = [draw_scene(random_scene(rng, look, "plain")) for look in distractor_looks(subject.class_noun, 4)]
    same = [draw_scene(random_scene(rng, subject.look, "plain")) for _ in range(4)]
    assert personalization_score(vae, same, subject.photos()) > personalization_score(vae, others, subject.photos())
    assert personalization_score(vae, subject.photos(), subject.photos()) > 0.8
