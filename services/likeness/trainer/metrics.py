"""Prometheus metrics of the trainer (default registry, served by the bootstrap's /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from likeness.trainer.states import TERMINAL_STATES

# Read from the database: every trainer process reports the same cluster-wide values, so aggregate with max().
JOBS = Gauge(
    "likeness_trainer_jobs", "Training jobs in the control-plane database, by state (aggregate with max)", ["state"]
)
QUEUE_DEPTH = Gauge(
    "likeness_trainer_queue_depth", "Training jobs waiting in the queue, all replicas (aggregate with max)"
)
DATABASE_UP = Gauge("likeness_trainer_database_up", "1 while the control-plane database answers, else 0")
JOBS_FINISHED = Counter("likeness_trainer_jobs_finished_total", "Training jobs that ended, by final state", ["state"])
# Every final state's series exists from start-up, so that `increase()` counts a restarted process's first failure.
for _state in sorted(TERMINAL_STATES, key=lambda state: state.value):
    JOBS_FINISHED.labels(_state.value)
STEPS = Counter("likeness_trainer_steps_total", "Optimisation steps trained", ["device"])
STEP_SECONDS = Histogram(
    "likeness_trainer_step_duration_seconds",
    "Duration of one optimisation step (averaged over each progress report's window)",
    ["device"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LOSS = Gauge("likeness_trainer_loss", "Smoothed training loss of the job running on the device", ["device"])
IMAGES_PER_SECOND = Gauge(
    "likeness_trainer_images_per_second", "Training throughput of the job running on the device", ["device"]
)
CHECKPOINT_SECONDS = Histogram(
    "likeness_trainer_checkpoint_write_seconds",
    "Time to write one checkpoint to shared storage",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
RUNNING_JOBS = Gauge("likeness_trainer_running_jobs", "Jobs currently training, per device", ["device"])
WEBHOOK_ATTEMPTS = Counter(
    "likeness_trainer_webhook_attempts_total",
    "Webhook delivery attempts of this replica's dispatcher, by outcome (delivered, retrying, failed)",
    ["outcome"],
)
for _outcome in ("delivered", "retrying", "failed"):
    WEBHOOK_ATTEMPTS.labels(_outcome)
WEBHOOK_SECONDS = Histogram(
    "likeness_trainer_webhook_attempt_seconds",
    "Duration of one webhook delivery attempt (until the receiver answered or the attempt failed)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
