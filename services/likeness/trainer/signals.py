"""Nudges between the parts of one trainer process, and from the database to them.

`Wakeup` is a broadcast: `set()` wakes every thread waiting on it, and a wait that started from a token taken
before the `set()` returns at once, so a nudge that arrives between "nothing to do" and "wait" is never lost.
"""

from __future__ import annotations

import threading
import time


class Wakeup:
    """A broadcast nudge with a generation counter (see the module docstring)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def token(self) -> int:
        with self._condition:
            return self._generation

    def set(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout: float, since: int | None = None) -> bool:
        """Waits up to `timeout` s for a `set()` after `since` (default: now); True when one came."""
        deadline = time.monotonic() + timeout
        with self._condition:
            start = self._generation if since is None else since
            while self._generation == start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True
