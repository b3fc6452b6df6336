"""Fixtures of the deployment tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from deploy_helpers import kustomize


@pytest.fixture(scope="session")
def rendered() -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """`rendered(build)`: the objects of one build, rendered once per session."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def get(build: str) -> list[dict[str, Any]]:
        if build not in cache:
            cache[build] = kustomize(build)
        return cache[build]

    yield get
