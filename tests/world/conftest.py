"""Fixtures of the world tests: nothing from the hub, a private Likeness cache for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def world_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keeps the tokenizer vocabulary and materialised base models out of the user's cache."""
    cache = tmp_path_factory.mktemp("likeness-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIKENESS_CACHE_DIR", str(cache))
        yield cache
