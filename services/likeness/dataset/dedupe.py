"""Near-duplicate detection with a 64-bit perceptual hash (pHash).

The hash keeps the signs of an image's lowest 8x8 DCT frequencies relative to their median: recompression,
resizing and small colour changes leave it (almost) untouched, while a different shot of the same subject flips
many bits. Each photo is compared in two views, and one close view makes a duplicate:

* the whole upright photo, so the same photo at two resolutions (phone original and messenger copy) matches
  even though its square crops differ (the crop never goes below the output resolution, so it depends on
  the photo's pixel size);
* the square crop, which is what training sees, so two framings with the same content match.

Measured on the DreamBench photos (prepared at 512): re-encoded, halved, +10% brighter copies differ by 0-2
bits, 3-6% crops by 0-16; distinct shots of the same subject by 10 or more (the closest: two poses of a cartoon
on white), mean ~30; unrelated photos by ~31.

pHash only sees luminance structure, and flat graphics (a two-tone background, a gradient) leave most DCT
coefficients near zero, so their hashes collapse to a few bits and unrelated images collide. A second,
independent check guards against that: the views' 8x8 colour thumbnails must also agree (re-encoded copies
differ by ~1 level of 255 on average, different scenes by tens).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

HASH_SIDE = 32  # the image is reduced to 32x32 grey before the DCT
LOW_FREQUENCIES = 8  # keep the top-left 8x8 block: 64 bits
COLOUR_SIDE = 8
# Mean absolute difference (0..255) of the 8x8 colour thumbnails above which two views are never duplicates;
# generous enough for a +-10% exposure change.
COLOUR_TOLERANCE = 24.0


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit pHash of `image` as an int (bit i = DCT coefficient i above the median of the block)."""
    grey = np.asarray(image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float32)
    block = cv2.dct(grey)[:LOW_FREQUENCIES, :LOW_FREQUENCIES].flatten()
    # The DC term (overall brightness) would dominate the median; leave it out of the threshold.
    bits = block > np.median(block[1:])
    return int(sum(1 << index for index, bit in enumerate(bits) if bit))


def colour_signature(image: Image.Image) -> np.ndarray:
    """The image's 8x8 RGB thumbnail (float32), the colour layout the duplicate check compares."""
    return np.asarray(image.convert("RGB").resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX), np.float32)


def hamming_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class View:
    """One way of looking at a photo for duplicate detection."""

    phash: int
    colours: np.ndarray

    @classmethod
    def of(cls, image: Image.Image) -> View:
        return cls(perceptual_hash(image), colour_signature(image))

    def distance(self, other: View) -> int | None:
        """Hamming distance of the hashes, or None when the colour layouts disagree (never duplicates)."""
        if float(np.abs(self.colours - other.colours).mean()) > COLOUR_TOLERANCE:
            return None
        return hamming_distance(self.phash, other.phash)


@dataclass(frozen=True)
class Fingerprint:
    photo: View  # the whole upright photo
    crop: View  # the square training crop


@dataclass
class DuplicateMatch:
    original_index: int
    distance: int


class DuplicateFinder:
    """Remembers the kept photos (in input order) and names the earlier one a new photo repeats."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._kept: list[tuple[int, Fingerprint]] = []

    def check(self, index: int, fingerprint: Fingerprint) -> DuplicateMatch | None:
        """The closest earlier kept photo within the threshold in either view, or None (and this photo is
        remembered as kept)."""
        if self.threshold >= 0:
            close = []
            for kept_index, kept in self._kept:
                distances = [
                    distance
                    for distance in (fingerprint.photo.distance(kept.photo), fingerprint.crop.distance(kept.crop))
                    if distance is not None
                ]
                if distances and min(distances) <= self.threshold:
                    close.append(DuplicateMatch(kept_index, min(distances)))
            if close:
                return min(close, key=lambda match: (match.distance, match.original_index))
        self._kept.append((index, fingerprint))
        return None
