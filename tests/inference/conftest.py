"""Fixtures of the inference tests: tiny base models, a private cache, and a real gRPC server per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Nothing may be fetched from the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference_helpers import TINY_CATALOG

from likeness.inference.testing import BackgroundInferenceServer


@pytest.fixture(scope="session")
def likeness_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private Likeness cache for the tokenizer vocabulary and builtin models."""
    return tmp_path_factory.mktemp("likeness-cache")


@pytest.fixture(scope="module", autouse=True)
def _inference_test_env(likeness_cache: Path) -> Iterator[None]:
    """Point the cache at `likeness_cache` and use at most two torch threads, for this module only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIKENESS_CACHE_DIR", str(likeness_cache))
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, 2))
        yield
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def catalog(likeness_cache: Path):
    from likeness.models.catalog import BaseModelCatalog

    return BaseModelCatalog(TINY_CATALOG, cache_dir=likeness_cache / "base-models")


@pytest.fixture
def storage(tmp_path: Path):
    from likeness.storage.local import LocalStorage

    return LocalStorage(tmp_path / "storage")


@pytest.fixture(scope="module")
def server(catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundInferenceServer]:
    """One server per test module, with small chunks so that every image arrives in several."""
    from likeness.storage.local import LocalStorage

    storage = LocalStorage(tmp_path_factory.mktemp("inference-storage"))
    running = BackgroundInferenceServer(
        storage, catalog, chunk_bytes=4096, base_models=TINY_CATALOG, batch_window_ms=50
    ).start()
    yield running
    running.stop()
