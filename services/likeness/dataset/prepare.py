"""Turn a handful of raw photos into a square training set at the model's resolution, with a report.

Per photo (in a thread pool; Pillow and OpenCV release the GIL while decoding and resizing):
decode/validate -> EXIF orientation -> RGB -> choose a square crop (face, saliency or centre) -> resize.
Then, in input order: near-duplicate removal, output names, captions, and the minimum-count check.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from likeness.dataset.crop import choose_crop
from likeness.dataset.decode import decode_photo
from likeness.dataset.dedupe import DuplicateFinder, Fingerprint, View
from likeness.dataset.options import PhotoInput, PrepareOptions, validate_photos
from likeness.dataset.report import PhotoRejected, PhotoReport, summarize_rejections
from likeness.errors import InvalidArgument

logger = logging.getLogger(__name__)

# Each worker may hold one full-resolution decode (up to max_pixels x 4 bytes); four bounds the peak memory.
MAX_WORKERS = 4
# A 3x downscale per LANCZOS pass keeps quality while letting Pillow shrink by whole factors first.
REDUCING_GAP = 3.0


class NotEnoughPhotos(InvalidArgument):
    """Too few usable photos remain; `reports` says what happened to every photo."""

    def __init__(self, message: str, reports: list[PhotoReport]) -> None:
        super().__init__(message, field="photos")
        self.reports = reports


@dataclass
class PreparedDataset:
    """The training set: (output_name, RGB image of resolution x resolution) in input order, a report per
    input photo (same order as the input), and captions keyed by output name."""

    images: list[tuple[str, Image.Image]]
    reports: list[PhotoReport]
    captions: dict[str, str]
    resolution: int
    subject_type: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def rejected(self) -> list[PhotoReport]:
        return [report for report in self.reports if not report.kept]

    def report_json(self) -> dict[str, Any]:
        """The report as stored in `report.json`."""
        return {
            "resolution": self.resolution,
            "kept": len(self.images),
            "rejected": len(self.rejected),
            "options": self.options,
            "photos": [report.to_dict() for report in self.reports],
        }


@dataclass
class _Processed:
    report: PhotoReport
    image: Image.Image | None = None
    fingerprint: Fingerprint | None = None


def prepare_photos(photos: list[PhotoInput], options: PrepareOptions | None = None) -> PreparedDataset:
    """Validate, orient, crop and resize `photos`; reject unusable ones with a reason each.

    Raises InvalidArgument(field="photos") for an empty or oversized request, and NotEnoughPhotos (an
    InvalidArgument) listing every rejection when fewer than `options.min_photos` usable photos remain.
    """
    options = options or PrepareOptions()
    options.validate()
    validate_photos(photos, options)
    workers = max(1, min(len(photos), MAX_WORKERS, os.cpu_count() or 1))
    if workers == 1:
        processed = [_process_photo(photo, options) for photo in photos]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
            processed = list(pool.map(lambda photo: _process_photo(photo, options), photos))

    duplicates = DuplicateFinder(options.dedupe_threshold)
    images: list[tuple[str, Image.Image]] = []
    captions: dict[str, str] = {}
    used_names: set[str] = set()
    for index, item in enumerate(processed):
        report = item.report
        if item.image is None or item.fingerprint is None:
            continue
        match = duplicates.check(index, item.fingerprint)
        if match is not None:
            original = photos[match.original_index].name
            rejection = PhotoRejected(
                f"duplicate_of:{original}",
                f"near-identical to {original!r} ({match.distance} of 64 hash bits differ, "
                f"threshold {options.dedupe_threshold})",
            )
            _reject(report, rejection)
            continue
        report.output_name = _output_name(len(images), photos[index].name, used_names)
        images.append((report.output_name, item.image))
        caption = photos[index].caption
        if caption is None:
            caption = options.captions.get(photos[index].name)
        if caption and caption.strip():
            report.caption = caption.strip()
            captions[report.output_name] = report.caption

    reports = [item.report for item in processed]
    if len(images) < options.min_photos:
        raise NotEnoughPhotos(
            f"only {len(images)} of {len(photos)} photos are usable, at least {options.min_photos} are needed. "
            f"Rejected: {summarize_rejections(reports)}",
            reports,
        )
    return PreparedDataset(
        images=images,
        reports=reports,
        captions=captions,
        resolution=options.resolution,
        subject_type=options.subject_type,
        options=_options_summary(options),
    )


def _process_photo(photo: PhotoInput, options: PrepareOptions) -> _Processed:
    report = PhotoReport(name=photo.name, status="kept")
    try:
        decoded = decode_photo(photo.data, options)
    except PhotoRejected as rejection:
        _reject(report, rejection)
        return _Processed(report)
    except Exception as exc:  # one exotic file must not fail the whole dataset; log it for a bug report
        logger.warning("unexpected error decoding photo %r", photo.name, exc_info=True)
        _reject(report, PhotoRejected("corrupt", f"the file could not be decoded ({type(exc).__name__}: {exc})"))
        return _Processed(report)
    report.original_size = decoded.size
    report.original_format = decoded.format
    report.original_mode = decoded.mode
    report.exif_rotated = decoded.exif_rotated
    report.notes.extend(decoded.notes)

    choice = choose_crop(decoded.analysis, decoded.size, options)
    report.crop_box = choice.box
    report.crop_method = choice.method
    report.face_box = choice.face_box
    report.notes.extend(choice.notes)
    left, top, right, bottom = choice.box
    side = right - left
    if side < options.resolution:
        report.notes.append(f"upscaled {options.resolution / side:.2f}x (crop is {side} px)")
    try:
        source, scale_x, scale_y = decoded.region_source(side, options.resolution)
    except PhotoRejected as rejection:
        _reject(report, rejection)
        return _Processed(report)
    image = source.resize(
        (options.resolution, options.resolution),
        Image.Resampling.LANCZOS,
        box=(left * scale_x, top * scale_y, right * scale_x, bottom * scale_y),
        reducing_gap=REDUCING_GAP,
    )
    fingerprint = Fingerprint(photo=View.of(decoded.analysis), crop=View.of(image))
    report.phash = f"{fingerprint.crop.phash:016x}"
    return _Processed(report, image, fingerprint)


def _reject(report: PhotoReport, rejection: PhotoRejected) -> None:
    report.status = "rejected"
    report.code = rejection.code
    report.reason = rejection.reason


def _output_name(index: int, original: str, used: set[str]) -> str:
    """`NN_<slug of the original file name>.png`: sortable, storage-safe, recognisable."""
    stem = PurePosixPath(original.replace("\\", "/")).stem
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40] or "photo"
    name = f"{index:02d}_{slug}.png"
    suffix = 2
    while name in used:
        name = f"{index:02d}_{slug}-{suffix}.png"
        suffix += 1
    used.add(name)
    return name


def _options_summary(options: PrepareOptions) -> dict[str, Any]:
    return {
        "resolution": options.resolution,
        "subject_type": options.subject_type,
        "face_margin": options.face_margin,
        "min_side": options.effective_min_side,
        "dedupe_threshold": options.dedupe_threshold,
        "min_photos": options.min_photos,
        "max_photos": options.max_photos,
        "max_pixels": options.max_pixels,
    }
