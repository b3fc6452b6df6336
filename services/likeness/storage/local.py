"""`LocalStorage`: the storage interface over a local directory (the embedded default, or a shared volume).

Atomicity comes from POSIX rename: files are written to a hidden temporary file in the target's folder,
fsynced and `os.replace`d over the target; folders are copied into a hidden staging folder beside the target
and `os.rename`d into place. Hidden names start with `.likeness-`, which listings skip and keys may not use.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from likeness.errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from likeness.storage.base import (
    DEFAULT_MARKER,
    INTERNAL_NAME_PREFIX,
    Storage,
    check_publishable,
    join_key,
    not_found,
    validate_key,
    validate_prefix,
)

_TEMP_PREFIX = INTERNAL_NAME_PREFIX + "tmp-"
_STAGING_PREFIX = INTERNAL_NAME_PREFIX + "staging-"
_TRASH_PREFIX = INTERNAL_NAME_PREFIX + "trash-"
# Filesystems without hard links answer os.link with one of these.
_NO_HARDLINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def _fsync_dir(path: Path) -> None:
    """Persist a rename: the directory entry lives in the parent folder's metadata."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        # Some filesystems (and Windows) refuse fsync on directories; the rename itself is still atomic.
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Storage):
    """Storage in a local directory. Readers in other processes see writes as soon as the call returns."""

    def __init__(self, root: Path) -> None:
        root = Path(root).expanduser().absolute()
        if root.exists() and not root.is_dir():
            raise Unavailable(f"storage root {str(root)!r} exists but is not a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create storage root {str(root)!r}: {exc.strerror or exc}") from exc
        if not root.is_dir():
            raise Unavailable(f"storage root {str(root)!r} exists but is not a directory")
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise Unavailable(
                f"storage root {str(root)!r}: permission denied (the service needs read, write and execute "
                f"access; fix its owner or mode, or point LIKENESS_STORAGE_URL elsewhere)"
            )
        self.root = root

    @property
    def root_url(self) -> str:
        return self.root.as_uri()

    # ---- helpers -----------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/")) if key else self.root

    @contextlib.contextmanager
    def _os_errors(self, key: str, action: str) -> Iterator[None]:
        """Turn OS errors into domain errors that say which key and what to do."""
        try:
            yield
        except FileNotFoundError as exc:
            raise not_found(key) from exc
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise FailedPrecondition(
                f"cannot {action} {key!r}: a file and a folder collide on that path ({exc.strerror})"
            ) from exc
        except PermissionError as exc:
            raise Unavailable(f"cannot {action} {key!r} under {str(self.root)!r}: permission denied") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted(f"cannot {action} {key!r}: storage volume is full ({exc.strerror})") from exc
            if exc.errno == errno.EROFS:
                raise Unavailable(f"cannot {action} {key!r}: {str(self.root)!r} is on a read-only filesystem") from exc
            raise Unavailable(f"cannot {action} {key!r} under {str(self.root)!r}: {exc}") from exc

    def _write_temp(self, target: Path, data: bytes) -> Path:
        """Write `data` to a fsynced hidden temp file in `target`'s folder (same filesystem: rename works)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        return Path(temp_name)

    def _prune_empty_parents(self, path: Path) -> None:
        """Remove folders left empty by a delete, as object storage has no empty folders either."""
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    # ---- primitives --------------------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        validate_key(key)
        with self._os_errors(key, "read"):
            return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        target = self._path(key)
        with self._os_errors(key, "write"):
            temp = self._write_temp(target, bytes(data))
            try:
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            _fsync_dir(target.parent)

    def create_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        target = self._path(key)
        with self._os_errors(key, "create"):
            temp = self._write_temp(target, bytes(data))
            try:
                # link() publishes the complete temp file under the final name and fails if the name exists:
                # exclusive and atomic at once.
                os.link(temp, target)
            except FileExistsError:
                raise AlreadyExists(f"{key!r} already exists; it is written once and never replaced") from None
            except OSError as exc:
                if exc.errno not in _NO_HARDLINK_ERRNOS:
                    raise
                # No hard links on this filesystem: check then rename. Still atomic for readers, but two
                # writers racing on the same key within microseconds could both succeed.
                if target.exists():
                    raise AlreadyExists(f"{key!r} already exists; it is written once and never replaced") from None
                os.replace(temp, target)
            finally:
                with contextlib.suppress(OSError):
                    temp.unlink()
            _fsync_dir(target.parent)

    def exists(self, key: str) -> bool:
        validate_key(key)
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_prefix(prefix)
        base = self._path(prefix)
        if not base.is_dir():
            return []
        keys: builtins.list[str] = []
        with self._os_errors(prefix, "list"):
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = [name for name in dirnames if not name.startswith(INTERNAL_NAME_PREFIX)]
                relative_dir = Path(dirpath).relative_to(self.root).as_posix()
                relative_dir = "" if relative_dir == "." else relative_dir
                keys.extend(
                    join_key(relative_dir, name) for name in filenames if not name.startswith(INTERNAL_NAME_PREFIX)
                )
        return sorted(keys)

    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        prefix = validate_prefix(prefix)
        base = self._path(prefix)
        if not base.is_dir():
            return []
        with self._os_errors(prefix, "list"):
            return sorted(
                entry.name
                for entry in os.scandir(base)
                if entry.is_dir() and not entry.name.startswith(INTERNAL_NAME_PREFIX)
            )

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        validate_key(key)
        path = self._path(key)
        if not path.is_file():
            if missing_ok:
                return
            raise not_found(key)
        with self._os_errors(key, "delete"):
            try:
                path.unlink()
            except FileNotFoundError:
                if not missing_ok:
                    raise
            self._prune_empty_parents(path)

    def delete_prefix(self, prefix: str, *, marker: str = DEFAULT_MARKER) -> int:
        prefix = validate_prefix(prefix, allow_root=False)
        validate_key(marker, field="marker")
        base = self._path(prefix)
        if not base.is_dir():
            return 0
        count = len(self.list(prefix))
        with self._os_errors(prefix, "delete"):
            # Renaming the folder away first makes it vanish at once, marker and all; the slow rmtree then
            # works on a hidden name that no reader looks at.
            trash = base.parent / f"{_TRASH_PREFIX}{base.name}-{uuid.uuid4().hex}"
            os.rename(base, trash)
            shutil.rmtree(trash, ignore_errors=True)
            self._prune_empty_parents(base)
        return count

    def url(self, key: str) -> str:
        return self._path(validate_key(key)).as_uri()

    def publish_dir(self, local_dir: Path, prefix: str, *, marker: str = DEFAULT_MARKER) -> None:
        prefix = validate_prefix(prefix, allow_root=False)
        files = check_publishable(Path(local_dir), marker)
        target = self._path(prefix)
        if target.exists():
            raise AlreadyExists(f"{prefix!r} is already published; publish to a new id instead of replacing it")
        with self._os_errors(prefix, "publish"):
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.parent / f"{_STAGING_PREFIX}{target.name}-{uuid.uuid4().hex}"
            try:
                for source, relative in files:
                    destination = staging.joinpath(*relative.split("/"))
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, destination)
                    with open(destination, "rb+") as handle:
                        os.fsync(handle.fileno())
                for folder in sorted({p.parent for p in staging.rglob("*")}, reverse=True):
                    _fsync_dir(folder)
                try:
                    os.rename(staging, target)
                except OSError as exc:
                    # Someone published the same prefix between our check and the rename.
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise AlreadyExists(f"{prefix!r} was published concurrently by another writer") from exc
                    raise
                _fsync_dir(target.parent)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)

    def download_dir(self, prefix: str, local_dir: Path) -> Path:
        prefix = validate_prefix(prefix, allow_root=False)
        keys = self.list(prefix)
        if not keys:
            raise NotFound(f"folder {prefix!r} is empty or does not exist in storage")
        local_dir = Path(local_dir)
        with self._os_errors(prefix, "download"):
            for key in keys:
                destination = local_dir.joinpath(*key[len(prefix) + 1 :].split("/"))
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._path(key), destination)
        return local_dir

    def materialize(self, prefix: str, *, marker: str = DEFAULT_MARKER) -> Path:
        prefix = validate_prefix(prefix, allow_root=False)
        if not self.is_published(prefix, marker):
            raise NotFound(f"folder {prefix!r} is not published (no {marker!r} in it)")
        return self._path(prefix)

    # ---- maintenance -------------------------------------------------------------------------------------

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary files, staging and trash folders that a crashed writer left behind.

        Only entries older than `older_than_s` go, so writes in progress are left alone. Returns how many.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in list(dirnames) + filenames:
                if not name.startswith(INTERNAL_NAME_PREFIX):
                    continue
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    if path.lstat().st_mtime >= cutoff:
                        continue
                    if path.is_dir():
                        shutil.rmtree(path)
                        dirnames.remove(name)
                    else:
                        path.unlink()
                    removed += 1
        return removed
