"""Class images for prior preservation render memory-lean: one image per call at 1024 px (SDXL), the VAE decoding
slice by slice (and tiled from 1024 px) and back to normal afterwards, and the same images whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.models.catalog import BaseModelCatalog
from likeness.trainer.training import prior
from likeness.trainer.training.prior import generate_class_images, generation_batch


def test_batches_shrink_with_the_resolution() -> None:
    assert [generation_batch(r) for r in (64, 512, 768, 1024, 1536)] == [4, 4, 2, 1, 1]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    catalog = BaseModelCatalog("tiny=builtin:sd15", cache_dir=tmp_path_factory.mktemp("catalog"))
    return catalog.load("tiny")


def test_the_vae_slices_while_rendering_and_the_images_do_not_depend_on_the_batch(tiny_pipeline, monkeypatch) -> None:
    seen = []
    original = tiny_pipeline.vae.decode

    def decode(latents, *args, **kwargs):
        seen.append((latents.shape[0], tiny_pipeline.vae.use_slicing))
        return original(latents, *args, **kwargs)

    monkeypatch.setattr(tiny_pipeline.vae, "decode", decode)
    four = generate_class_images(tiny_pipeline, "a photo of a dog", 64, 3, num_inference_steps=2)
    assert seen and all(sliced for _, sliced in seen)
    assert not tiny_pipeline.vae.use_slicing  # restored for training
    monkeypatch.setattr(prior, "GENERATION_BATCHES", ((0, 1),))
    one = generate_class_images(tiny_pipeline, "a photo of a dog", 64, 3, num_inference_steps=2)
    for a, b in zip(four, one, strict=True):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2  # seed i, whatever the batch
