"""Shared storage: one interface over a local directory and object storage (s3:// through fsspec).

See docs/storage.md for the layout, the atomicity contract of each backend and configuration.
"""

from likeness.storage.base import (
    DEFAULT_MARKER,
    STORAGE_URL_ENV,
    Storage,
    validate_key,
    validate_prefix,
)
from likeness.storage.factory import open_storage, open_storage_from_env
from likeness.storage.layout import DEFAULT_TENANT, new_id, validate_tenant
from likeness.storage.local import LocalStorage
from likeness.storage.manifest import DatasetManifest, SubjectModelManifest, utc_now_rfc3339

__all__ = [
    "DEFAULT_MARKER",
    "DEFAULT_TENANT",
    "STORAGE_URL_ENV",
    "DatasetManifest",
    "LocalStorage",
    "Storage",
    "SubjectModelManifest",
    "new_id",
    "open_storage",
    "open_storage_from_env",
    "utc_now_rfc3339",
    "validate_key",
    "validate_prefix",
    "validate_tenant",
]
