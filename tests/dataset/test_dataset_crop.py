"""The square crop keeps the subject: faces (astronaut), objects (DreamBench photos), flat images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_photos import encode
from PIL import Image
from skimage import data as skimage_data

from likeness.dataset import PhotoInput, PrepareOptions, prepare_photos

# Subjects whose pixels a colour threshold finds reliably, so the test knows where the subject really is.
SUBJECT_MASKS = {
    "red_cartoon": lambda r, g, b: (r > 150) & (g < 70) & (b < 70),
    "clock": lambda r, g, b: (r > 190) & (g > 150) & (b < 100),
}
MIN_SUBJECT_COVERAGE = 0.9


def subject_mask(subject: str, rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., channel].astype(int) for channel in range(3))
    return SUBJECT_MASKS[subject](r, g, b)


def coverage(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    left, top, right, bottom = box
    return float(mask[top:bottom, left:right].sum() / mask.sum())


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    return encode(Image.fromarray(skimage_data.astronaut()), "PNG")


@pytest.fixture(scope="module")
def astronaut_face() -> tuple[float, float, float, float]:
    """A reference box of the astronaut's face, (x, y, w, h): the largest face Haar's default cascade finds on the
    full-size original. Whichever detector the crop uses, its face box must overlap this one."""
    grey = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
    assert len(faces) >= 1
    return tuple(float(v) for v in max(faces, key=lambda f: f[2] * f[3]))


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Overlap of two (left, top, right, bottom) boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("subject_type", ["face", "auto"])
def test_astronaut_crop_is_centred_on_the_face(astronaut_png, astronaut_face, subject_type):
    x, y, w, h = astronaut_face
    reference = (x, y, x + w, y + h)
    # With min_side lowered the frame follows face_margin exactly; with the defaults it is widened to 256 px
    # and shifted down where it meets the top edge, but must still hold the whole face.
    for options, tolerance in (
        (PrepareOptions(resolution=256, min_side=64, subject_type=subject_type, min_photos=1), 0.02),
        (PrepareOptions(resolution=512, subject_type=subject_type, min_photos=1), 0.05),
    ):
        dataset = prepare_photos([PhotoInput("astronaut.png", astronaut_png)], options)
        report = dataset.reports[0]
        assert report.crop_method == "face"
        assert iou(report.face_box, reference) >= 0.6, (report.face_box, reference)
        face_left, face_top, face_right, face_bottom = report.face_box
        face_centre = np.array([(face_left + face_right) / 2, (face_top + face_bottom) / 2])
        left, top, right, bottom = report.crop_box
        crop_centre = np.array([(left + right) / 2, (top + bottom) / 2])
        assert np.abs(crop_centre - face_centre).max() <= tolerance * 512
        for box in (reference, report.face_box):
            assert left <= box[0] and top <= box[1] and right >= box[2] and bottom >= box[3]
        assert right - left == bottom - top
        assert dataset.images[0][1].size == (options.resolution, options.resolution)
    assert report.crop_box[2] - report.crop_box[0] == 256  # widened from 2.2 face sides to min_side


def test_face_margin_sets_the_frame_size(astronaut_png):
    options = PrepareOptions(resolution=128, min_side=64, subject_type="face", face_margin=0.3, min_photos=1)
    report = prepare_photos([PhotoInput("a.png", astronaut_png)], options).reports[0]
    face_left, face_top, face_right, face_bottom = report.face_box
    side = max(face_right - face_left, face_bottom - face_top)
    left, _, right, _ = report.crop_box
    assert abs((right - left) - side * 1.6) <= 0.05 * side


def test_object_mode_ignores_faces(astronaut_png):
    options = PrepareOptions(resolution=256, subject_type="object", min_photos=1)
    assert prepare_photos([PhotoInput("a.png", astronaut_png)], options).reports[0].crop_method != "face"


def test_off_centre_object_on_a_wide_photo_is_framed():
    rng = np.random.default_rng(7)
    canvas = np.clip(rng.normal(150, 6, (480, 960, 3)), 0, 255).astype(np.uint8)
    object_mask = np.zeros((480, 960), np.uint8)
    for target, colour in ((canvas, (170, 40, 60)), (object_mask, 1)):
        cv2.ellipse(target, (790, 250), (90, 120), 15, 0, 360, colour, -1)
    cv2.circle(canvas, (770, 220), 30, (250, 210, 60), -1)
    dataset = prepare_photos([PhotoInput("wide.jpg", encode(canvas))], PrepareOptions(resolution=256, min_photos=1))
    report = dataset.reports[0]
    assert report.crop_method == "saliency"
    left, top, right, bottom = report.crop_box
    # Tight around the object (but never below half the short side), not the centre 480 px square.
    assert 240 <= right - left == bottom - top < 400
    assert coverage(object_mask.astype(bool), report.crop_box) >= 0.98


def test_featureless_photo_falls_back_to_a_centre_crop():
    flat = np.full((400, 600, 3), 128, np.uint8)
    report = prepare_photos([PhotoInput("flat.png", encode(flat, "PNG"))], PrepareOptions(resolution=256, min_photos=1))
    assert report.reports[0].crop_method == "center"
    assert report.reports[0].crop_box == (100, 0, 500, 400)


def windows_around_subject(rgb: np.ndarray, mask: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """3:4 and 4:3 crops of a square photo that still hold the whole subject but push it to either end, so the
    square crop has a real choice to make."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    windows = []
    for axis, low, high, extent in (("x", xs.min(), xs.max(), width), ("y", ys.min(), ys.max(), height)):
        span = extent * 3 // 4
        if high - low + 1 > span:
            continue
        for end, offset in (("start", min(extent - span, low)), ("end", max(0, high + 1 - span))):
            cut = np.s_[:, offset : offset + span] if axis == "x" else np.s_[offset : offset + span]
            windows.append((f"{axis}-{end}", np.ascontiguousarray(rgb[cut]), mask[cut]))
    return windows


@pytest.mark.parametrize(("subject", "resolution"), [("red_cartoon", 512), ("clock", 512), ("clock", 1024)])
def test_dreambench_photos_keep_their_subject(dreambench: Path, subject, resolution):
    photos, masks = [], {}
    for path in sorted((dreambench / subject).glob("*.jpg")):
        photos.append(PhotoInput(path.name, path.read_bytes()))
        rgb = np.asarray(Image.open(path).convert("RGB"))
        masks[path.name] = subject_mask(subject, rgb)
        if resolution == 512:
            for label, window, window_mask in windows_around_subject(rgb, masks[path.name]):
                name = f"{path.stem}-{label}.jpg"
                photos.append(PhotoInput(name, encode(window, quality=92)))
                masks[name] = window_mask
    # Windows of one photo overlap by design; deduplication is tested elsewhere.
    options = PrepareOptions(resolution=resolution, min_photos=1, max_photos=len(photos), dedupe_threshold=-1)
    dataset = prepare_photos(photos, options)
    assert all(report.kept for report in dataset.reports), [r.reason for r in dataset.reports if not r.kept]
    for _, image in dataset.images:
        assert image.mode == "RGB" and image.size == (resolution, resolution)
    for report in dataset.reports:
        left, top, right, bottom = report.crop_box
        assert right - left == bottom - top
        assert coverage(masks[report.name], report.crop_box) >= MIN_SUBJECT_COVERAGE, report
    if resolution == 512:
        assert sum(report.crop_method == "saliency" for report in dataset.reports) >= len(photos) * 0.8
