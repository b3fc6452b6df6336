"""Job event logs: one storage object per event, plus an in-memory fan-out to live watchers.

Every event gets the next sequence number of its job (1, 2, 3, ... without gaps) and is written to storage before
any watcher sees it, so a watcher that reconnects with the last sequence it saw replays the rest from storage and
then follows live events, losing and repeating nothing. Appends come from job-runner threads; watchers are
asyncio tasks, so delivery crosses into their event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from likeness.storage.base import Storage
from likeness.storage.layout import job_events_prefix
from likeness.storage.manifest import utc_now_rfc3339

#: Event types; a `state_changed` event into one of TERMINAL_STATES is the last event of a job.
STATE_CHANGED = "state_changed"
PROGRESS = "progress"
CHECKPOINT_SAVED = "checkpoint_saved"
VALIDATION_IMAGES = "validation_images"
SUCCEEDED = "succeeded"
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def is_final(event: dict[str, Any]) -> bool:
    """Whether no event can follow this one."""
    return event.get("type") == STATE_CHANGED and event.get("state") in TERMINAL_STATES


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def deliver(self, event: dict[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:
            return  # the watcher's event loop is closed: the watcher is gone


class EventHub:
    """Appends events to job logs and fans them out to watchers."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._next_sequence: dict[tuple[str, str], int] = {}
        self._subscribers: dict[tuple[str, str], list[_Subscriber]] = defaultdict(list)

    def _sequence_after_restart(self, tenant: str, job_id: str) -> int:
        # Event objects are numbered from 1; an empty log yields 0 from next_event_seq.
        return max(1, self.storage.next_event_seq(job_events_prefix(tenant, job_id)))

    def append(self, tenant: str, job_id: str, event_type: str, **payload: Any) -> dict[str, Any]:
        """Writes the next event of the job and delivers it to its watchers; returns it (with `sequence`)."""
        key = (tenant, job_id)
        with self._lock:
            sequence = self._next_sequence.get(key) or self._sequence_after_restart(tenant, job_id)
            event = {"sequence": sequence, "time": utc_now_rfc3339(), "type": event_type, **payload}
            self.storage.append_event(job_events_prefix(tenant, job_id), sequence, event)
            self._next_sequence[key] = sequence + 1
            # Delivered under the lock (it only schedules a put) so watchers receive events in sequence order.
            for subscriber in self._subscribers.get(key, ()):
                subscriber.deliver(event)
        return event

    def last_sequence(self, tenant: str, job_id: str) -> int:
        with self._lock:
            key = (tenant, job_id)
            if key not in self._next_sequence:
                self._next_sequence[key] = self._sequence_after_restart(tenant, job_id)
            return self._next_sequence[key] - 1

    def replay(self, tenant: str, job_id: str, after_sequence: int) -> list[dict[str, Any]]:
        """Stored events with a sequence above `after_sequence`, in order."""
        return [event for _, event in self.storage.read_events(job_events_prefix(tenant, job_id), after_sequence)]

    async def watch(self, tenant: str, job_id: str, after_sequence: int, *, ended: bool) -> AsyncIterator[dict]:
        """Events above `after_sequence`: stored ones first, then live ones, until the job's final event.

        `ended` says the job was already in a terminal state when the watch began (its log is complete).
        """
        subscriber = _Subscriber(asyncio.get_running_loop())
        key = (tenant, job_id)
        # Subscribe before reading storage: an event appended in between is then both stored and queued, and
        # the sequence check below drops the duplicate instead of losing it.
        with self._lock:
            self._subscribers[key].append(subscriber)
        try:
            last = after_sequence
            for event in await asyncio.to_thread(self.replay, tenant, job_id, after_sequence):
                last = event["sequence"]
                yield event
                if is_final(event):
                    return
            if ended:
                return
            while True:
                event = await subscriber.queue.get()
                if event["sequence"] <= last:
                    continue
                last = event["sequence"]
                yield event
                if is_final(event):
                    return
        finally:
            with self._lock:
                self._subscribers[key].remove(subscriber)
                if not self._subscribers[key]:
                    del self._subscribers[key]

    def watcher_count(self, tenant: str, job_id: str) -> int:
        with self._lock:
            return len(self._subscribers.get((tenant, job_id), ()))
