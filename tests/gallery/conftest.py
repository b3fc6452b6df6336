"""Fixtures of the gallery tests: a store on SQLite or a real PostgreSQL server, with a stepping clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from likeness.controlplane.database import Database
from likeness.gallery.store import PromptStore
from likeness.storage.local import LocalStorage

START = 1_750_000_000.0  # 2025-06-15


class StepClock:
    """Seconds since the epoch that advance one second per reading, so entries have distinct, ordered times."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def make_store(database: Database, storage: LocalStorage, clock: StepClock) -> Callable[..., PromptStore]:
    """Build stores (replicas) over the same database, storage and clock."""

    def build() -> PromptStore:
        return PromptStore(database, storage, clock=clock)

    return build


@pytest.fixture
def store(make_store: Callable[..., PromptStore]) -> PromptStore:
    return make_store()
