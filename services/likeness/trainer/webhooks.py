"""Job webhooks: the job's webhook and its outbox of deliveries in the control-plane database. No HTTP here (the
dispatcher, `likeness.trainer.webhook_dispatcher`, sends them).

A job created with a webhook gets a `job_webhooks` row in the creating transaction. Every state change of the job,
and with `send_progress` its progress at most every `progress_interval_seconds`, then queues one
`webhook_deliveries` row in the very transaction that records the job event (`enqueue`, called by
`likeness.trainer.store.append_event`): nothing is sent from the training path, and an event that commits always
has its delivery. Dispatchers on the API replicas claim due deliveries with a lease (`WebhookOutbox.claim`), POST
them, and record each attempt (`WebhookOutbox.record`): delivered, retrying after an exponential backoff, or
failed after the last attempt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from likeness.controlplane.database import Database, db_now
from likeness.controlplane.schema import job_webhooks, training_jobs, webhook_deliveries
from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument
from likeness.net.egress import EgressPolicy, EgressRefused, EgressUnresolved
from likeness.storage.layout import new_id
from likeness.trainer.states import JobEventType, JobState
from likeness_client.webhooks import signing_key

STATE_CHANGED_EVENT = "training_job.state_changed"
PROGRESS_EVENT = "training_job.progress"
MIN_SECRET_LENGTH, MAX_SECRET_LENGTH = 16, 256
DEFAULT_PROGRESS_INTERVAL_SECONDS = 30
MAX_PROGRESS_INTERVAL_SECONDS = 86400
#: Deliveries a job shows (GetTrainingJob, ListTrainingJobs), newest first.
RECENT_DELIVERIES = 20
#: The progress fields a progress delivery carries (TrainingProgress).
PROGRESS_FIELDS = (
    "step",
    "total_steps",
    "loss",
    "learning_rate",
    "steps_per_second",
    "images_per_second",
    "eta_seconds",
)
_ERROR_LIMIT = 500


class DeliveryState(ValueEnum):
    """Where a delivery stands (stored by value in `webhook_deliveries.state`; WebhookDeliveryState)."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    RETRYING = "RETRYING"
    FAILED = "FAILED"


_DUE_STATES = (DeliveryState.PENDING.value, DeliveryState.RETRYING.value)


@dataclass(frozen=True)
class WebhookConfig:
    """A job's webhook as the caller gave it (validated). The secret never appears in its repr."""

    url: str
    secret: str = field(repr=False)
    send_progress: bool = False
    progress_interval_seconds: int = DEFAULT_PROGRESS_INTERVAL_SECONDS

    def digest_document(self) -> dict[str, Any]:
        """What the request digest (idempotency) covers: the secret only by its hash."""
        return {
            "url": self.url,
            "secret_sha256": hashlib.sha256(self.secret.encode()).hexdigest(),
            "send_progress": self.send_progress,
            "progress_interval_seconds": self.progress_interval_seconds,
        }


def validate_webhook(
    policy: EgressPolicy, *, url: str, secret: str, send_progress: bool = False, progress_interval_seconds: int = 0
) -> WebhookConfig:
    """The webhook of a CreateTrainingJob request, checked: the URL's scheme, form and addresses (the egress
    policy), the secret's length and the progress interval. InvalidArgument naming the field otherwise."""
    url = url.strip()
    if not url:
        raise InvalidArgument("must be an https:// URL that receives the job's events", field="webhook.url")
    try:
        policy.check_url(url)
    except EgressRefused as error:
        raise InvalidArgument(f"{error}; give a public https:// URL", field="webhook.url") from None
    except EgressUnresolved as error:
        raise InvalidArgument(f"{error}; check the host name", field="webhook.url") from None
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise InvalidArgument(
            f"must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters (it signs every delivery); "
            f"generate a random one, e.g. 32 bytes in base64",
            field="webhook.secret",
        )
    try:
        signing_key(secret)
    except ValueError as error:
        raise InvalidArgument(str(error), field="webhook.secret") from None
    if not 0 <= progress_interval_seconds <= MAX_PROGRESS_INTERVAL_SECONDS:
        raise InvalidArgument(
            f"must be between 0 (for {DEFAULT_PROGRESS_INTERVAL_SECONDS} s) and {MAX_PROGRESS_INTERVAL_SECONDS} seconds",
            field="webhook.progress_interval_seconds",
        )
    return WebhookConfig(
        url=url,
        secret=secret,
        send_progress=send_progress,
        progress_interval_seconds=progress_interval_seconds or DEFAULT_PROGRESS_INTERVAL_SECONDS,
    )


def save_webhook(connection: Connection, job_id: str, config: WebhookConfig) -> None:
    """Records a new job's webhook in the creating transaction (before its first event)."""
    connection.execute(
        sa.insert(job_webhooks).values(
            job_id=job_id,
            url=config.url,
            secret=config.secret,
            send_progress=config.send_progress,
            progress_interval_seconds=config.progress_interval_seconds,
        )
    )


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(
    event_type: str,
    *,
    job_id: str,
    state: str,
    sequence: int,
    progress: Mapping[str, Any] | None,
    subject_model_id: str = "",
    error: str = "",
    message: str = "",
    moment: datetime | None = None,
) -> str:
    """The JSON body of one delivery."""
    document = {
        "type": event_type,
        "job_id": job_id,
        "state": state,
        "sequence": sequence,
        "progress": {name: progress[name] for name in PROGRESS_FIELDS if progress and progress.get(name) is not None},
        "subject_model_id": subject_model_id,
        "error": error,
        "message": message,
        "timestamp": _rfc3339(moment or datetime.now(timezone.utc)),
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def enqueue(
    connection: Connection, job_id: str, sequence: int, event_type: JobEventType, payload: Mapping[str, Any]
) -> None:
    """Queues the delivery of a job event in the caller's transaction when the job has a webhook that wants it:
    every state change; progress when `send_progress`, throttled to one per `progress_interval_seconds`.

    A job without a webhook costs one primary-key lookup that finds nothing.
    """
    if event_type not in (JobEventType.STATE_CHANGED, JobEventType.PROGRESS):
        return
    hooks = job_webhooks
    row = connection.execute(
        sa.select(
            hooks.c.send_progress,
            hooks.c.progress_interval_seconds,
            (db_now() - hooks.c.last_progress_time).label("since_progress"),
            training_jobs.c.state,
            training_jobs.c.model_id,
            training_jobs.c.progress,
        )
        .select_from(hooks.join(training_jobs, training_jobs.c.job_id == hooks.c.job_id))
        .where(hooks.c.job_id == job_id)
    ).first()
    if row is None:
        return
    if event_type == JobEventType.PROGRESS:
        if not row.send_progress:
            return
        if row.since_progress is not None and row.since_progress < row.progress_interval_seconds:
            return
        connection.execute(sa.update(hooks).where(hooks.c.job_id == job_id).values(last_progress_time=db_now()))
        body = event_body(
            PROGRESS_EVENT, job_id=job_id, state=JobState.RUNNING.value, sequence=sequence, progress=payload
        )
        kind = PROGRESS_EVENT
    else:
        state = str(payload.get("state", row.state))
        message = str(payload.get("message") or "")
        body = event_body(
            STATE_CHANGED_EVENT,
            job_id=job_id,
            state=state,
            sequence=sequence,
            progress=row.progress,
            subject_model_id=row.model_id if state == JobState.SUCCEEDED.value else "",
            error=message if state == JobState.FAILED.value else "",
            message=message,
        )
        kind = STATE_CHANGED_EVENT
    connection.execute(
        sa.insert(webhook_deliveries).values(
            delivery_id=new_id("whd"),
            job_id=job_id,
            event_type=kind,
            sequence=sequence,
            body=body,
            state=DeliveryState.PENDING.value,
            create_time=db_now(),
            next_attempt_time=db_now(),
        )
    )


# ---- what a job shows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookView:
    """A job's webhook as RPCs show it: no secret."""

    url: str
    send_progress: bool
    progress_interval_seconds: int


@dataclass(frozen=True)
class DeliveryView:
    """One delivery as RPCs show it."""

    delivery_id: str
    event_type: str
    sequence: int
    attempts: int
    state: DeliveryState
    last_http_status: int
    last_error: str
    last_attempt_time: float | None
    next_attempt_time: float | None


@dataclass(frozen=True)
class JobWebhook:
    """A job's webhook and its latest deliveries, newest first."""

    webhook: WebhookView
    deliveries: list[DeliveryView]


# ---- dispatching ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a dispatcher holds the lease on: what to send and where. The secret stays out of the repr."""

    delivery_id: str
    job_id: str
    event_type: str
    sequence: int
    body: str
    attempts: int
    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went. `permanent`: no later attempt can succeed (the URL is refused)."""

    delivered: bool
    http_status: int = 0
    error: str = ""
    permanent: bool = False


class WebhookOutbox:
    """The webhook tables as the API replicas read and dispatch them."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def for_jobs(self, job_ids: Iterable[str]) -> dict[str, JobWebhook]:
        """The webhook and latest `RECENT_DELIVERIES` deliveries of each job that has one (two queries in all)."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        deliveries = webhook_deliveries
        ranked = (
            sa.select(
                deliveries.c.delivery_id,
                deliveries.c.job_id,
                deliveries.c.event_type,
                deliveries.c.sequence,
                deliveries.c.attempts,
                deliveries.c.state,
                deliveries.c.last_http_status,
                deliveries.c.last_error,
                deliveries.c.last_attempt_time,
                deliveries.c.next_attempt_time,
                sa.func.row_number()
                .over(partition_by=deliveries.c.job_id, order_by=deliveries.c.sequence.desc())
                .label("rank"),
            )
            .where(deliveries.c.job_id.in_(ids))
            .subquery()
        )
        with self.database.read() as connection:
            hooks = connection.execute(
                sa.select(
                    job_webhooks.c.job_id,
                    job_webhooks.c.url,
                    job_webhooks.c.send_progress,
                    job_webhooks.c.progress_interval_seconds,
                ).where(job_webhooks.c.job_id.in_(ids))
            ).all()
            rows = connection.execute(
                sa.select(ranked)
                .where(ranked.c.rank <= RECENT_DELIVERIES)
                .order_by(ranked.c.job_id, ranked.c.sequence.desc())
            ).all()
        result = {
            hook.job_id: JobWebhook(WebhookView(hook.url, bool(hook.send_progress), hook.progress_interval_seconds), [])
            for hook in hooks
        }
        for row in rows:
            if row.job_id in result:
                result[row.job_id].deliveries.append(
                    DeliveryView(
                        delivery_id=row.delivery_id,
                        event_type=row.event_type,
                        sequence=row.sequence,
                        attempts=row.attempts,
                        state=DeliveryState(row.state),
                        last_http_status=row.last_http_status,
                        last_error=row.last_error or "",
                        last_attempt_time=row.last_attempt_time,
                        next_attempt_time=row.next_attempt_time,
                    )
                )
        return result

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        """Leases up to `limit` due deliveries to `owner`, oldest due first. PostgreSQL skips rows another
        replica is claiming (`FOR UPDATE SKIP LOCKED`); SQLite's write lock serialises claims."""
        if limit <= 0:
            return []
        deliveries = webhook_deliveries
        now = db_now()
        due = (
            sa.select(deliveries.c.delivery_id)
            .where(
                deliveries.c.state.in_(_DUE_STATES),
                deliveries.c.next_attempt_time <= now,
                sa.or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
            )
            .order_by(deliveries.c.next_attempt_time, deliveries.c.sequence)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.database.transaction() as connection:
            ids = list(connection.execute(due).scalars())
            if not ids:
                return []
            connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.delivery_id.in_(ids))
                .values(lease_owner=owner, lease_expires_at=db_now() + lease_seconds)
            )
            rows = connection.execute(
                sa.select(
                    deliveries.c.delivery_id,
                    deliveries.c.job_id,
                    deliveries.c.event_type,
                    deliveries.c.sequence,
                    deliveries.c.body,
                    deliveries.c.attempts,
                    job_webhooks.c.url,
                    job_webhooks.c.secret,
                )
                .select_from(deliveries.join(job_webhooks, job_webhooks.c.job_id == deliveries.c.job_id))
                .where(deliveries.c.delivery_id.in_(ids))
                .order_by(deliveries.c.next_attempt_time, deliveries.c.sequence)
            ).all()
        return [
            ClaimedDelivery(
                delivery_id=row.delivery_id,
                job_id=row.job_id,
                event_type=row.event_type,
                sequence=row.sequence,
                body=row.body,
                attempts=row.attempts,
                url=row.url,
                secret=row.secret,
            )
            for row in rows
        ]

    def record(
        self,
        claimed: ClaimedDelivery,
        owner: str,
        result: AttemptResult,
        *,
        max_attempts: int,
        backoff_seconds: float,
    ) -> DeliveryState:
        """Records one attempt and releases the lease: DELIVERED, RETRYING after `backoff_seconds * 2**(n-1)`
        (n: the attempts so far) or FAILED after the `max_attempts`-th (or a permanent failure). An attempt whose
        lease another dispatcher took over (it outlived its lease) records nothing."""
        attempts = claimed.attempts + 1
        next_attempt: Any = None
        if result.delivered:
            state = DeliveryState.DELIVERED
        elif result.permanent or attempts >= max_attempts:
            state = DeliveryState.FAILED
        else:
            state = DeliveryState.RETRYING
            next_attempt = db_now() + backoff_seconds * 2 ** (attempts - 1)
        deliveries = webhook_deliveries
        with self.database.transaction() as connection:
            connection.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.delivery_id == claimed.delivery_id,
                    deliveries.c.lease_owner == owner,
                    deliveries.c.attempts == claimed.attempts,
                )
                .values(
                    state=state.value,
                    attempts=attempts,
                    last_http_status=result.http_status,
                    last_error=result.error[:_ERROR_LIMIT],
                    last_attempt_time=db_now(),
                    next_attempt_time=next_attempt,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        return state

    def states(self, job_id: str) -> Sequence[tuple[str, str, int]]:
        """(event type, state, attempts) of a job's deliveries in sequence order (tests, the CLI)."""
        with self.database.read() as connection:
            rows = connection.execute(
                sa.select(webhook_deliveries.c.event_type, webhook_deliveries.c.state, webhook_deliveries.c.attempts)
                .where(webhook_deliveries.c.job_id == job_id)
                .order_by(webhook_deliveries.c.sequence)
            ).all()
        return [(row.event_type, row.state, row.attempts) for row in rows]
