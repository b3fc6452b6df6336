"""The trainer's dataset operations: upload limits, options, prepare + publish, and reading a dataset back.

Preparation itself (decode, orient, crop, dedupe) is `likeness.dataset`; this module adds what the service
needs around it: limits on what a client may upload, default resolution from the base model, photos referenced
by storage key, the stored report, and the dataset's row in the control-plane database (`DatasetCatalog`).
A dataset's files are in shared storage; its row is written after them, so a row always names a complete dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from likeness.dataset.contact_sheet import encoded_size
from likeness.dataset.options import MAX_PHOTOS_HARD_CAP, MIN_SIDE_FLOOR, PhotoInput, PrepareOptions
from likeness.dataset.prepare import prepare_photos
from likeness.dataset.publish import REPORT_NAME, load_dataset_manifest, publish_dataset
from likeness.errors import InvalidArgument, NotFound, ResourceExhausted
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.base import Storage
from likeness.storage.layout import dataset_contact_sheet_key, dataset_prefix, tenant_prefix
from likeness.storage.manifest import DatasetManifest, parse_rfc3339
from likeness.trainer.store import DatasetRecord, JobStore
from likeness_client.v1 import types_pb2

#: EncodedImage.name of a dataset's contact sheet.
CONTACT_SHEET_NAME = "contact_sheet"

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


class DatasetCatalog:
    """Datasets of the control plane: files in shared storage, one row each in the database."""

    def __init__(self, storage: Storage, store: JobStore) -> None:
        self.storage = storage
        self.store = store

    def publish(
        self, tenant: str, prepared: Any, options: PrepareOptions, *, source: str = "upload"
    ) -> DatasetManifest:
        manifest = publish_dataset(self.storage, tenant, prepared, options, source=source)
        try:
            self._record(manifest, prepared.options.get("display_name", ""))
        except BaseException:
            self.storage.delete_prefix(dataset_prefix(tenant, manifest.dataset_id))
            raise
        return manifest

    def _record(self, manifest: DatasetManifest, display_name: str) -> DatasetRecord:
        record = DatasetRecord(
            dataset_id=manifest.dataset_id,
            tenant=manifest.tenant,
            resolution=manifest.resolution,
            image_count=manifest.image_count,
            display_name=display_name,
            source=manifest.source,
            create_time=parse_rfc3339(manifest.created_at).timestamp(),
        )
        self.store.add_dataset(record)
        return record

    def discard(self, tenant: str, dataset_id: str) -> None:
        self.store.delete_dataset(tenant, dataset_id)

    def get(self, tenant: str, dataset_id: str) -> DatasetRecord:
        """The dataset's row; NotFound for an unknown id.

        A dataset published straight to storage (by `likeness prepare --storage-url`, or before the control plane
        existed) is adopted: its row is written from its manifest the first time it is asked for.
        """
        record = self.store.get_dataset(tenant, dataset_id)
        if record is not None:
            return record
        manifest = load_dataset_manifest(self.storage, tenant, dataset_id)
        report = self.storage.read_json(f"{dataset_prefix(tenant, dataset_id)}/{REPORT_NAME}")
        try:
            return self._record(manifest, (report.get("options") or {}).get("display_name", ""))
        except Exception:
            existing = self.store.get_dataset(tenant, dataset_id)  # adopted by a concurrent call
            if existing is None:
                raise
            return existing

    def resolution(self, tenant: str, dataset_id: str) -> int:
        return self.get(tenant, dataset_id).resolution

    def prepare_and_publish(
        self, tenant: str, photos: list[PhotoInput], options: PrepareOptions, display_name: str = ""
    ) -> tuple[DatasetManifest, dict[str, Any]]:
        """Prepares photos and publishes the dataset; returns its manifest and report."""
        prepared = prepare_photos(photos, options)
        if display_name:
            prepared.options["display_name"] = display_name
        manifest = self.publish(tenant, prepared, options, source="upload")
        return manifest, {"dataset_id": manifest.dataset_id, **prepared.report_json()}

    def read(self, tenant: str, dataset_id: str) -> tuple[DatasetManifest, dict[str, Any]]:
        """A dataset's manifest and report; NotFound for an unknown id."""
        self.get(tenant, dataset_id)
        manifest = load_dataset_manifest(self.storage, tenant, dataset_id)
        report = self.storage.read_json(f"{dataset_prefix(tenant, dataset_id)}/{REPORT_NAME}")
        return manifest, report

    def contact_sheet(self, tenant: str, dataset_id: str) -> bytes:
        key = dataset_contact_sheet_key(tenant, dataset_id)
        return self.storage.read_bytes(key) if self.storage.exists(key) else b""

    def contact_sheet_image(self, tenant: str, dataset_id: str) -> types_pb2.EncodedImage:
        """The stored contact sheet as an EncodedImage with its real width and height (empty when there is none)."""
        data = self.contact_sheet(tenant, dataset_id)
        width, height = encoded_size(data)
        return types_pb2.EncodedImage(
            format=types_pb2.IMAGE_FORMAT_JPEG, data=data, width=width, height=height, name=CONTACT_SHEET_NAME
        )
