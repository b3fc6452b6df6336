"""The queue as workers see it: atomic claims, heartbeats, and writes fenced by the lease they hold.

A worker claims the next eligible job in one transaction: QUEUED jobs, and RUNNING jobs whose lease ran out (their
worker died; the new one resumes from the last checkpoint). The order is priority (highest first), then the tenant
with the fewest jobs running now (fairness across tenants), then age (FIFO). PostgreSQL locks the chosen row with
`FOR UPDATE SKIP LOCKED`, so concurrent claims pick different jobs; SQLite's BEGIN IMMEDIATE serialises them.

Each claim increments the job's `fence`. Every later write of the worker (heartbeat, event, progress, the final
state) carries its fence and owner in the WHERE clause: once another worker has claimed the job, the old one's
writes match no row and raise LeaseLost, and it stops. The lease log (`job_leases`) records who held which job
when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from likeness.controlplane.database import Database, db_now
from likeness.controlplane.schema import job_leases, training_jobs
from likeness.trainer.states import JobEventType, JobState, StopRequest
from likeness.trainer.store import WORK_CHANNEL, LeaseLost, append_event, finish_job, finite_json


@dataclass(frozen=True)
class Lease:
    """A claimed job: what the worker needs to train it, and the fence its writes carry."""

    job_id: str
    tenant: str
    owner: str
    fence: int
    config: dict[str, Any]
    model_id: str
    resume_count: int
    last_checkpoint_step: int

    def job_message(self) -> dict[str, Any]:
        """The job as the worker process receives it."""
        return {"tenant": self.tenant, "job_id": self.job_id, "model_id": self.model_id, "config": self.config}


class LeaseQueue:
    """Claims and fenced writes of one worker process (any number of them share the database)."""

    def __init__(self, database: Database, *, lease_seconds: float) -> None:
        self.database = database
        self.lease_seconds = lease_seconds

    def _owned(self, lease: Lease) -> sa.ColumnElement[bool]:
        return (
            (training_jobs.c.job_id == lease.job_id)
            & (training_jobs.c.fence == lease.fence)
            & (training_jobs.c.lease_owner == lease.owner)
        )

    # ---- claiming ----------------------------------------------------------------------------------------

    def claim(self, worker_id: str) -> Lease | None:
        """Leases the next eligible job to `worker_id`, or returns None when there is none."""
        while True:
            with self.database.transaction() as connection:
                row = connection.execute(self._next_job_query()).first()
                if row is None:
                    return None
                if row.stop_request == StopRequest.CANCEL.value:
                    # Cancelled while its previous worker was dying: finish it instead of training it.
                    self._close_open_leases(connection, row.job_id, "expired")
                    finish_job(connection, row.job_id, JobState.CANCELLED, "cancelled by a caller")
                    continue
                return self._take(connection, row, worker_id)

    def _next_job_query(self) -> sa.Select:
        jobs = training_jobs
        others = training_jobs.alias("others")
        now = db_now()
        running_of_tenant = (
            sa.select(sa.func.count())
            .select_from(others)
            .where(
                others.c.tenant == jobs.c.tenant,
                others.c.state == JobState.RUNNING.value,
                others.c.lease_expires_at >= now,
            )
            .scalar_subquery()
        )
        eligible = sa.or_(
            jobs.c.state == JobState.QUEUED.value,
            sa.and_(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < now),
        )
        return (
            sa.select(jobs)
            .where(eligible)
            .order_by(jobs.c.priority.desc(), running_of_tenant, jobs.c.create_time, jobs.c.job_id)
            .limit(1)
            .with_for_update(skip_locked=True, of=jobs)
        )

    def _take(self, connection: Connection, row: Any, worker_id: str) -> Lease:
        resumed = row.start_time is not None
        fence = row.fence + 1
        resume_count = row.resume_count + (1 if resumed else 0)
        self._close_open_leases(connection, row.job_id, "expired")
        connection.execute(
            sa.update(training_jobs)
            .where(training_jobs.c.job_id == row.job_id)
            .values(
                state=JobState.RUNNING.value,
                lease_owner=worker_id,
                lease_expires_at=db_now() + self.lease_seconds,
                fence=fence,
                start_time=db_now(),
                resume_count=resume_count,
                stop_request=None,
            )
        )
        connection.execute(
            sa.insert(job_leases).values(job_id=row.job_id, worker_id=worker_id, fence=fence, acquired_at=db_now())
        )
        message = f"resuming on {worker_id} (resume {resume_count})" if resumed else ""
        append_event(
            connection,
            row.job_id,
            JobEventType.STATE_CHANGED,
            {"state": JobState.RUNNING.value, "message": message},
            fence=fence,
            owner=worker_id,
        )
        return Lease(
            job_id=row.job_id,
            tenant=row.tenant,
            owner=worker_id,
            fence=fence,
            config=row.config,
            model_id=row.model_id,
            resume_count=resume_count,
            last_checkpoint_step=row.last_checkpoint_step,
        )

    def _close_open_leases(self, connection: Connection, job_id: str, outcome: str) -> None:
        # A lease nobody released ended when it expired: the job's current expiry time.
        expiry = sa.select(training_jobs.c.lease_expires_at).where(training_jobs.c.job_id == job_id).scalar_subquery()
        connection.execute(
            sa.update(job_leases)
            .where(job_leases.c.job_id == job_id, job_leases.c.released_at.is_(None))
            .values(released_at=sa.func.coalesce(expiry, db_now()), outcome=outcome)
        )

    # ---- while training ----------------------------------------------------------------------------------

    def heartbeat(self, lease: Lease) -> StopRequest | None:
        """Extends the lease; returns a pending stop request. LeaseLost when the lease is no longer this worker's."""
        with self.database.transaction() as connection:
            stop = connection.execute(
                sa.update(training_jobs)
                .where(self._owned(lease), training_jobs.c.state == JobState.RUNNING.value)
                .values(lease_expires_at=db_now() + self.lease_seconds)
                .returning(training_jobs.c.stop_request)
            ).first()
        if stop is None:
            raise LeaseLost(lease.job_id)
        return StopRequest(stop[0]) if stop[0] else None

    def append(self, lease: Lease, event_type: JobEventType, payload: Mapping[str, Any], **updates: Any) -> int:
        """Appends an event and updates the job's columns in one fenced transaction; returns the sequence."""
        with self.database.transaction() as connection:
            sequence = append_event(connection, lease.job_id, event_type, payload, fence=lease.fence, owner=lease.owner)
            if updates:
                connection.execute(sa.update(training_jobs).where(self._owned(lease)).values(**updates))
        return sequence

    def update(self, lease: Lease, **updates: Any) -> None:
        """Updates the job's columns without an event (fenced)."""
        with self.database.transaction() as connection:
            done = connection.execute(sa.update(training_jobs).where(self._owned(lease)).values(**updates))
        if done.rowcount == 0:
            raise LeaseLost(lease.job_id)

    def record_progress(self, lease: Lease, progress: Mapping[str, Any]) -> int:
        clean = finite_json(progress)
        return self.append(lease, JobEventType.PROGRESS, clean, progress=clean)

    # ---- ending ------------------------------------------------------------------------------------------

    def finish(
        self, lease: Lease, state: JobState, message: str = "", *, subject_model: Mapping[str, Any] | None = None
    ) -> None:
        """Ends the job (fenced) and closes the lease."""
        with self.database.transaction() as connection:
            # Locks the row first, so a concurrent claim cannot slip in between the check and the writes.
            owned = connection.execute(
                sa.select(training_jobs.c.job_id).where(self._owned(lease)).with_for_update()
            ).first()
            if owned is None:
                raise LeaseLost(lease.job_id)
            finish_job(
                connection,
                lease.job_id,
                state,
                message,
                fence=lease.fence,
                owner=lease.owner,
                subject_model=subject_model,
            )
            self._release(connection, lease, state.value.lower())

    def requeue(self, lease: Lease, message: str) -> None:
        """Hands a preempted job back to the queue (it resumes from its checkpoint on the next claim)."""
        with self.database.transaction() as connection:
            append_event(
                connection,
                lease.job_id,
                JobEventType.STATE_CHANGED,
                {"state": JobState.QUEUED.value, "message": message},
                fence=lease.fence,
                owner=lease.owner,
            )
            connection.execute(
                sa.update(training_jobs)
                .where(self._owned(lease))
                .values(state=JobState.QUEUED.value, lease_owner=None, lease_expires_at=None, stop_request=None)
            )
            self._release(connection, lease, "preempted")
            self.database.notify(connection, WORK_CHANNEL)

    def _release(self, connection: Connection, lease: Lease, outcome: str) -> None:
        connection.execute(
            sa.update(job_leases)
            .where(
                job_leases.c.job_id == lease.job_id,
                job_leases.c.fence == lease.fence,
                job_leases.c.released_at.is_(None),
            )
            .values(released_at=db_now(), outcome=outcome)
        )

    def mark_lost(self, lease: Lease) -> None:
        """Records in the lease log that this worker gave the job up because it lost the lease."""
        with self.database.transaction() as connection:
            connection.execute(
                sa.update(job_leases)
                .where(job_leases.c.job_id == lease.job_id, job_leases.c.fence == lease.fence)
                .values(outcome="lost")
            )
