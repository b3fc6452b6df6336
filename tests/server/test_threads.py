"""run_in_short_lived_thread: result and exception hand-back, and the thread is gone afterwards."""

from __future__ import annotations

import threading

import pytest

from likeness.errors import NotFound
from likeness.threads import run_in_short_lived_thread


def test_returns_the_result_from_another_thread_that_then_ends() -> None:
    seen: list[threading.Thread] = []

    def work(x: int, y: int) -> int:
        seen.append(threading.current_thread())
        return x + y

    assert run_in_short_lived_thread(work, 2, 3, name="adder") == 5
    assert seen[0] is not threading.current_thread() and seen[0].name == "adder"
    assert not seen[0].is_alive()


def test_reraises_the_exception_in_the_caller() -> None:
    def fail() -> None:
        raise NotFound("no such model", field="model_id")

    with pytest.raises(NotFound, match="no such model") as caught:
        run_in_short_lived_thread(fail)
    assert caught.value.field == "model_id"
