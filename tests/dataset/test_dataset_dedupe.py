"""Near-duplicates are rejected (keeping the first), distinct shots of one subject are all kept."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from dataset_photos import encode
from PIL import Image, ImageEnhance

from likeness.dataset import PhotoInput, PrepareOptions, prepare_photos
from likeness.dataset.dedupe import DuplicateFinder, Fingerprint, View, hamming_distance, perceptual_hash


def test_copies_of_a_real_photo_are_duplicates_but_other_shots_are_not(dreambench: Path):
    paths = sorted((dreambench / "berry_bowl").glob("*.jpg"))
    original = Image.open(paths[0]).convert("RGB")
    half = original.resize((original.width // 2, original.height // 2), Image.Resampling.LANCZOS)
    photos = [PhotoInput(path.name, path.read_bytes()) for path in paths]
    photos += [
        PhotoInput("messenger_copy.jpg", encode(half, quality=60)),  # smaller, so its square crop differs
        PhotoInput("brighter.jpg", encode(ImageEnhance.Brightness(original).enhance(1.1))),
    ]
    dataset = prepare_photos(photos, PrepareOptions(resolution=256, min_photos=1))
    codes = {report.name: report.code for report in dataset.reports}
    assert codes == {**{path.name: "" for path in paths}, "messenger_copy.jpg": "duplicate_of:00.jpg",
                     "brighter.jpg": "duplicate_of:00.jpg"}  # fmt: skip
    assert "bits differ, threshold 6" in dataset.reports[-1].reason


def test_threshold_minus_one_keeps_exact_copies():
    photo = encode(np.random.default_rng(3).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    photos = [PhotoInput("a.jpg", photo), PhotoInput("b.jpg", photo)]
    dataset = prepare_photos(photos, PrepareOptions(resolution=256, min_photos=2, dedupe_threshold=-1))
    assert len(dataset.images) == 2


def test_flat_graphics_with_collapsed_hashes_are_told_apart_by_colour():
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))).convert("RGB")
    halves = np.zeros((256, 256, 3), np.uint8)
    halves[:128] = (200, 20, 20)
    halves[128:] = (20, 20, 200)
    two_tone = Image.fromarray(halves)
    # pHash alone calls these two near-identical...
    assert hamming_distance(perceptual_hash(ramp), perceptual_hash(two_tone)) <= 6
    finder = DuplicateFinder(threshold=6)
    assert finder.check(0, Fingerprint(View.of(ramp), View.of(ramp))) is None
    # ...the colour layout does not.
    assert finder.check(1, Fingerprint(View.of(two_tone), View.of(two_tone))) is None
    copy = Image.open(io.BytesIO(encode(two_tone, quality=80)))
    match = finder.check(2, Fingerprint(View.of(copy), View.of(copy)))
    assert match is not None and match.original_index == 1 and match.distance <= 2
