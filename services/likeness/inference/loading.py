"""Load states shared by base and subject models, and the single-flight loader both use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

from likeness.threads import run_in_short_lived_thread

NOT_LOADED, LOADING, LOADED, FAILED = "not_loaded", "loading", "loaded", "failed"
# A failed load is remembered this long, so requests fail fast instead of re-reading broken files each time;
# `load_subject` retries at once.
FAILED_RETRY_SECONDS = 60.0

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: (key, value, error): exactly one of value and error is set (value may be None for a load returning None).
Settle = Callable[[K, "V | None", "BaseException | None"], None]
Finish = Callable[[K, "V | None", "BaseException | None"], "BaseException | None"]


class SingleFlight(Generic[K, V]):
    """One load per key at a time: callers asking while a load runs share its result or its error.

    `lock` is the owner's bookkeeping lock: `join_locked` and `running_locked` are called holding it, and a
    load's end (the key leaving the flight and `settle(key, value, error)`) is recorded under it in one step, so
    no caller sees a load that finished without its outcome. Then, outside the lock and before waiters wake,
    `finish(key, value, error)` runs; for a failed load it may return the error waiters get instead.

    The load itself runs on a short-lived thread (see `likeness.threads.run_in_short_lived_thread`), started
    from whichever thread calls `run`: the caller that started the flight, or an executor it hands `run` to.
    """

    def __init__(
        self,
        load: Callable[[K], V],
        *,
        lock: threading.Lock,
        settle: Settle | None = None,
        finish: Finish | None = None,
        thread_name: str = "likeness-load",
    ) -> None:
        self._load = load
        self._lock = lock
        self._settle = settle
        self._finish = finish
        self._thread_name = thread_name
        self._flights: dict[K, Future[V]] = {}

    def running_locked(self) -> set[K]:
        """Under the lock: the keys being loaded now."""
        return set(self._flights)

    def join_locked(self, key: K) -> tuple[Future[V], bool]:
        """Under the lock: the future of `key`'s load, and True when the caller started it and must `run` it."""
        future = self._flights.get(key)
        if future is not None:
            return future, False
        future = Future()
        self._flights[key] = future
        return future, True

    def run(self, key: K, future: Future[V]) -> None:
        """Run the load a `join_locked` started, record its outcome and resolve its future (never raises)."""
        try:
            value = run_in_short_lived_thread(self._load, key, name=self._thread_name)
        except BaseException as exc:
            with self._lock:
                self._flights.pop(key, None)
                if self._settle is not None:
                    self._settle(key, None, exc)
            error = self._finish(key, None, exc) if self._finish is not None else None
            future.set_exception(error if error is not None else exc)
            return
        with self._lock:
            self._flights.pop(key, None)
            if self._settle is not None:
                self._settle(key, value, None)
        if self._finish is not None:
            self._finish(key, value, None)
        future.set_result(value)
