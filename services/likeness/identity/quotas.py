"""Per-tenant quotas: queued plus running training jobs, stored subject models, images generated per minute.

Limits come from the server's defaults (`--quota-*`, 0 = unlimited) unless an operator set an override for
the tenant (`likeness quotas set`, the `tenant_quotas` table). Every count lives in the control-plane database,
so the limits hold over all replicas: jobs and models are counted in the transaction that queues the job (under
the trainer's `create-job` lock), images with one atomic upsert on a per-minute counter. Exceeding a limit
raises `ResourceExhausted` with the quota's name and a retry delay, which the server sends as RetryInfo and
QuotaFailure status details.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from likeness.controlplane.database import Database, db_now
from likeness.controlplane.schema import image_usage, subject_models, tenant_quotas, training_jobs
from likeness.errors import InvalidArgument, ResourceExhausted
from likeness.storage.layout import validate_tenant

#: Seconds of the fixed window the images-per-minute quota counts in.
IMAGE_WINDOW_SECONDS = 60
#: A caller over the job quota is told to retry after this long: a short job's typical run time.
ACTIVE_JOB_RETRY_SECONDS = 30.0
#: Over the subject-model quota only a deletion helps; the delay keeps automatic retries from hammering.
SUBJECT_MODEL_RETRY_SECONDS = 300.0
#: States that count against max_active_jobs (the trainer's non-terminal states).
ACTIVE_STATES = ("QUEUED", "RUNNING")
LIMIT_NAMES = ("max_active_jobs", "max_subject_models", "images_per_minute")


@dataclass(frozen=True)
class QuotaLimits:
    """A tenant's limits; 0 is unlimited."""

    max_active_jobs: int = 0
    max_subject_models: int = 0
    images_per_minute: int = 0

    def overridden(self, row: object | None) -> QuotaLimits:
        """These limits with the non-NULL columns of a `tenant_quotas` row put over them."""
        if row is None:
            return self
        changes = {name: getattr(row, name) for name in LIMIT_NAMES if getattr(row, name) is not None}
        return dataclasses.replace(self, **changes)


class Quotas:
    """Reads limits (cached briefly) and enforces them against the control-plane database."""

    def __init__(self, database: Database, defaults: QuotaLimits, *, cache_seconds: float = 30.0) -> None:
        self.database = database
        self.defaults = defaults
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, QuotaLimits]] = {}
        self._lock = threading.Lock()

    # ---- limits ------------------------------------------------------------------------------------------

    def limits(self, tenant: str) -> QuotaLimits:
        """The tenant's limits: its override over the defaults, read at most every `cache_seconds`."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self.database.read() as connection:
            row = connection.execute(sa.select(tenant_quotas).where(tenant_quotas.c.tenant == tenant)).first()
        limits = self.defaults.overridden(row)
        with self._lock:
            self._cache[tenant] = (now + self.cache_seconds, limits)
        return limits

    def set_override(self, tenant: str, **limits: int | None) -> QuotaLimits:
        """Set (an int, 0 = unlimited) or clear (None) the named overrides of a tenant, leaving the others as
        they are; returns the effective limits."""
        unknown = set(limits) - set(LIMIT_NAMES)
        if unknown:
            raise InvalidArgument(f"unknown quota {sorted(unknown)[0]!r}; known: {', '.join(LIMIT_NAMES)}")
        for name, value in limits.items():
            if value is not None and value < 0:
                raise InvalidArgument("must be 0 (unlimited) or positive", field=name)
        validate_tenant(tenant)
        with self.database.transaction() as connection:
            connection.execute(
                self.database.insert(tenant_quotas)
                .values(tenant=tenant, update_time=db_now(), **limits)
                .on_conflict_do_update(index_elements=["tenant"], set_={**limits, "update_time": db_now()})
            )
        with self._lock:
            self._cache.pop(tenant, None)
        return self.limits(tenant)

    def overrides(self) -> dict[str, QuotaLimits]:
        """Every tenant with an override, with its effective limits (for `likeness quotas list`)."""
        with self.database.read() as connection:
            rows = connection.execute(sa.select(tenant_quotas).order_by(tenant_quotas.c.tenant)).all()
        return {row.tenant: self.defaults.overridden(row) for row in rows}

    # ---- enforcement -------------------------------------------------------------------------------------

    def check_new_job(self, connection: Connection, tenant: str) -> None:
        """Raise ResourceExhausted if one more job would exceed the tenant's job or subject-model quota.

        Runs inside the transaction that inserts the job, so two replicas cannot both admit the last slot. A
        job in flight counts as a model too: each one publishes a subject model when it succeeds."""
        limits = self.limits(tenant)
        if not (limits.max_active_jobs or limits.max_subject_models):
            return
        active = connection.execute(
            sa.select(sa.func.count())
            .select_from(training_jobs)
            .where(training_jobs.c.tenant == tenant, training_jobs.c.state.in_(ACTIVE_STATES))
        ).scalar_one()
        if limits.max_active_jobs and active >= limits.max_active_jobs:
            raise ResourceExhausted(
                f"tenant {tenant!r} has {active} queued or running training jobs, its quota is "
                f"{limits.max_active_jobs}; wait for one to end or cancel one",
                retry_after=ACTIVE_JOB_RETRY_SECONDS,
                quota="max_active_jobs",
            )
        if limits.max_subject_models:
            self._check_models(connection, tenant, limits.max_subject_models, active)

    def check_new_model(self, connection: Connection, tenant: str) -> None:
        """Raise ResourceExhausted if one more subject model (an imported LoRA) would exceed the tenant's
        subject-model quota; trained and imported models count alike, and so do jobs that will publish one.

        Runs inside the transaction that records the model, under the trainer's `create-job` lock."""
        limit = self.limits(tenant).max_subject_models
        if not limit:
            return
        active = connection.execute(
            sa.select(sa.func.count())
            .select_from(training_jobs)
            .where(training_jobs.c.tenant == tenant, training_jobs.c.state.in_(ACTIVE_STATES))
        ).scalar_one()
        self._check_models(connection, tenant, limit, active)

    @staticmethod
    def _check_models(connection: Connection, tenant: str, limit: int, active: int) -> None:
        stored = connection.execute(
            sa.select(sa.func.count()).select_from(subject_models).where(subject_models.c.tenant == tenant)
        ).scalar_one()
        if stored + active >= limit:
            raise ResourceExhausted(
                f"tenant {tenant!r} has {stored} subject models and {active} jobs that will publish one, its "
                f"quota is {limit}; delete a subject model (DeleteSubjectModel) first",
                retry_after=SUBJECT_MODEL_RETRY_SECONDS,
                quota="max_subject_models",
            )

    def consume_images(self, tenant: str, count: int) -> None:
        """Count `count` images against the tenant's images-per-minute quota, or raise ResourceExhausted with
        the seconds until the current minute ends. One atomic upsert: concurrent replicas never overshoot."""
        limit = self.limits(tenant).images_per_minute
        if not limit:
            return
        if count > limit:
            raise ResourceExhausted(
                f"a request for {count} images exceeds the quota of {limit} images per minute; ask for fewer",
                quota="images_per_minute",
            )
        with self.database.transaction() as connection:
            now = connection.execute(sa.select(db_now())).scalar_one()
            window = int(now // IMAGE_WINDOW_SECONDS) * IMAGE_WINDOW_SECONDS
            statement = (
                self.database.insert(image_usage)
                .values(tenant=tenant, window_start=window, images=count)
                .on_conflict_do_update(
                    index_elements=["tenant", "window_start"],
                    set_={"images": image_usage.c.images + count},
                    where=image_usage.c.images + count <= limit,
                )
                .returning(image_usage.c.images)
            )
            admitted = connection.execute(statement).scalar_one_or_none()
            if admitted is not None and admitted == count:
                # The first request of a new window prunes the tenant's old ones.
                connection.execute(
                    sa.delete(image_usage).where(image_usage.c.tenant == tenant, image_usage.c.window_start < window)
                )
        if admitted is None:
            retry = max(1.0, math.ceil(window + IMAGE_WINDOW_SECONDS - now))
            raise ResourceExhausted(
                f"tenant {tenant!r} reached its quota of {limit} images per minute; retry in {retry:.0f} s",
                retry_after=retry,
                quota="images_per_minute",
            )
