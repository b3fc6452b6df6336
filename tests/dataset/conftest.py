"""Fixtures for dataset tests: where the DreamBench photos are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DREAMBENCH_ENV = "LIKENESS_DREAMBENCH_DIR"


def dreambench_dir() -> Path:
    explicit = os.environ.get(DREAMBENCH_ENV)
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2].parent / "shared/datasets/dreambench"


@pytest.fixture(scope="session")
def dreambench() -> Path:
    path = dreambench_dir()
    if not (path / "clock").is_dir():
        pytest.skip(f"DreamBench photos not found at {path}; set {DREAMBENCH_ENV} to the dreambench folder")
    return path
