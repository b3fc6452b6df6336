"""The protocol between a worker supervisor and its training process, shared by both sides.

Supervisor -> process, on stdin (warm workers only): one JSON command per line, `run` (a job) or `exit`.
Process -> supervisor, on stdout: event lines `@@likeness-event {json}`; every other line is log output. A job
ends with exactly one outcome event (`OUTCOMES`). A warm process announces `ready` once its imports are done and
after each job, then waits for the next command.

The job control file carries what the supervisor learns from the database while the job runs: a stop request and
until when the lease is known to be held (`lease_valid_until`, this machine's clock). The process reads it before
every step, checkpoint and publish: it stops at a stop request or when the lease may have lapsed, and never writes
a checkpoint or a model once it cannot prove the lease is still its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.enums import ValueEnum

EVENT_PREFIX = "@@likeness-event "
#: A write starts only when at least this long is left on the lease (the time a checkpoint upload may take).
LEASE_WRITE_MARGIN_SECONDS = 1.0


class WorkerEventType(ValueEnum):
    """What a training process reports."""

    READY = "ready"
    PROGRESS = "progress"
    CHECKPOINT_SAVED = "checkpoint_saved"
    VALIDATION_IMAGES = "validation_images"
    RESUMING = "resuming"
    RANK_DONE = "rank_done"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    LEASE_LOST = "lease_lost"


OUTCOMES = frozenset(
    {
        WorkerEventType.SUCCEEDED,
        WorkerEventType.FAILED,
        WorkerEventType.CANCELLED,
        WorkerEventType.PREEMPTED,
        WorkerEventType.LEASE_LOST,
    }
)


class StopReason(ValueEnum):
    """Why a run stops early. PREEMPT checkpoints first; LEASE_LOST writes nothing more."""

    CANCEL = "cancel"
    PREEMPT = "preempt"
    LEASE_LOST = "lease_lost"


def encode_event(event_type: WorkerEventType, **payload: Any) -> str:
    return EVENT_PREFIX + json.dumps({"type": str(event_type), **payload}, allow_nan=True) + "\n"


def parse_event_line(line: str) -> dict[str, Any] | None:
    """The event of a stdout line, or None for a log line. `type` is a WorkerEventType."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX) :])
        event["type"] = WorkerEventType(event["type"])
    except (ValueError, KeyError, TypeError):
        return None
    return event


def encode_run_command(job: dict[str, Any], control_file: Path) -> str:
    return json.dumps({"command": "run", "job": job, "control_file": str(control_file)}) + "\n"


def encode_exit_command() -> str:
    return json.dumps({"command": "exit"}) + "\n"


def parse_command(line: str) -> dict[str, Any]:
    command = json.loads(line)
    if not isinstance(command, dict) or command.get("command") not in ("run", "exit"):
        raise ValueError(f"not a worker command: {line[:200]!r}")
    return command


@dataclass(frozen=True)
class ControlState:
    stop: StopReason | None
    lease_valid_until: float

    def lease_held(self, margin: float = 0.0) -> bool:
        return self.stop != StopReason.LEASE_LOST and time.time() + margin < self.lease_valid_until


class JobControl:
    """The job control file: written by the supervisor (atomically), read by the training process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def write(self, *, stop: StopReason | None, lease_valid_until: float) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"stop": stop.value if stop else None, "lease_valid_until": lease_valid_until}),
            encoding="utf-8",
        )
        os.replace(temporary, self.path)

    def read(self) -> ControlState:
        """The current state; a missing or unreadable file means no lease (stop writing, stop training)."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
            stop = StopReason(data["stop"]) if data.get("stop") else None
            return ControlState(stop, float(data["lease_valid_until"]))
        return ControlState(StopReason.LEASE_LOST, 0.0)
