"""Job records, job event logs, datasets and subject models in the control-plane database.

`JobStore` is everything an API replica reads and writes; the worker side (claims, heartbeats, fenced writes) is
`likeness.trainer.leases`, which shares this module's event append so a job's sequence numbers have one source.

Event sequence numbers are gap-free: an event's number comes from `training_jobs.last_sequence`, incremented by
an `UPDATE ... RETURNING` in the transaction that inserts the event. The update locks the job's row until commit,
so two writers of one job take turns and the numbers commit in order; a rolled-back insert rolls its number back.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from likeness.controlplane.database import Database, db_now
from likeness.controlplane.schema import datasets, job_events, job_leases, subject_models, training_jobs
from likeness.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from likeness.identity.quotas import Quotas
from likeness.storage.layout import new_id
from likeness.trainer import webhooks
from likeness.trainer.config import TrainingConfig
from likeness.trainer.states import TERMINAL_STATES, JobEventType, JobState, StopRequest

MAX_IDEMPOTENCY_KEY = 128
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
#: Most events one read returns; a watcher reads again for the rest.
EVENT_BATCH = 500
#: PostgreSQL notification channels: a job became claimable; a running job was asked to stop (payload: job id).
WORK_CHANNEL = "likeness_trainer_work"
STOP_CHANNEL = "likeness_trainer_stop"


class LeaseLost(Exception):
    """The worker's lease on a job was taken over or ended: it must stop and write nothing more."""


@dataclass
class JobRecord:
    """One row of `training_jobs`, as the API shows it."""

    job_id: str
    tenant: str
    state: JobState
    config: dict[str, Any]
    model_id: str
    create_time: float
    priority: int = 0
    idempotency_key: str = ""
    start_time: float | None = None
    end_time: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    last_checkpoint_step: int = 0
    resume_count: int = 0
    last_sequence: int = 0
    lease_owner: str = ""
    stop_request: str = ""
    #: SHA-256 of the request that created the job (`request_digest`), to tell a retry from a different request
    #: sent with the same idempotency key; "" for jobs created before it was recorded.
    request_digest: str = ""

    @property
    def training_config(self) -> TrainingConfig:
        return TrainingConfig.from_dict(self.config)

    @classmethod
    def from_row(cls, row: Row) -> JobRecord:
        return cls(
            job_id=row.job_id,
            tenant=row.tenant,
            state=JobState(row.state),
            config=row.config,
            model_id=row.model_id,
            create_time=row.create_time,
            priority=row.priority,
            idempotency_key=row.idempotency_key or "",
            start_time=row.start_time,
            end_time=row.end_time,
            progress=row.progress or {},
            error=row.error or "",
            last_checkpoint_step=row.last_checkpoint_step,
            resume_count=row.resume_count,
            last_sequence=row.last_sequence,
            lease_owner=row.lease_owner or "",
            stop_request=row.stop_request or "",
            request_digest=row.request_digest or "",
        )


@dataclass(frozen=True)
class DatasetRecord:
    """One row of `datasets`: the catalog entry of a dataset whose files are in shared storage."""

    dataset_id: str
    tenant: str
    resolution: int
    image_count: int
    display_name: str
    source: str
    create_time: float


def as_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


def finite_json(payload: Mapping[str, Any]) -> dict[str, Any]:
    """JSON columns hold no NaN or infinity (a loss before the first step, a diverging run): store null instead."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in payload.items()
    }


def append_event(
    connection: Connection,
    job_id: str,
    event_type: JobEventType,
    payload: Mapping[str, Any],
    *,
    fence: int | None = None,
    owner: str | None = None,
) -> int:
    """Inserts the job's next event in the caller's transaction and returns its sequence number.

    With `fence` (and `owner`), only the worker holding that lease may write: LeaseLost otherwise.
    """
    condition = training_jobs.c.job_id == job_id
    if fence is not None:
        condition &= (training_jobs.c.fence == fence) & (training_jobs.c.lease_owner == owner)
    sequence = connection.execute(
        sa.update(training_jobs)
        .where(condition)
        .values(last_sequence=training_jobs.c.last_sequence + 1)
        .returning(training_jobs.c.last_sequence)
    ).scalar()
    if sequence is None:
        if fence is not None:
            raise LeaseLost(job_id)
        raise NotFound(f"training job {job_id!r} does not exist", field="job_id")
    connection.execute(
        sa.insert(job_events).values(
            job_id=job_id,
            sequence=sequence,
            time=db_now(),
            type=str(event_type),
            fence=fence or 0,
            payload=finite_json(payload),
        )
    )
    # The job's webhook delivery, if it has one, commits (or rolls back) with the event.
    webhooks.enqueue(connection, job_id, sequence, event_type, payload)
    return sequence


def event_from_row(row: Row) -> dict[str, Any]:
    """A stored event as the dict the servicer turns into a WatchTrainingJobResponse."""
    return {"sequence": row.sequence, "time": as_datetime(row.time), "type": row.type, **row.payload}


class JobStore:
    """Training jobs and their events, datasets and subject models, as API replicas see them."""

    def __init__(self, database: Database, quotas: Quotas | None = None) -> None:
        self.database = database
        #: Per-tenant job and subject-model quotas, checked in the transaction that queues a job.
        self.quotas = quotas

    # ---- creating ----------------------------------------------------------------------------------------

    def find_by_idempotency_key(self, tenant: str, idempotency_key: str) -> JobRecord | None:
        if not idempotency_key:
            return None
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(training_jobs).where(
                    training_jobs.c.tenant == tenant, training_jobs.c.idempotency_key == idempotency_key
                )
            ).first()
        return JobRecord.from_row(row) if row else None

    def check_capacity(self, capacity: int) -> None:
        """ResourceExhausted when `capacity` jobs already wait (checked again, atomically, by `create`)."""
        with self.database.transaction() as connection:
            self._check_capacity(connection, capacity)

    def _check_capacity(self, connection: Connection, capacity: int) -> None:
        waiting = connection.execute(
            sa.select(sa.func.count()).where(training_jobs.c.state == JobState.QUEUED.value)
        ).scalar_one()
        if waiting >= capacity:
            raise ResourceExhausted(
                f"the training queue is full ({waiting} jobs waiting, capacity {capacity}); retry later"
            )

    def create(
        self,
        tenant: str,
        config: TrainingConfig,
        *,
        capacity: int,
        idempotency_key: str = "",
        priority: int = 0,
        request_digest: str = "",
        webhook: webhooks.WebhookConfig | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queues a job; returns (record, existing). `existing` is True when the idempotency key matched.

        One transaction under the `create-job` lock: the key lookup, the capacity check, the insert, the webhook
        and the first event, so two replicas that create with the same key at the same instant make one job.
        """
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument(f"must be at most {MAX_IDEMPOTENCY_KEY} characters", field="idempotency_key")
        job_id = new_id("job")
        try:
            with self.database.transaction() as connection:
                self.database.advisory_lock(connection, "create-job")
                if idempotency_key:
                    row = connection.execute(
                        sa.select(training_jobs).where(
                            training_jobs.c.tenant == tenant, training_jobs.c.idempotency_key == idempotency_key
                        )
                    ).first()
                    if row is not None:
                        return JobRecord.from_row(row), True
                self._check_capacity(connection, capacity)
                if self.quotas is not None:
                    self.quotas.check_new_job(connection, tenant)
                connection.execute(
                    sa.insert(training_jobs).values(
                        job_id=job_id,
                        tenant=tenant,
                        state=JobState.QUEUED.value,
                        priority=priority,
                        config=config.to_dict(),
                        base_model=config.base_model,
                        dataset_id=config.dataset_id,
                        model_id=new_id("sm"),
                        class_images_key=config.class_images_key or None,
                        request_digest=request_digest or None,
                        idempotency_key=idempotency_key or None,
                        create_time=db_now(),
                    )
                )
                if webhook is not None:
                    webhooks.save_webhook(connection, job_id, webhook)
                append_event(connection, job_id, JobEventType.STATE_CHANGED, {"state": "QUEUED", "message": ""})
                self.database.notify(connection, WORK_CHANNEL)
        except IntegrityError:
            # Only reachable without the lock's protection (another writer of the same key on another schema
            # version); the unique constraint still guarantees one job.
            existing = self.find_by_idempotency_key(tenant, idempotency_key)
            if existing is None:
                raise
            return existing, True
        return self.get(tenant, job_id), False

    # ---- reading -----------------------------------------------------------------------------------------

    def get(self, tenant: str, job_id: str) -> JobRecord:
        if not job_id:
            raise InvalidArgument("must not be empty", field="job_id")
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(training_jobs).where(training_jobs.c.tenant == tenant, training_jobs.c.job_id == job_id)
            ).first()
        if row is None:
            raise NotFound(f"training job {job_id!r} does not exist", field="job_id")
        return JobRecord.from_row(row)

    def queue_positions(self, records: Sequence[JobRecord]) -> dict[str, int]:
        """1 for the next job to run, 0 when not queued: by priority, then age (tenant fairness may reorder)."""
        queued = [r.job_id for r in records if r.state == JobState.QUEUED]
        if not queued:
            return {}
        jobs = training_jobs
        # One query however many records: rank every queued job (at most the queue's capacity) and pick ours.
        ranked = (
            sa.select(
                jobs.c.job_id,
                sa.func.row_number()
                .over(order_by=(jobs.c.priority.desc(), jobs.c.create_time, jobs.c.job_id))
                .label("position"),
            )
            .where(jobs.c.state == JobState.QUEUED.value)
            .subquery()
        )
        with self.database.transaction() as connection:
            rows = connection.execute(sa.select(ranked).where(ranked.c.job_id.in_(queued))).all()
        return {job_id: position for job_id, position in rows}

    def list(
        self, tenant: str, states: Iterable[JobState] = (), page_size: int = 0, page_token: str = ""
    ) -> tuple[list[JobRecord], str]:
        """Jobs newest first, optionally of some states; returns (page, next page token)."""
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})", field="page_size"
            )
        size = page_size or DEFAULT_PAGE_SIZE
        wanted = sorted({JobState(s).value for s in states})
        query = sa.select(training_jobs).where(training_jobs.c.tenant == tenant)
        if wanted:
            query = query.where(training_jobs.c.state.in_(wanted))
        if page_token:
            before, token_states = _decode_token(page_token)
            if token_states != wanted:
                raise InvalidArgument("was returned for a different `states` filter; start again", field="page_token")
            query = query.where(training_jobs.c.job_id < before)
        query = query.order_by(training_jobs.c.job_id.desc()).limit(size + 1)
        with self.database.transaction() as connection:
            rows = connection.execute(query).all()
        page = [JobRecord.from_row(row) for row in rows[:size]]
        token = _encode_token(page[-1].job_id, wanted) if len(rows) > size else ""
        return page, token

    def count_by_state(self) -> dict[JobState, int]:
        """Jobs per state over every tenant (for the queue gauges)."""
        with self.database.transaction() as connection:
            rows = connection.execute(
                sa.select(training_jobs.c.state, sa.func.count()).group_by(training_jobs.c.state)
            ).all()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): count for state, count in rows})
        return counts

    # ---- cancelling --------------------------------------------------------------------------------------

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancels a job nobody trains at once; asks the owning worker of a running one to stop (it finishes the
        job as CANCELLED when it has)."""
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(training_jobs, (training_jobs.c.lease_expires_at < db_now()).label("expired"))
                .where(training_jobs.c.tenant == tenant, training_jobs.c.job_id == job_id)
                .with_for_update(of=training_jobs)
            ).first()
            if row is None:
                raise NotFound(f"training job {job_id!r} does not exist", field="job_id")
            state = JobState(row.state)
            if state == JobState.QUEUED:
                finish_job(connection, job_id, JobState.CANCELLED, "cancelled by a caller before it started")
            elif state == JobState.RUNNING and (row.lease_owner is None or row.expired):
                # Its worker is gone (the lease ran out): nobody is left to ask.
                finish_job(connection, job_id, JobState.CANCELLED, "cancelled by a caller")
            elif state == JobState.RUNNING:
                connection.execute(
                    sa.update(training_jobs)
                    .where(training_jobs.c.job_id == job_id)
                    .values(stop_request=StopRequest.CANCEL.value)
                )
                self.database.notify(connection, STOP_CHANNEL, job_id)
        return self.get(tenant, job_id)

    # ---- events ------------------------------------------------------------------------------------------

    def events_after(self, job_id: str, after_sequence: int, limit: int = EVENT_BATCH) -> builtins.list[dict[str, Any]]:
        """Stored events of one job with a sequence above `after_sequence`, in order."""
        with self.database.transaction() as connection:
            rows = connection.execute(
                sa.select(job_events)
                .where(job_events.c.job_id == job_id, job_events.c.sequence > after_sequence)
                .order_by(job_events.c.sequence)
                .limit(limit)
            ).all()
        return [event_from_row(row) for row in rows]

    def last_sequences(self, job_ids: Iterable[str]) -> dict[str, int]:
        """The latest event sequence of each job (one query for every watched job)."""
        ids = list(job_ids)
        if not ids:
            return {}
        with self.database.transaction() as connection:
            rows = connection.execute(
                sa.select(training_jobs.c.job_id, training_jobs.c.last_sequence).where(training_jobs.c.job_id.in_(ids))
            ).all()
        return dict(rows)

    # ---- datasets ----------------------------------------------------------------------------------------

    def add_dataset(self, record: DatasetRecord) -> None:
        with self.database.transaction() as connection:
            connection.execute(sa.insert(datasets).values(**dataclasses.asdict(record)))

    def delete_dataset(self, tenant: str, dataset_id: str, *, unless_in_use: bool = False) -> None:
        """Delete a dataset's row; with `unless_in_use`, FailedPrecondition while a queued or running job of the
        tenant trains on it (checked in the same transaction, under the write lock on SQLite)."""
        with self.database.transaction() as connection:
            if unless_in_use:
                busy = connection.execute(
                    sa.select(training_jobs.c.job_id)
                    .where(
                        training_jobs.c.tenant == tenant,
                        training_jobs.c.dataset_id == dataset_id,
                        training_jobs.c.state.not_in([state.value for state in TERMINAL_STATES]),
                    )
                    .limit(1)
                    .with_for_update()
                ).scalar_one_or_none()
                if busy is not None:
                    raise FailedPrecondition(
                        f"dataset {dataset_id!r} is used by job {busy!r}, which has not ended; cancel it first"
                    )
            connection.execute(
                sa.delete(datasets).where(datasets.c.tenant == tenant, datasets.c.dataset_id == dataset_id)
            )

    def delete_job(self, tenant: str, job_id: str) -> JobRecord:
        """Delete an ended job's row with its events and leases (they cascade); NotFound for an unknown id,
        FailedPrecondition while it is queued or running."""
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(training_jobs)
                .where(training_jobs.c.tenant == tenant, training_jobs.c.job_id == job_id)
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFound(f"training job {job_id!r} does not exist", field="job_id")
            record = JobRecord.from_row(row)
            if record.state not in TERMINAL_STATES:
                raise FailedPrecondition(
                    f"job {job_id!r} is {record.state.value}; cancel it (CancelTrainingJob) and delete it once it ended"
                )
            connection.execute(sa.delete(job_events).where(job_events.c.job_id == job_id))
            connection.execute(sa.delete(job_leases).where(job_leases.c.job_id == job_id))
            connection.execute(sa.delete(training_jobs).where(training_jobs.c.job_id == job_id))
        return record

    def get_dataset(self, tenant: str, dataset_id: str) -> DatasetRecord | None:
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(datasets).where(datasets.c.tenant == tenant, datasets.c.dataset_id == dataset_id)
            ).first()
        return DatasetRecord(**row._mapping) if row else None

    # ---- subject models ----------------------------------------------------------------------------------

    def get_subject_model(self, tenant: str, model_id: str) -> dict[str, Any] | None:
        """The manifest (plus `size_bytes`) of a subject model a job published, or None."""
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(subject_models.c.manifest, subject_models.c.size_bytes).where(
                    subject_models.c.tenant == tenant, subject_models.c.model_id == model_id
                )
            ).first()
        return {**row.manifest, "size_bytes": row.size_bytes} if row else None


def finish_job(
    connection: Connection,
    job_id: str,
    state: JobState,
    message: str,
    *,
    fence: int | None = None,
    owner: str | None = None,
    subject_model: Mapping[str, Any] | None = None,
) -> None:
    """Moves a job into a terminal state with its final events, in the caller's transaction.

    A succeeded job's subject model is recorded in the same transaction: `succeeded` then `state_changed`.
    """
    if subject_model is not None:
        append_event(
            connection, job_id, JobEventType.SUCCEEDED, {"subject_model": dict(subject_model)}, fence=fence, owner=owner
        )
        manifest = {k: v for k, v in subject_model.items() if k != "size_bytes"}
        connection.execute(
            sa.insert(subject_models).values(
                model_id=manifest["model_id"],
                tenant=manifest["tenant"],
                job_id=job_id,
                dataset_id=sa.select(training_jobs.c.dataset_id)
                .where(training_jobs.c.job_id == job_id)
                .scalar_subquery(),
                base_model=manifest["base_model"],
                identifier=manifest["identifier"],
                class_noun=manifest["class_noun"],
                method=manifest["method"],
                size_bytes=int(subject_model.get("size_bytes", 0)),
                create_time=db_now(),
                manifest=manifest,
            )
        )
    append_event(
        connection,
        job_id,
        JobEventType.STATE_CHANGED,
        {"state": state.value, "message": message},
        fence=fence,
        owner=owner,
    )
    values: dict[str, Any] = {
        "state": state.value,
        "end_time": db_now(),
        "lease_owner": None,
        "lease_expires_at": None,
        "stop_request": None,
    }
    if state == JobState.FAILED:
        values["error"] = message
    connection.execute(sa.update(training_jobs).where(training_jobs.c.job_id == job_id).values(**values))


def _encode_token(job_id: str, states: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": job_id, "states": states}).encode()).decode()


def _decode_token(token: str) -> tuple[str, list[str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["before"]), [str(s) for s in data["states"]]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise InvalidArgument("is not a token returned by ListTrainingJobs", field="page_token") from error
