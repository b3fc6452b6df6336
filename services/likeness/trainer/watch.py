"""Following a job's event log from any API replica: replay from the database, then poll for what is new.

Every watcher of this process shares one poller: each tick (`poll_seconds`, 100 ms by default) it reads the latest
sequence number of every watched job in one query and wakes the watchers whose job has new events; they then read
those events. An event written anywhere reaches a watcher on any replica within one tick plus a query; one written
by this process (role `all`) wakes the poller at once. The stream is the stored log itself, so a watcher that
reconnects with the last sequence it saw continues without gaps or duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from likeness.errors import Unavailable
from likeness.trainer.states import is_final_event
from likeness.trainer.store import EVENT_BATCH, JobStore

log = logging.getLogger("likeness.trainer.watch")

DEFAULT_POLL_SECONDS = 0.1


class EventFollower:
    """Streams job events to watchers (asyncio), with one shared database poller per process."""

    def __init__(self, store: JobStore, *, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = defaultdict(list)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._poll(), name="trainer-event-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiters in self._waiters.values():
            for _, future in waiters:
                if not future.done():
                    future.set_exception(Unavailable("the trainer is shutting down; watch again to continue"))

    def notify(self, job_id: str = "") -> None:
        """Called from any thread after this process wrote an event: poll now instead of at the next tick."""
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    def watcher_count(self, job_id: str) -> int:
        return len(self._waiters.get(job_id, ()))

    async def watch(self, job_id: str, after_sequence: int, *, ended: bool) -> AsyncIterator[dict[str, Any]]:
        """Events above `after_sequence`: stored ones first, then new ones, until the job's final event.

        `ended` says the job was already in a terminal state when the watch began (its log is complete).
        """
        last = after_sequence
        while True:
            events = await asyncio.to_thread(self.store.events_after, job_id, last)
            for event in events:
                last = event["sequence"]
                yield event
                if is_final_event(event):
                    return
            if len(events) == EVENT_BATCH:
                continue
            if ended:
                return
            await self._wait_for_more(job_id, last)

    async def _wait_for_more(self, job_id: str, seen: int) -> None:
        assert self._loop is not None, "EventFollower.start() was not called"
        future: asyncio.Future[None] = self._loop.create_future()
        entry = (seen, future)
        self._waiters[job_id].append(entry)
        try:
            await future
        finally:
            waiters = self._waiters.get(job_id, [])
            if entry in waiters:
                waiters.remove(entry)
            if not waiters:
                self._waiters.pop(job_id, None)

    async def _poll(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            if not self._waiters:
                continue
            try:
                latest = await asyncio.to_thread(self.store.last_sequences, list(self._waiters))
            except Unavailable:
                continue  # the database is away; watchers keep waiting and catch up when it is back
            except Exception:
                log.exception("event poller failed")
                continue
            for job_id, waiters in list(self._waiters.items()):
                current = latest.get(job_id)
                for seen, future in waiters:
                    if (current is None or current > seen) and not future.done():
                        future.set_result(None)
