"""Choose the square crop of a photo: around the largest face, around the salient object, or the centre.

Everything here runs on the small analysis copy (<= 512 px) and returns a box in the coordinates of the
upright original, so the expensive full-resolution pixels are touched once, by the final resize.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from likeness.dataset.faces import detect_faces
from likeness.dataset.options import PrepareOptions

# In "auto" mode a face must be a real portrait's (>= 10% of the short side): a passer-by's small face in a
# photo of a dog or a product must not steal the frame.
AUTO_MIN_FACE_FRACTION = 0.10

SALIENCY_SIDE = 128
SALIENT_MASS_QUANTILES = (0.05, 0.95)  # the box holding the central 90% of the salient mass per axis
SALIENT_PADDING = 1.2  # breathing room around the salient box
# An object crop keeps at least half the short side: coarse saliency can misjudge the object's extent, and
# some context helps DreamBooth separate subject from background.
MIN_OBJECT_CROP_FRACTION = 0.5
# Saliency that is not this much denser inside the chosen square than across the whole image is noise.
MIN_SALIENCY_CONCENTRATION = 1.15


@dataclass
class CropChoice:
    box: tuple[int, int, int, int]
    method: str
    notes: list[str] = field(default_factory=list)
    face_box: tuple[int, int, int, int] | None = None


def choose_crop(analysis: Image.Image, size: tuple[int, int], options: PrepareOptions) -> CropChoice:
    """The square crop box (left, top, right, bottom) in `size` coordinates and how it was chosen."""
    width, height = size
    scale_x, scale_y = width / analysis.width, height / analysis.height
    rgb = np.asarray(analysis.convert("RGB"))
    notes: list[str] = []
    if options.subject_type in ("face", "auto"):
        faces = detect_faces(rgb)
        confirmed = [face for face in faces if face.confirmed]
        if options.subject_type == "auto":
            portrait_side = AUTO_MIN_FACE_FRACTION * min(analysis.size)
            pool = [face for face in confirmed if min(face.box[2], face.box[3]) >= portrait_side]
        else:
            pool = confirmed or faces
        if pool:
            x, y, w, h = max(pool, key=lambda face: face.box[2] * face.box[3]).box
            face_box = (x * scale_x, y * scale_y, w * scale_x, h * scale_y)
            if not confirmed:
                notes.append("face detection was not confirmed (a low-confidence hit); check this crop")
            box = _face_square(face_box, size, options)
            face_edges = (face_box[0], face_box[1], face_box[0] + face_box[2], face_box[1] + face_box[3])
            left, top, right, bottom = (round(v) for v in face_edges)
            return CropChoice(box, "face", notes, (left, top, right, bottom))
        if options.subject_type == "face":
            notes.append("no face found; framed the salient region instead")
    saliency_box = _saliency_square(rgb, size, options)
    if saliency_box is not None:
        return CropChoice(saliency_box, "saliency", notes)
    return CropChoice(center_square(size), "center", notes)


def _face_square(
    face: tuple[float, float, float, float], size: tuple[int, int], options: PrepareOptions
) -> tuple[int, int, int, int]:
    x, y, w, h = face
    short = min(size)
    side = max(w, h) * (1.0 + 2.0 * options.face_margin)
    # A tiny face would need a huge upscale; widen the frame to the minimum photo side instead.
    side = min(max(side, min(short, options.effective_min_side)), short)
    return place_square((x + w / 2, y + h / 2), side, size)


def saliency_map(rgb: np.ndarray) -> np.ndarray:
    """A cheap saliency map (float32, 0..1) of an RGB array at ~128 px: colour contrast against the photo's
    border (objects on a table or backdrop) averaged with the spectral residual (Hou & Zhang 2007; small
    details that stand out from the image's overall texture)."""
    height, width = rgb.shape[:2]
    factor = SALIENCY_SIDE / max(height, width)
    small_size = (max(8, round(width * factor)), max(8, round(height * factor)))
    small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
    smooth = cv2.GaussianBlur(small, (0, 0), 1.0)
    contrast = _border_contrast(smooth)
    residual = _spectral_residual(cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY))
    return (0.5 * _normalise(contrast) + 0.5 * _normalise(residual)).astype(np.float32)


def _border_contrast(rgb: np.ndarray) -> np.ndarray:
    """Lab distance of each pixel to the closest of the four borders' median colours."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    strip = max(2, round(0.06 * min(lab.shape[:2])))
    borders = (lab[:strip], lab[-strip:], lab[:, :strip], lab[:, -strip:])
    distances = [np.linalg.norm(lab - np.median(b.reshape(-1, 3), axis=0), axis=2) for b in borders]
    return np.asarray(np.min(distances, axis=0))


def _spectral_residual(grey: np.ndarray) -> np.ndarray:
    spectrum = np.fft.fft2(grey.astype(np.float32))
    log_amplitude = np.log(np.abs(spectrum) + 1e-6)
    residual = log_amplitude - cv2.blur(log_amplitude.astype(np.float32), (3, 3))
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sigma = max(grey.shape) / 40.0
    return np.asarray(cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), sigma))


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values, (1, 99))
    if high - low < 1e-6:
        return np.zeros_like(values, dtype=np.float32)
    return np.asarray(np.clip((values - low) / (high - low), 0.0, 1.0), dtype=np.float32)


def _saliency_square(
    rgb: np.ndarray, size: tuple[int, int], options: PrepareOptions
) -> tuple[int, int, int, int] | None:
    """A square around the weighted centroid of above-average saliency, sized to hold the central 90% of
    that mass (padded), never smaller than half the short side; None when the map shows no subject."""
    width, height = size
    saliency = saliency_map(rgb)
    weights = np.clip(saliency - saliency.mean(), 0.0, None)
    total = float(weights.sum())
    if total <= 1e-6:
        return None
    map_h, map_w = weights.shape
    sx, sy = width / map_w, height / map_h
    col_mass = weights.sum(axis=0) / total
    row_mass = weights.sum(axis=1) / total
    centre = (
        (float(np.dot(col_mass, np.arange(map_w))) + 0.5) * sx,
        (float(np.dot(row_mass, np.arange(map_h))) + 0.5) * sy,
    )
    left, right = (q * sx for q in _mass_quantiles(col_mass))
    top, bottom = (q * sy for q in _mass_quantiles(row_mass))
    short = min(size)
    floor = max(MIN_OBJECT_CROP_FRACTION * short, min(short, options.resolution), options.effective_min_side)
    side = min(max(max(right - left, bottom - top) * SALIENT_PADDING, floor), short)
    # Prefer the centroid, but slide so the salient box stays inside the square where the side allows it.
    cx = _slide_to_cover(centre[0], side, left, right)
    cy = _slide_to_cover(centre[1], side, top, bottom)
    box = place_square((cx, cy), side, size)
    inside = weights[
        int(box[1] / sy) : max(int(box[1] / sy) + 1, round(box[3] / sy)),
        int(box[0] / sx) : max(int(box[0] / sx) + 1, round(box[2] / sx)),
    ].sum()
    area_fraction = (side * side) / (width * height)
    if area_fraction < 0.999 and inside / total < MIN_SALIENCY_CONCENTRATION * area_fraction:
        return None
    return box


def _mass_quantiles(mass: np.ndarray) -> tuple[float, float]:
    cumulative = np.cumsum(mass)
    low_q, high_q = SALIENT_MASS_QUANTILES
    low = float(np.searchsorted(cumulative, low_q))
    high = float(np.searchsorted(cumulative, high_q)) + 1.0
    return low, min(high, float(len(mass)))


def _slide_to_cover(centre: float, side: float, low: float, high: float) -> float:
    """Move `centre` as little as possible so that [centre - side/2, centre + side/2] covers [low, high]."""
    if high - low >= side:
        return (low + high) / 2
    return min(max(centre, high - side / 2), low + side / 2)


def place_square(centre: tuple[float, float], side: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An integer square of `side` centred on `centre`, shifted (not shrunk) to lie inside the image."""
    width, height = size
    side_px = max(1, min(round(side), width, height))
    left = min(max(round(centre[0] - side_px / 2), 0), width - side_px)
    top = min(max(round(centre[1] - side_px / 2), 0), height - side_px)
    return (left, top, left + side_px, top + side_px)


def center_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = size
    return place_square((width / 2, height / 2), min(size), size)
