"""The storage interface every service uses, and `open_storage` to pick a backend from a URL.

Keys are POSIX-style relative paths ("tenants/default/jobs/job-.../job.json"). Two backends implement it:
`LocalStorage` (a directory; the embedded default) and `FsspecStorage` (object storage, `s3://`). The contract
both keep, documented in docs/storage.md:

* `write_bytes` is atomic: a reader sees the old content or the new, never a partial file.
* `create_bytes` writes only when the key is absent (AlreadyExists otherwise); event logs build on it.
* `publish_dir` makes a folder appear complete or not at all. Readers treat a folder as published only when
  its marker file (default `manifest.json`) exists (`is_published`); locally the folder is renamed into place,
  on object storage the marker is uploaded last.
"""

from __future__ import annotations

import abc
import builtins
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from likeness.errors import FailedPrecondition, InvalidArgument, NotFound

DEFAULT_MARKER = "manifest.json"
STORAGE_URL_ENV = "LIKENESS_STORAGE_URL"
CACHE_DIR_ENV = "LIKENESS_CACHE_DIR"

# Names the backends use for their own temporary files and folders; never valid in a caller's key, and skipped
# by listings, so a crashed write's leftovers stay invisible.
INTERNAL_NAME_PREFIX = ".likeness-"

EVENT_SEQ_DIGITS = 12
MAX_EVENT_SEQ = 10**EVENT_SEQ_DIGITS - 1
_EVENT_NAME = re.compile(rf"^(\d{{{EVENT_SEQ_DIGITS}}})\.json$")
_FORBIDDEN_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: str, *, field: str = "key") -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidArgument naming what is wrong.

    Rejected: empty keys, absolute paths, empty segments ("a//b", trailing "/"), "." and ".." segments,
    backslashes and control characters, and segments reserved for the backends' temporary files.
    """
    if not isinstance(key, str) or not key:
        raise InvalidArgument("must be a non-empty relative path such as 'tenants/default/x.json'", field=field)
    if key.startswith("/"):
        raise InvalidArgument(f"{key!r} is absolute; keys are relative to the storage root", field=field)
    if _FORBIDDEN_KEY_CHARS.search(key):
        raise InvalidArgument(f"{key!r} contains a backslash or control character", field=field)
    for segment in key.split("/"):
        if segment == "":
            raise InvalidArgument(f"{key!r} has an empty path segment ('//' or a trailing '/')", field=field)
        if segment in (".", ".."):
            raise InvalidArgument(
                f"{key!r} contains a '{segment}' segment; keys may not leave their folder", field=field
            )
        if segment.startswith(INTERNAL_NAME_PREFIX):
            raise InvalidArgument(
                f"{key!r}: segments starting with {INTERNAL_NAME_PREFIX!r} are reserved for storage internals",
                field=field,
            )
    return key


def validate_prefix(prefix: str, *, field: str = "prefix", allow_root: bool = True) -> str:
    """Normalise a folder prefix: one trailing "/" is dropped; "" means the storage root when `allow_root`."""
    if not isinstance(prefix, str):
        raise InvalidArgument("must be a string", field=field)
    normalised = prefix[:-1] if prefix.endswith("/") else prefix
    if normalised == "":
        if allow_root:
            return ""
        raise InvalidArgument("must name a folder below the storage root, not the root itself", field=field)
    return validate_key(normalised, field=field)


def join_key(prefix: str, name: str) -> str:
    """Join a (possibly root) prefix and a relative name into one key."""
    return f"{prefix}/{name}" if prefix else name


def event_key(log_prefix: str, seq: int) -> str:
    """The key of event `seq` in a log: zero-padded so that listing order equals sequence order."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_EVENT_SEQ:
        raise InvalidArgument(f"must be an integer in [0, {MAX_EVENT_SEQ}], got {seq!r}", field="seq")
    return join_key(
        validate_prefix(log_prefix, field="log_prefix", allow_root=False), f"{seq:0{EVENT_SEQ_DIGITS}d}.json"
    )


def encode_json(obj: Any, *, field: str = "obj") -> bytes:
    """Serialise `obj` the one way Likeness stores JSON: UTF-8, sorted keys, indented, trailing newline."""
    try:
        return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"is not JSON-serialisable: {exc}", field=field) from exc


def decode_json(data: bytes, *, key: str) -> Any:
    """Parse stored JSON; a corrupt object is FailedPrecondition naming its key (retrying cannot fix it)."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FailedPrecondition(f"stored object {key!r} is not valid JSON ({exc}); delete or rewrite it") from exc


def local_files(local_dir: Path) -> list[tuple[Path, str]]:
    """Every regular file below `local_dir` (symlinks followed) as (path, relative key), sorted by key."""
    files: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(local_dir, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                relative = path.relative_to(local_dir).as_posix()
                files.append((path, validate_key(relative, field="local_dir")))
    files.sort(key=lambda item: item[1])
    return files


def check_publishable(local_dir: Path, marker: str) -> list[tuple[Path, str]]:
    """The files of a folder about to be published; InvalidArgument unless it is a folder holding `marker`."""
    validate_key(marker, field="marker")
    if not local_dir.is_dir():
        raise InvalidArgument(f"{str(local_dir)!r} is not a directory", field="local_dir")
    files = local_files(local_dir)
    if marker not in {relative for _, relative in files}:
        raise InvalidArgument(
            f"{str(local_dir)!r} has no {marker!r}; write the marker file before publishing the folder",
            field="local_dir",
        )
    return files


def default_cache_dir() -> Path:
    """Where object storage keeps materialised folders: `$LIKENESS_CACHE_DIR/storage`, else
    `$XDG_CACHE_HOME/likeness/storage`, else `~/.cache/likeness/storage`."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit) / "storage"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "likeness" / "storage"


class Storage(abc.ABC):
    """One interface over a local directory and object storage. All keys are relative to the storage root."""

    # ---- primitives each backend implements -------------------------------------------------------------

    @property
    @abc.abstractmethod
    def root_url(self) -> str:
        """The URL this storage was opened with, normalised (`file:///...` or `s3://bucket/prefix`)."""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object; NotFound naming the key when it does not exist."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace an object atomically: readers see the old content or the new, never a mix."""

    @abc.abstractmethod
    def create_bytes(self, key: str, data: bytes) -> None:
        """Like `write_bytes`, but only if the key does not exist yet; AlreadyExists otherwise."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object (a file, not a folder) exists at `key`."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key below folder `prefix`, recursively, sorted, relative to the storage root."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        """Names (not keys) of the immediate child folders of `prefix`, sorted."""

    @abc.abstractmethod
    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        """Delete one object; NotFound when it does not exist unless `missing_ok`."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str, *, marker: str = DEFAULT_MARKER) -> int:
        """Delete every key below `prefix` and return how many were deleted.

        A folder's top-level `marker` goes first, so readers stop treating it as published before its files
        disappear.
        """

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """A URL naming the object, for logs and for tools outside Likeness."""

    @abc.abstractmethod
    def publish_dir(self, local_dir: Path, prefix: str, *, marker: str = DEFAULT_MARKER) -> None:
        """Upload every file of `local_dir` under `prefix` so that the folder appears complete or not at all.

        `local_dir` must contain `marker`. AlreadyExists when `prefix` is already there (locally) or already
        published (object storage). Give every publication a fresh prefix (new ids): one publisher per prefix.
        """

    @abc.abstractmethod
    def download_dir(self, prefix: str, local_dir: Path) -> Path:
        """Copy every key below `prefix` into `local_dir` (created if needed) and return it.

        NotFound when there is no key below `prefix`.
        """

    @abc.abstractmethod
    def materialize(self, prefix: str, *, marker: str = DEFAULT_MARKER) -> Path:
        """A local folder holding the published folder `prefix`, for code that needs real paths.

        Local storage returns the folder itself (no copy). Object storage downloads into a local cache and
        reuses it while the remote marker is byte-for-byte unchanged. NotFound if the folder is not published.
        """

    def forget_local(self, prefix: str) -> None:  # noqa: B027 - a no-op by design where nothing is copied
        """Remove any local copy `materialize` made of `prefix` (after the folder was deleted). Local storage
        makes none."""

    # ---- behaviour built on the primitives ---------------------------------------------------------------

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Read several objects; backends with per-request latency override this to read them concurrently."""
        return {key: self.read_bytes(key) for key in keys}

    def read_json(self, key: str) -> Any:
        """Read and parse a JSON object; FailedPrecondition naming the key when it is corrupt."""
        return decode_json(self.read_bytes(key), key=key)

    def write_json(self, key: str, obj: Any) -> None:
        """Serialise `obj` and write it atomically."""
        self.write_bytes(key, encode_json(obj))

    def create_json(self, key: str, obj: Any) -> None:
        """Serialise `obj` and write it only if `key` is absent (AlreadyExists otherwise)."""
        self.create_bytes(key, encode_json(obj))

    def is_published(self, prefix: str, marker: str = DEFAULT_MARKER) -> bool:
        """Whether the folder `prefix` is complete: its marker, written last, exists."""
        return self.exists(join_key(validate_prefix(prefix, allow_root=False), validate_key(marker, field="marker")))

    def append_event(self, log_prefix: str, seq: int, event: Mapping[str, Any]) -> None:
        """Append event number `seq` to the log at `log_prefix`: one object per event, so the log works on
        object storage (which cannot append) and a crash loses at most the event being written.

        AlreadyExists when `seq` was written before, which is how a second, concurrent writer becomes visible.
        """
        if not isinstance(event, Mapping):
            raise InvalidArgument(f"must be a JSON object (a mapping), got {type(event).__name__}", field="event")
        self.create_bytes(event_key(log_prefix, seq), encode_json(dict(event), field="event"))

    def read_events(self, log_prefix: str, after_seq: int = -1) -> builtins.list[tuple[int, dict[str, Any]]]:
        """Events of the log with a sequence number greater than `after_seq`, in sequence order.

        Replaying from the last seen seq is how a reader follows a log. Other objects in the folder are
        ignored.
        """
        prefix = validate_prefix(log_prefix, field="log_prefix", allow_root=False)
        wanted: builtins.list[tuple[int, str]] = []
        for key in self.list(prefix):
            match = _EVENT_NAME.match(key[len(prefix) + 1 :])
            if match and int(match.group(1)) > after_seq:
                wanted.append((int(match.group(1)), key))
        contents = self.read_many(key for _, key in wanted)
        events: builtins.list[tuple[int, dict[str, Any]]] = []
        for seq, key in wanted:
            event = decode_json(contents[key], key=key)
            if not isinstance(event, dict):
                raise FailedPrecondition(f"stored event {key!r} is not a JSON object; delete or rewrite it")
            events.append((seq, event))
        return events

    def next_event_seq(self, log_prefix: str) -> int:
        """The sequence number the next appended event should use (0 for an empty log)."""
        prefix = validate_prefix(log_prefix, field="log_prefix", allow_root=False)
        seqs = [int(m.group(1)) for key in self.list(prefix) if (m := _EVENT_NAME.match(key[len(prefix) + 1 :]))]
        return max(seqs) + 1 if seqs else 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_url!r})"


def not_found(key: str, what: str = "object") -> NotFound:
    """The NotFound every backend raises for a missing key, so messages read the same everywhere."""
    return NotFound(f"{what} {key!r} does not exist in storage")
