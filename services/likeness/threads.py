"""Short-lived threads for torch work done off the thread that runs the model (importable without torch)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def run_in_short_lived_thread(fn: Callable[..., T], *args: Any, name: str = "likeness-load") -> T:
    """Runs `fn(*args)` on a new thread that ends with it; returns its result or raises its exception.

    Why: with torch's OpenMP backend (libgomp) each thread that runs a parallel op gets its own pool of OpenMP
    workers, kept for as long as that thread lives. Once the pools' threads outnumber the cores, libgomp stops
    spin-waiting between parallel regions and every small op pays for waking its workers: on 2 cores a tiny-model
    generation ran 1.8x slower on the inference worker while an idle loader thread that had once loaded a model
    was still alive. Loading models on threads that end keeps the worker the only long-lived thread with a pool.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["result"])
