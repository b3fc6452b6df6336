"""Builders of small, deterministic synthetic photos for the dataset tests."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def scene(seed: int, size: tuple[int, int] = (480, 360)) -> np.ndarray:
    """A distinct photo-like RGB array: a smooth two-colour gradient with random blurred shapes and a little
    sensor noise. Different seeds give perceptually different images (far apart in pHash)."""
    rng = np.random.default_rng(seed)
    width, height = size
    low = rng.integers(0, 256, 3)
    high = rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height + 1.0) / 2.0
    canvas = (low + (high - low) * ramp[..., None]).astype(np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(width // 12, width // 3)), int(rng.integers(height // 12, height // 3)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 1.5)
    noise = rng.normal(0, 3, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **params) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    if fmt == "JPEG":
        params.setdefault("quality", 90)
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height RGB pixels (valid CRCs, a token IDAT)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
