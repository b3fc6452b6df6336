"""Object-storage specifics against a real S3 API (moto_server): bucket checks, marker-last publishing,
crash recovery, and the materialize cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from likeness.errors import InvalidArgument, NotFound, Unavailable
from likeness.storage import open_storage
from likeness.storage.objectstore import FsspecStorage

BUCKET = "likeness-test"  # created by the s3_endpoint fixture


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


def test_missing_bucket_is_unavailable(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.delenv("LIKENESS_S3_ENDPOINT_URL", raising=False)
    with pytest.raises(Unavailable, match="bucket 'no-such-bucket' does not exist"):
        open_storage("s3://no-such-bucket/prefix")


def test_unreachable_endpoint_is_unavailable(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A port nothing listens on: connection refused, reported as Unavailable rather than a botocore traceback.
    monkeypatch.setenv("LIKENESS_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(Unavailable, match="likeness-test"):
        open_storage(f"s3://{BUCKET}/x")


def test_invalid_bucket_name_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        open_storage("s3://UPPER_case/x")
    with pytest.raises(InvalidArgument):
        open_storage(f"s3://{BUCKET}/a/../b")


def test_root_url_and_url(s3_storage: FsspecStorage) -> None:
    assert s3_storage.root_url.startswith(f"s3://{BUCKET}/run-")
    assert s3_storage.url("a/b.json") == f"{s3_storage.root_url}/a/b.json"


def test_crashed_publish_stays_unpublished_and_retry_cleans_up(
    s3_storage: FsspecStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_folder(tmp_path / "first", {"manifest.json": b"{}", "a.bin": b"a", "stale.bin": b"s"})
    real_upload = s3_storage._upload

    def upload_then_crash(pairs: list[tuple[str, str]]) -> None:
        real_upload(pairs)
        raise RuntimeError("pod killed after uploading the data files")

    monkeypatch.setattr(s3_storage, "_upload", upload_then_crash)
    with pytest.raises(RuntimeError):
        s3_storage.publish_dir(first, "models/m")
    assert s3_storage.list("models/m") == ["models/m/a.bin", "models/m/stale.bin"], "data went up, marker did not"
    assert not s3_storage.is_published("models/m")
    with pytest.raises(NotFound):
        s3_storage.materialize("models/m")

    monkeypatch.setattr(s3_storage, "_upload", real_upload)
    second = make_folder(tmp_path / "second", {"manifest.json": b"{}", "a.bin": b"a2"})
    s3_storage.publish_dir(second, "models/m")
    assert s3_storage.list("models/m") == ["models/m/a.bin", "models/m/manifest.json"], "leftovers were removed"
    assert s3_storage.read_bytes("models/m/a.bin") == b"a2"


def test_delete_prefix_unpublishes_first(s3_storage: FsspecStorage, tmp_path: Path) -> None:
    s3_storage.publish_dir(make_folder(tmp_path / "m", {"manifest.json": b"{}", "w.bin": b"w"}), "models/m")
    assert s3_storage.delete_prefix("models/m") == 2
    assert not s3_storage.is_published("models/m") and s3_storage.list("models") == []


def test_materialize_reuses_the_cache_while_the_marker_is_unchanged(s3_storage: FsspecStorage, tmp_path: Path) -> None:
    prefix = "tenants/default/models/m1"
    s3_storage.publish_dir(make_folder(tmp_path / "m1", {"manifest.json": b'{"v": 1}', "unet/w.bin": b"old"}), prefix)
    first = s3_storage.materialize(prefix)
    assert first == s3_storage.cache_path(prefix) and first.is_relative_to(tmp_path / "cache")
    assert (first / "unet" / "w.bin").read_bytes() == b"old"

    # Change a data file behind the marker's back: the cached copy is reused, proving no second download.
    s3_storage.write_bytes(f"{prefix}/unet/w.bin", b"new")
    assert s3_storage.materialize(prefix) == first
    assert (first / "unet" / "w.bin").read_bytes() == b"old"

    # A new marker means a new version: the cache is refreshed in place.
    s3_storage.write_bytes(f"{prefix}/manifest.json", b'{"v": 2}')
    second = s3_storage.materialize(prefix)
    assert second == first
    assert (second / "unet" / "w.bin").read_bytes() == b"new"
    assert (second / "manifest.json").read_bytes() == b'{"v": 2}'
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".likeness-")]
    assert leftovers == [], "staging and trash folders are cleaned up"


def test_cache_paths_differ_per_prefix_and_storage(s3_storage: FsspecStorage, s3_endpoint: str) -> None:
    other = FsspecStorage.from_s3_url(f"s3://{BUCKET}/elsewhere", endpoint_url=s3_endpoint, cache_dir=Path("/c"))
    assert s3_storage.cache_path("models/a").name != s3_storage.cache_path("models/b").name
    assert s3_storage.cache_path("models/a").name != other.cache_path("models/a").name
    assert s3_storage.cache_path("models/a").name.startswith("a-")
