"""Fixtures: every contract test runs against LocalStorage and against a real S3 API (moto_server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import BUCKET, MotoUnavailable, moto_s3

from likeness.storage import Storage, open_storage

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto_server on 127.0.0.1 with bucket `BUCKET`; its URL. Skips only if the server cannot start."""
    try:
        with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
            yield endpoint
    except MotoUnavailable as error:
        pytest.skip(str(error))


def make_s3_storage(endpoint: str, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """A storage on a fresh prefix of the test bucket, configured the way operators do: through the env."""
    monkeypatch.setenv("LIKENESS_S3_ENDPOINT_URL", endpoint)
    return open_storage(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:12]}", cache_dir=cache_dir)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """The storage under test: LocalStorage in tmp_path, or S3 (moto) on a prefix of its own."""
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return make_s3_storage(endpoint, tmp_path / "cache", monkeypatch)


@pytest.fixture
def s3_storage(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    return make_s3_storage(s3_endpoint, tmp_path / "cache", monkeypatch)
