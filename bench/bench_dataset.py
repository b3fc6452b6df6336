"""Benchmark: prepare 20 phone-sized (12 MP) JPEG photos at 512 px. Goal: under 10 s on a 2-core machine.

The photos are synthesised once, outside the timed part: 4000x3000, quality 90, each a different scene
(gradient sky/floor, a textured subject off-centre, clutter and sensor noise), ~2-4 MB like a phone JPEG.
Run: `python bench/bench_dataset.py` (prints the result) or import `run()`.
"""

from __future__ import annotations

import io
import json
import statistics
import time

import cv2
import numpy as np
from PIL import Image

from likeness.dataset import PhotoInput, PrepareOptions, prepare_photos

PHOTO_COUNT = 20
PHOTO_SIZE = (4000, 3000)
RUNS = 3


def synthesize_photo(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A distinct 12 MP JPEG: content drawn at 1/4 scale then upscaled (smooth, like optics), plus full-res
    grain so the encoder sees real-photo-like high frequencies."""
    rng = np.random.default_rng(seed)
    width, height = size
    small_w, small_h = width // 4, height // 4
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    column = (top + (bottom - top) * np.linspace(0, 1, small_h)[:, None]).astype(np.uint8)  # vertical gradient
    canvas = np.ascontiguousarray(np.repeat(column[:, None, :], small_w, axis=1))
    for _ in range(6):  # background clutter
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, small_w)), int(rng.integers(0, small_h)))
        axes = (int(rng.integers(10, small_w // 14)), int(rng.integers(10, small_h // 14)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    subject_centre = (
        int(rng.integers(small_w // 4, 3 * small_w // 4)),
        int(rng.integers(small_h // 3, 2 * small_h // 3)),
    )
    subject_axes = (int(rng.integers(small_h // 8, small_h // 4)), int(rng.integers(small_h // 6, small_h // 3)))
    cv2.ellipse(canvas, subject_centre, subject_axes, 0, 0, 360, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    texture = rng.normal(0, 18, (small_h, small_w, 1)).astype(np.float32)
    subject = np.zeros((small_h, small_w), np.uint8)
    cv2.ellipse(subject, subject_centre, subject_axes, 0, 0, 360, 1, -1)
    canvas = np.clip(canvas + texture * subject[..., None], 0, 255).astype(np.uint8)
    full = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    full = np.clip(full + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(full).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def run() -> list[dict]:
    photos = [PhotoInput(f"IMG_{index:04d}.jpg", synthesize_photo(index)) for index in range(PHOTO_COUNT)]
    options = PrepareOptions(resolution=512, max_photos=PHOTO_COUNT)
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        dataset = prepare_photos(photos, options)
        timings.append(time.perf_counter() - start)
        if len(dataset.images) != PHOTO_COUNT:
            rejected = [report.reason for report in dataset.reports if not report.kept]
            raise RuntimeError(f"benchmark photos were rejected: {rejected}")
    return [
        {
            "name": "dataset.prepare_20x12mp_seconds",
            "value": round(statistics.median(timings), 3),
            "unit": "s",
            "goal": "< 10",
        }
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
