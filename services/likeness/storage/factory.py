"""Opening the storage a URL names: the one place that knows every backend (the interface, likeness.storage.base,
knows none of them)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from likeness.errors import InvalidArgument
from likeness.storage.base import STORAGE_URL_ENV, Storage


def open_storage(url: str, *, cache_dir: Path | None = None) -> Storage:
    """Open the storage a URL names.

    * a plain path or `file:///path` -> `LocalStorage` (the folder is created if missing);
    * `s3://bucket[/prefix]` -> `FsspecStorage` over s3fs, using `$LIKENESS_S3_ENDPOINT_URL` or
      `$AWS_ENDPOINT_URL` for S3-compatible stores and the usual AWS credential environment;
    * any other scheme -> InvalidArgument.

    Storage that cannot be read or written (permission denied, bucket missing, endpoint down) is Unavailable.
    `cache_dir` is where object storage materialises folders (default: `default_cache_dir()`).
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgument(
            "is empty; give a directory path, file:///path or s3://bucket/prefix", field="storage_url"
        )
    url = url.strip()
    if "://" not in url:
        from likeness.storage.local import LocalStorage

        return LocalStorage(Path(url).expanduser())
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"{url!r} names host {parsed.netloc!r}; file URLs must be file:///absolute/path",
                field="storage_url",
            )
        from likeness.storage.local import LocalStorage

        return LocalStorage(Path(unquote(parsed.path)))
    if scheme == "s3":
        from likeness.storage.objectstore import FsspecStorage

        return FsspecStorage.from_s3_url(url, cache_dir=cache_dir)
    raise InvalidArgument(
        f"unsupported scheme {parsed.scheme!r} in {url!r}; use a directory path, file:///path or s3://bucket/prefix",
        field="storage_url",
    )


def open_storage_from_env(default_url: str, *, cache_dir: Path | None = None) -> Storage:
    """Open `$LIKENESS_STORAGE_URL`, or `default_url` when it is unset or empty."""
    return open_storage(os.environ.get(STORAGE_URL_ENV) or default_url, cache_dir=cache_dir)
