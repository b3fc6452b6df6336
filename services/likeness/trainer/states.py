"""Job states and job event types: the trainer's vocabulary, one definition each."""

from __future__ import annotations

from likeness.enums import ValueEnum


class JobState(ValueEnum):
    """Lifecycle of a training job (stored by value in `training_jobs.state`)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobEventType(ValueEnum):
    """Events of a job's log, as `WatchTrainingJob` streams them (stored by value in `job_events.type`)."""

    STATE_CHANGED = "state_changed"
    PROGRESS = "progress"
    CHECKPOINT_SAVED = "checkpoint_saved"
    VALIDATION_IMAGES = "validation_images"
    SUCCEEDED = "succeeded"


class StopRequest(ValueEnum):
    """Why the owning worker should stop a running job."""

    CANCEL = "cancel"
    PREEMPT = "preempt"


def is_final_event(event: dict) -> bool:
    """Whether no event can follow this one: a state change into a terminal state."""
    return event.get("type") == JobEventType.STATE_CHANGED and event.get("state") in {s.value for s in TERMINAL_STATES}
