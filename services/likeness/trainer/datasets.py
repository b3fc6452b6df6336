"""The trainer's dataset operations: upload limits, options, prepare + publish, and reading a dataset back.

Preparation itself (decode, orient, crop, dedupe) is `likeness.dataset`; this module adds what the service
needs around it: limits on what a client may upload, default resolution from the base model, photos referenced
by storage key, the stored report, and the dataset's row in the control-plane database (`DatasetCatalog`).
A dataset's files are in shared storage; its row is written after them, so a row always names a complete dataset.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from likeness.dataset.contact_sheet import encoded_size
from likeness.dataset.options import MAX_PHOTOS_HARD_CAP, MIN_SIDE_FLOOR, PhotoInput, PrepareOptions
from likeness.dataset.prepare import prepare_photos
from likeness.dataset.publish import REPORT_NAME, load_dataset_manifest, publish_dataset
from likeness.errors import InvalidArgument, NotFound, ResourceExhausted
from likeness.models.catalog import BaseModelCatalog
from likeness.net import egress
from likeness.net.egress import (
    EgressError,
    EgressPolicy,
    EgressRefused,
    EgressTimeout,
    EgressTooLarge,
    EgressUnresolved,
)
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
PHOTO_URIS_FIELD = "options.photo_uris"
#: Limits of one photo fetched from a URL (the operator's --fetch-max-mb and --fetch-timeout-seconds).
DEFAULT_FETCH_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_FETCH_TIMEOUT_SECONDS = 20.0
#: Photo URLs fetched at once for one request.
FETCH_CONCURRENCY = 4
_FETCH_HEADERS = {"user-agent": "Likeness-Fetch/1", "accept": "image/*"}
#: Content types that may carry an image although they do not say so (object stores' defaults).
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})


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
    for key in keys:
        collector.add(key.rsplit("/", 1)[-1], _read_own_key(storage, tenant, key, key))


def _read_own_key(storage: Storage, tenant: str, key: str, shown: str) -> bytes:
    own = tenant_prefix(tenant) + "/"
    if not key.startswith(own):
        raise InvalidArgument(f"{shown!r} is not under your storage folder {own!r}", field=PHOTO_URIS_FIELD)
    try:
        return storage.read_bytes(key)
    except NotFound as error:
        raise NotFound(f"photo {shown!r} does not exist in storage", field=PHOTO_URIS_FIELD) from error
    except InvalidArgument as error:
        raise InvalidArgument(
            f"{shown!r} is not a valid storage key: {error.message}", field=PHOTO_URIS_FIELD
        ) from None


def s3_storage_key(storage: Storage, uri: str) -> str:
    """The storage key an `s3://bucket/key` URI names: only objects of the deployment's own bucket, below its
    storage prefix, can be read."""
    root = storage.root_url.rstrip("/")
    if not root.startswith("s3://"):
        raise InvalidArgument(
            f"{uri!r}: this deployment does not keep its storage in S3; give a storage key (tenants/...) or an "
            "https:// URL",
            field=PHOTO_URIS_FIELD,
        )
    if not uri.startswith(root + "/"):
        raise InvalidArgument(
            f"{uri!r} is not in this deployment's bucket ({root}/); copy the photo under your folder there, or give "
            "an https:// URL",
            field=PHOTO_URIS_FIELD,
        )
    return uri[len(root) + 1 :]


def _url_file_name(url: str, index: int) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).strip()
    return name if name and name not in (".", "..") else f"photo-{index:03d}"


class PhotoSources:
    """Photos named by `DatasetOptions.photo_uris`: storage keys under the caller's folder, `s3://` objects of the
    deployment's bucket (under the caller's folder too), and `https://` URLs (http:// only to addresses the
    operator allows), fetched through the egress guard within a size and a time limit. Every error is
    INVALID_ARGUMENT (or NOT_FOUND for a missing key) on `options.photo_uris`, naming the URI and what to fix;
    whether the bytes are an image is decided by the photo validation that follows."""

    def __init__(
        self,
        storage: Storage,
        policy: EgressPolicy | None = None,
        *,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.storage = storage
        self.policy = policy or EgressPolicy(plain_http=False)
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    def collect(
        self, tenant: str, uris: Sequence[str], collector: UploadCollector, *, reserved_names: Iterable[str] = ()
    ) -> None:
        """Adds every photo to `collector` in the order given, each under a file name of its own (the last path
        segment, made unique against `reserved_names` and the others)."""
        if len(uris) > collector.max_photos:
            raise InvalidArgument(f"more than {collector.max_photos} photos in one request", field=PHOTO_URIS_FIELD)
        urls = [uri for uri in uris if uri.lower().startswith(("https://", "http://"))]
        fetched: dict[str, bytes] = {}
        if urls:
            with concurrent.futures.ThreadPoolExecutor(min(FETCH_CONCURRENCY, len(urls))) as pool:
                futures = {url: pool.submit(self.fetch, url) for url in dict.fromkeys(urls)}
                for url, future in futures.items():
                    fetched[url] = future.result()  # the first failing URL (in request order) is the error
        taken = set(reserved_names)
        for index, uri in enumerate(uris):
            if uri in fetched:
                name, data = _url_file_name(uri, index), fetched[uri]
            elif uri.lower().startswith("s3://"):
                key = s3_storage_key(self.storage, uri)
                name, data = key.rsplit("/", 1)[-1], _read_own_key(self.storage, tenant, key, uri)
            elif "://" in uri:
                raise InvalidArgument(
                    f"{uri!r} has a scheme this server does not read; give a storage key (tenants/...), an s3:// "
                    "object of this deployment's bucket or an https:// URL",
                    field=PHOTO_URIS_FIELD,
                )
            else:
                name, data = uri.rsplit("/", 1)[-1], _read_own_key(self.storage, tenant, uri, uri)
            unique, copy = name, 1
            while unique in taken:
                copy += 1
                stem, dot, suffix = name.rpartition(".")
                unique = f"{stem}-{copy}.{suffix}" if dot and stem else f"{name}-{copy}"
            taken.add(unique)
            collector.add(unique, data)

    def fetch(self, url: str) -> bytes:
        """One photo URL's bytes, within the limits; InvalidArgument naming the URL and what to fix."""
        try:
            response = egress.fetch(
                self.policy, url, max_bytes=self.max_bytes, timeout=self.timeout_seconds, headers=_FETCH_HEADERS
            )
        except EgressRefused as error:
            raise InvalidArgument(f"{url!r} is refused: {error}", field=PHOTO_URIS_FIELD) from None
        except EgressUnresolved as error:
            raise InvalidArgument(f"{url!r}: {error}; check the host name", field=PHOTO_URIS_FIELD) from None
        except EgressTooLarge as error:
            raise InvalidArgument(
                f"{url!r} {error} (--fetch-max-mb); link a smaller photo or upload it", field=PHOTO_URIS_FIELD
            ) from None
        except EgressTimeout as error:
            raise InvalidArgument(
                f"{url!r} timed out ({error}; --fetch-timeout-seconds); link a faster host or upload the photo",
                field=PHOTO_URIS_FIELD,
            ) from None
        except EgressError as error:
            raise InvalidArgument(f"{url!r} could not be fetched: {error}", field=PHOTO_URIS_FIELD) from None
        if not 200 <= response.status < 300:
            raise InvalidArgument(
                f"{url!r} answered HTTP {response.status} {response.reason}".rstrip()
                + "; check that the URL is public and names the photo itself",
                field=PHOTO_URIS_FIELD,
            )
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type and not content_type.startswith("image/") and content_type not in _BINARY_TYPES:
            raise InvalidArgument(
                f"{url!r} is {content_type}, not an image; link the image file itself", field=PHOTO_URIS_FIELD
            )
        if not response.body:
            raise InvalidArgument(f"{url!r} answered with an empty body, not an image", field=PHOTO_URIS_FIELD)
        return response.body


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
