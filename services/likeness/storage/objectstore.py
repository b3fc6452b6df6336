"""`FsspecStorage`: the storage interface over object storage through fsspec (`s3://` via s3fs).

Object storage has no rename and no append, so atomicity is built from what it does have: a single PUT (and a
completed multipart upload) replaces an object atomically, and a conditional PUT (`If-None-Match: *`) creates
one only if absent. Folders are published by uploading every file first and the marker last. s3fs is imported
only when an `s3://` URL is opened, so the local-only install does not need it.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from likeness.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from likeness.storage.base import (
    DEFAULT_MARKER,
    INTERNAL_NAME_PREFIX,
    Storage,
    check_publishable,
    default_cache_dir,
    join_key,
    not_found,
    validate_key,
    validate_prefix,
)

S3_ENDPOINT_ENVS = ("LIKENESS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
# Bucket naming rules of S3 (3-63 characters, lower case, digits, dots and hyphens).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Fail fast on a dead endpoint instead of botocore's minutes of retries; three attempts ride out blips.
_S3_CLIENT_CONFIG = {
    "connect_timeout": 5,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
}


def s3_endpoint_from_env() -> str | None:
    """The S3-compatible endpoint to use: `$LIKENESS_S3_ENDPOINT_URL`, else `$AWS_ENDPOINT_URL`, else AWS."""
    for name in S3_ENDPOINT_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class FsspecStorage(Storage):
    """Storage on an fsspec filesystem below `root` ("bucket/prefix"); see `from_s3_url` for S3.

    `transient_errors` are the filesystem's exception types (besides OSError) that mean the store is
    unreachable; they become Unavailable.
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        *,
        protocol: str,
        cache_dir: Path | None = None,
        transient_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.fs = fs
        self.root = root.strip("/")
        self.protocol = protocol
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._transient_errors: tuple[type[BaseException], ...] = (OSError, *transient_errors)

    @classmethod
    def from_s3_url(
        cls, url: str, *, cache_dir: Path | None = None, endpoint_url: str | None = None, check: bool = True
    ) -> FsspecStorage:
        """Open `s3://bucket[/prefix]`. Credentials come from the usual AWS environment (AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, instance roles); the endpoint from
        `endpoint_url` or `s3_endpoint_from_env()`. With `check`, the bucket is probed now so a missing bucket
        or bad credentials fail at start-up as Unavailable rather than on the first request."""
        parsed = urlparse(url)
        bucket = parsed.netloc
        if not _BUCKET_NAME.match(bucket):
            raise InvalidArgument(f"{url!r} does not name a valid S3 bucket (s3://bucket/prefix)", field="storage_url")
        prefix = parsed.path.strip("/")
        if prefix:
            validate_key(prefix, field="storage_url")
        try:
            import botocore.exceptions
            import s3fs
        except ImportError as exc:
            raise FailedPrecondition(
                f"s3:// storage needs s3fs, which is not installed ({exc}); install likeness[s3]"
            ) from exc
        fs = s3fs.S3FileSystem(
            endpoint_url=endpoint_url or s3_endpoint_from_env(),
            # Listings must always be fresh: other pods write the same prefixes.
            use_listings_cache=False,
            skip_instance_cache=True,
            config_kwargs=_S3_CLIENT_CONFIG,
        )
        storage = cls(
            fs,
            f"{bucket}/{prefix}" if prefix else bucket,
            protocol="s3",
            cache_dir=cache_dir,
            transient_errors=(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError),
        )
        if check:
            storage.check_bucket()
        return storage

    def check_bucket(self) -> None:
        """Probe the bucket; Unavailable with the reason when it is missing, forbidden or unreachable."""
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False)
        except FileNotFoundError as exc:
            raise Unavailable(
                f"bucket {bucket!r} does not exist at {self._endpoint_text()}; create it or fix LIKENESS_STORAGE_URL"
            ) from exc
        except PermissionError as exc:
            raise Unavailable(
                f"access to bucket {bucket!r} denied at {self._endpoint_text()}; check the AWS credentials ({exc})"
            ) from exc
        except (*self._transient_errors, ValueError) as exc:  # type: ignore[misc]  # mypy cannot read a starred tuple here
            raise Unavailable(f"cannot reach bucket {bucket!r} at {self._endpoint_text()}: {exc}") from exc

    @property
    def root_url(self) -> str:
        return f"{self.protocol}://{self.root}"

    # ---- helpers -----------------------------------------------------------------------------------------

    def _endpoint_text(self) -> str:
        return getattr(self.fs, "endpoint_url", None) or "the default AWS endpoint"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _key(self, path: str) -> str:
        return path[len(self.root) + 1 :]

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        """Turn filesystem errors into domain errors that name the key."""
        try:
            yield
        except FileNotFoundError as exc:
            raise not_found(key) from exc
        except FileExistsError as exc:
            raise AlreadyExists(f"{key!r} already exists; it is written once and never replaced") from exc
        except PermissionError as exc:
            raise Unavailable(f"cannot {action} {key!r} in {self.root_url}: access denied ({exc})") from exc
        except self._transient_errors as exc:
            raise Unavailable(f"cannot {action} {key!r} in {self.root_url}: {exc}") from exc

    # ---- primitives --------------------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        validate_key(key)
        with self._errors(key, "read"):
            return bytes(self.fs.cat_file(self._path(key)))

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = [validate_key(key) for key in keys]
        if not keys:
            return {}
        with self._errors(keys[0], "read"):
            results = self.fs.cat([self._path(key) for key in keys], on_error="return")
        contents: dict[str, bytes] = {}
        for key in keys:
            value = results.get(self._path(key))
            if isinstance(value, BaseException) or value is None:
                with self._errors(key, "read"):
                    raise value if isinstance(value, BaseException) else FileNotFoundError(key)
            contents[key] = bytes(value)
        return contents

    def write_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        with self._errors(key, "write"):
            self.fs.pipe_file(self._path(key), bytes(data))

    def create_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        self._create(key, lambda: self.fs.pipe_file(self._path(key), bytes(data), mode="create"))

    def _create(self, key: str, conditional_put: Callable[[], object]) -> None:
        """Run a conditional (`If-None-Match: *`) PUT of `key`; AlreadyExists when the key was there."""
        with self._errors(key, "create"):
            try:
                conditional_put()
            except FileExistsError:
                raise
            except OSError:
                # Some S3-compatible stores answer 412 without naming the failed condition, which s3fs then
                # reports as a generic error; the key existing afterwards is what tells them apart.
                if self.fs.exists(self._path(key)):
                    raise FileExistsError(key) from None
                raise

    def exists(self, key: str) -> bool:
        validate_key(key)
        with self._errors(key, "check"):
            try:
                return bool(self.fs.info(self._path(key))["type"] == "file")
            except FileNotFoundError:
                return False

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        folder = self._path(prefix)
        with self._errors(prefix, "list"):
            try:
                paths = self.fs.find(folder)
            except FileNotFoundError:
                return []
        # Skip folder placeholder objects ("a/b/") that consoles create, and backend-internal names.
        keys = (self._key(path) for path in paths if path.startswith(folder + "/") and not path.endswith("/"))
        return sorted(key for key in keys if not any(s.startswith(INTERNAL_NAME_PREFIX) for s in key.split("/")))

    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        prefix = validate_prefix(prefix)
        folder = self._path(prefix)
        with self._errors(prefix, "list"):
            try:
                entries = self.fs.ls(folder, detail=True)
            except FileNotFoundError:
                return []
        names = {
            entry["name"].rstrip("/").rsplit("/", 1)[-1]
            for entry in entries
            if entry["type"] == "directory" and entry["name"].rstrip("/") != folder
        }
        return sorted(name for name in names if not name.startswith(INTERNAL_NAME_PREFIX))

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        if not self.exists(key):
            if missing_ok:
                return
            raise not_found(key)
        with self._errors(key, "delete"):
            self.fs.rm_file(self._path(key))

    def delete_prefix(self, prefix: str, *, marker: str = DEFAULT_MARKER) -> int:
        prefix = validate_prefix(prefix, allow_root=False)
        marker_key = join_key(prefix, validate_key(marker, field="marker"))
        keys = self.list(prefix)
        if not keys:
            return 0
        with self._errors(prefix, "delete"):
            if marker_key in keys:
                # Unpublish first, so a reader never materialises a folder that is being emptied.
                self.fs.rm_file(self._path(marker_key))
            rest = [self._path(key) for key in keys if key != marker_key]
            if rest:
                self.fs.rm(rest)
        return len(keys)

    def url(self, key: str) -> str:
        return f"{self.protocol}://{self._path(validate_key(key))}"

    def publish_dir(self, local_dir: Path, prefix: str, *, marker: str = DEFAULT_MARKER) -> None:
        prefix = validate_prefix(prefix, allow_root=False)
        files = check_publishable(Path(local_dir), marker)
        if self.is_published(prefix, marker):
            raise AlreadyExists(f"{prefix!r} is already published; publish to a new id instead of replacing it")
        # Files without a marker are the remains of a publish that died midway: nobody reads them (the folder
        # is unpublished), so clear them to make the folder exactly `local_dir`.
        self.delete_prefix(prefix, marker=marker)
        marker_key = join_key(prefix, marker)
        data_files = [(str(path), self._path(join_key(prefix, rel))) for path, rel in files if rel != marker]
        marker_path = next(str(path) for path, rel in files if rel == marker)
        with self._errors(prefix, "publish"):
            self._upload(data_files)
        # Conditional PUT: if another writer published meanwhile, exactly one of us wins.
        self._create(marker_key, lambda: self.fs.put_file(marker_path, self._path(marker_key), mode="create"))

    def _upload(self, pairs: builtins.list[tuple[str, str]]) -> None:
        """Upload (local path, remote path) pairs concurrently; returns only when every upload completed."""
        if pairs:
            self.fs.put([local for local, _ in pairs], [remote for _, remote in pairs])

    def download_dir(self, prefix: str, local_dir: Path) -> Path:
        prefix = validate_prefix(prefix, allow_root=False)
        keys = self.list(prefix)
        if not keys:
            raise NotFound(f"folder {prefix!r} is empty or does not exist in storage")
        local_dir = Path(local_dir)
        local_paths = [str(local_dir.joinpath(*key[len(prefix) + 1 :].split("/"))) for key in keys]
        with self._errors(prefix, "download"):
            self.fs.get([self._path(key) for key in keys], local_paths)
        return local_dir

    def materialize(self, prefix: str, *, marker: str = DEFAULT_MARKER) -> Path:
        prefix = validate_prefix(prefix, allow_root=False)
        marker_key = join_key(prefix, validate_key(marker, field="marker"))
        try:
            remote_marker = self.read_bytes(marker_key)
        except NotFound:
            raise NotFound(f"folder {prefix!r} is not published (no {marker!r} in it)") from None
        cached = self.cache_path(prefix)
        if self._cache_matches(cached, marker, remote_marker):
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = self.cache_dir / f"{INTERNAL_NAME_PREFIX}staging-{cached.name}-{uuid.uuid4().hex}"
        trash = self.cache_dir / f"{INTERNAL_NAME_PREFIX}trash-{cached.name}-{uuid.uuid4().hex}"
        try:
            self.download_dir(prefix, staging)
            # The cache records the marker read *before* the download: were the folder deleted and republished
            # meanwhile, the next call sees a different remote marker and downloads again.
            (staging / marker).write_bytes(remote_marker)
            if cached.exists():
                os.rename(cached, trash)
            try:
                os.rename(staging, cached)
            except OSError:
                # Another process materialised the same folder first; use theirs if it is current.
                if not self._cache_matches(cached, marker, remote_marker):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(trash, ignore_errors=True)
        return cached

    def forget_local(self, prefix: str) -> None:
        """Delete the cached download of `prefix`, if any."""
        shutil.rmtree(self.cache_path(prefix), ignore_errors=True)

    def cache_path(self, prefix: str) -> Path:
        """Where `materialize` keeps `prefix`: readable last segment plus a hash of the full location."""
        prefix = validate_prefix(prefix, allow_root=False)
        digest = hashlib.sha256(f"{self.root_url}/{prefix}".encode()).hexdigest()[:20]
        return self.cache_dir / f"{prefix.rsplit('/', 1)[-1]}-{digest}"

    @staticmethod
    def _cache_matches(cached: Path, marker: str, remote_marker: bytes) -> bool:
        try:
            return (cached / marker).read_bytes() == remote_marker
        except OSError:
            return False
