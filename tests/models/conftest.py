"""Fixtures of the model tests: a private Likeness cache and tiny pipelines saved once per session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Nothing may be fetched from the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def likeness_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("likeness-cache")


@pytest.fixture(autouse=True)
def _private_cache(likeness_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Keep the tokenizer vocabulary and builtin models out of the user's ~/.cache.
    monkeypatch.setenv("LIKENESS_CACHE_DIR", str(likeness_cache))
    yield


@pytest.fixture(scope="session")
def saved_tiny(likeness_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`saved_tiny(arch)`: the folder of a tiny pipeline (seed 0) saved with `save_tiny_pipeline`, once."""
    from likeness.models.tiny import save_tiny_pipeline

    folders: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in folders:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("LIKENESS_CACHE_DIR", str(likeness_cache))
                folders[arch] = save_tiny_pipeline(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return folders[arch]

    return get
