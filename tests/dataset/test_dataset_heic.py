"""HEIC photos, as phones shoot them, are prepared like JPEGs (pillow-heif): decoded, oriented upright from their
EXIF orientation, cropped and resized; a damaged one is rejected as corrupt."""

from __future__ import annotations

import io

import numpy as np
import pillow_heif
from PIL import Image

from likeness.dataset import PhotoInput, PrepareOptions, prepare_photos
from likeness.dataset.decode import decode_photo

pillow_heif.register_heif_opener()


def heic(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="HEIF", quality=90, exif=exif.tobytes())
    return out.getvalue()


def portrait_stored_sideways() -> bytes:
    """An upright 300x400 portrait (red top, blue bottom) stored sideways with EXIF orientation 6, as a phone
    held upright writes it."""
    upright = np.zeros((400, 300, 3), np.uint8)
    upright[:200] = (200, 20, 20)
    upright[200:] = (20, 20, 200)
    return heic(Image.fromarray(upright).rotate(90, expand=True), orientation=6)


def test_a_sideways_heic_decodes_upright() -> None:
    decoded = decode_photo(portrait_stored_sideways(), PrepareOptions(resolution=256))
    assert decoded.format == "HEIF"
    assert decoded.size == (300, 400)
    pixels = np.asarray(decoded.decoded, dtype=np.int16)
    assert pixels[20, 150, 0] > 150 and pixels[380, 150, 2] > 150  # red on top, blue at the bottom


def test_heic_photos_make_a_dataset() -> None:
    rng = np.random.default_rng(3)
    photos = [
        PhotoInput(
            f"IMG_{index:04d}.HEIC",
            heic(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((400, 300))),
        )
        for index in range(3)
    ]
    photos.append(PhotoInput("IMG_0003.HEIC", portrait_stored_sideways()))
    dataset = prepare_photos(photos, PrepareOptions(resolution=128, min_photos=3, max_photos=20))
    assert [report.status for report in dataset.reports] == ["kept"] * 4
    assert all(image.size == (128, 128) and image.mode == "RGB" for _, image in dataset.images)
