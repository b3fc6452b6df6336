"""The trainer's dataset operations: upload limits, options, prepare + publish, and reading a dataset back.

Preparation itself (decode, orient, crop, dedupe) is `likeness.dataset`; this module adds what the service
needs around it: limits on what a client may upload, default resolution from the base model, photos referenced
by storage key, and the stored report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from likeness.dataset.options import MAX_PHOTOS_HARD_CAP, MIN_SIDE_FLOOR, PhotoInput, PrepareOptions
from likeness.dataset.prepare import prepare_photos
from likeness.dataset.publish import REPORT_NAME, load_dataset_manifest, publish_dataset
from likeness.errors import InvalidArgument, NotFound, ResourceExhausted
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.base import Storage
from likeness.storage.layout import dataset_contact_sheet_key, dataset_prefix, tenant_prefix
from likeness.storage.manifest import DatasetManifest

#: Most bytes one PrepareDataset upload may carry in total (all photos together).
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
#: Most bytes of one photo.
MAX_PHOTO_BYTES = 50 * 1024 * 1024
DEFAULT_MIN_SIDE = 256


@dataclass
class UploadCollector:
    """Joins the chunks of a client-streamed upload per file name, enforcing the upload limits as they arrive."""

    max_total_bytes: int = MAX_UPLOAD_BYTES
    max_photo_bytes: int = MAX_PHOTO_BYTES
    max_photos: int = MAX_PHOTOS_HARD_CAP
    total_bytes: int = 0
    _data: dict[str, bytearray] = field(default_factory=dict)
    _captions: dict[str, str] = field(default_factory=dict)

    def add(self, file_name: str, data: bytes, caption: str = "") -> None:
        if not file_name or not file_name.strip():
            raise InvalidArgument("every chunk needs the file name of its photo", field="photo_chunk.file_name")
        if file_name not in self._data:
            if len(self._data) >= self.max_photos:
                raise InvalidArgument(f"more than {self.max_photos} photos in one upload", field="photos")
            self._data[file_name] = bytearray()
        self.total_bytes += len(data)
        if self.total_bytes > self.max_total_bytes:
            raise ResourceExhausted(
                f"the upload exceeds {self.max_total_bytes // (1024 * 1024)} MiB; send fewer or smaller photos"
            )
        buffer = self._data[file_name]
        if len(buffer) + len(data) > self.max_photo_bytes:
            raise InvalidArgument(
                f"photo {file_name!r} exceeds {self.max_photo_bytes // (1024 * 1024)} MiB; export it smaller",
                field="photos",
            )
        buffer.extend(data)
        if caption and file_name not in self._captions:
            self._captions[file_name] = caption

    def photos(self) -> list[PhotoInput]:
        return [PhotoInput(name, bytes(data), self._captions.get(name)) for name, data in self._data.items()]


def photos_from_storage(storage: Storage, tenant: str, keys: list[str], collector: UploadCollector) -> None:
    """Adds photos referenced by storage key; only keys under the caller's tenant folder are readable."""
    own = tenant_prefix(tenant) + "/"
    for key in keys:
        if not key.startswith(own):
            raise InvalidArgument(f"{key!r} is not under your storage folder {own!r}", field="options.photo_uris")
        try:
            data = storage.read_bytes(key)
        except NotFound as error:
            raise NotFound(f"photo {key!r} does not exist in storage", field="options.photo_uris") from error
        collector.add(key.rsplit("/", 1)[-1], data)


def prepare_options(
    catalog: BaseModelCatalog,
    *,
    base_model: str,
    resolution: int = 0,
    subject_type: str = "auto",
    face_margin: float | None = None,
    dedupe_threshold: int | None = None,
) -> PrepareOptions:
    """Dataset options with the base model's resolution as default; validated."""
    if not resolution:
        try:
            resolution = catalog.resolve(base_model).resolution
        except NotFound as error:
            raise InvalidArgument(error.message.split(": ", 1)[-1], field="options.base_model") from error
    options = PrepareOptions(
        resolution=resolution,
        subject_type=subject_type,
        # Small (test) resolutions accept photos down to their own size; real ones keep the 256 px floor.
        min_side=max(MIN_SIDE_FLOOR, min(DEFAULT_MIN_SIDE, resolution)),
    )
    if face_margin is not None:
        options.face_margin = face_margin
    if dedupe_threshold is not None:
        options.dedupe_threshold = dedupe_threshold
    options.validate()
    return options


def prepare_and_publish(
    storage: Storage, tenant: str, photos: list[PhotoInput], options: PrepareOptions, display_name: str = ""
) -> tuple[DatasetManifest, dict[str, Any]]:
    """Prepares photos and publishes the dataset; returns its manifest and report."""
    prepared = prepare_photos(photos, options)
    if display_name:
        prepared.options["display_name"] = display_name
    manifest = publish_dataset(storage, tenant, prepared, options, source="upload")
    return manifest, {"dataset_id": manifest.dataset_id, **prepared.report_json()}


def read_dataset(storage: Storage, tenant: str, dataset_id: str) -> tuple[DatasetManifest, dict[str, Any]]:
    """A published dataset's manifest and report; NotFound for an unknown id."""
    manifest = load_dataset_manifest(storage, tenant, dataset_id)
    report = storage.read_json(f"{dataset_prefix(tenant, dataset_id)}/{REPORT_NAME}")
    return manifest, report


def contact_sheet(storage: Storage, tenant: str, dataset_id: str) -> bytes:
    key = dataset_contact_sheet_key(tenant, dataset_id)
    return storage.read_bytes(key) if storage.exists(key) else b""
