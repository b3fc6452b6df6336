"""Fixtures of the gallery tests: a store over a temporary LocalStorage, a fake clock, one embedder per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

# The sentence embedder ships inside a package; nothing may be fetched from the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from likeness.gallery.search import SemanticRanker, load_bundled_model
from likeness.gallery.store import PromptStore
from likeness.storage.local import LocalStorage


class StepClock:
    """A clock that advances one second per reading, so records have distinct, ordered creation times."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def make_store(storage: LocalStorage, clock: StepClock) -> Callable[..., PromptStore]:
    """Build stores (replicas) over the same storage and clock."""

    def build(**kwargs: object) -> PromptStore:
        kwargs.setdefault("clock", clock)
        return PromptStore(storage, **kwargs)  # type: ignore[arg-type]

    return build


@pytest.fixture
def store(make_store: Callable[..., PromptStore]) -> PromptStore:
    return make_store()


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The bundled MiniLM sentence embedder, loaded once for the whole session (a few seconds on CPU)."""
    return load_bundled_model()


@pytest.fixture
def semantic_ranker(minilm: Any) -> SemanticRanker:
    """A fresh hybrid ranker (empty caches) over the session's model."""
    return SemanticRanker(model_loader=lambda: minilm)
