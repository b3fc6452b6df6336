"""Fixtures of the trainer tests: a private cache, fewer torch threads, and quiet libraries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Nothing may be fetched from the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def trainer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private Likeness cache (tokenizer vocabulary, builtin base models) shared by the session."""
    cache = tmp_path_factory.mktemp("likeness-cache")
    previous = os.environ.get("LIKENESS_CACHE_DIR")
    os.environ["LIKENESS_CACHE_DIR"] = str(cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    from likeness.models.loading import disable_progress_bars

    disable_progress_bars()
    yield cache
    torch.set_num_threads(threads)
    if previous is None:
        os.environ.pop("LIKENESS_CACHE_DIR", None)
    else:
        os.environ["LIKENESS_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory, trainer_cache: Path):
    """(server, storage folder, cache folder): the trainer service on CPU, queue capacity 1, every step reported."""
    from trainer_helpers import BackgroundTrainer

    from likeness.server.settings import Settings

    root = tmp_path_factory.mktemp("trainer-service")
    settings = Settings(
        storage_url=str(root / "storage"),
        cache_dir=str(trainer_cache),
        device="cpu",
        trainer_queue_capacity=1,
        trainer_progress_interval_seconds=0.0,
    )
    server = BackgroundTrainer(settings)
    yield server, root / "storage", trainer_cache
    server.close()


@pytest.fixture
def client(trainer):
    from likeness_client import LikenessClient

    with LikenessClient(trainer[0].address, timeout=120) as connection:
        yield connection
