"""Erasure: everything derived from a person's photos goes, with a receipt of what went.

A subject is the lineage of one dataset of photos: the dataset (originals, crops, report, contact sheet), every
job trained on it (checkpoints, events, leases, validation images, logs), every subject model those jobs
published (weights, exports, samples), the gallery entries generated with those models and their images, and
the shared class-image sets no other job uses. Any id of the lineage names it. A tenant's erasure takes every
subject of the tenant, its whole storage prefix, its gallery, its API keys and its quota settings.

Order, chosen so that a crash at any point leaves a retry able to finish:
1. queued and running jobs of the lineage are cancelled, and their workers waited for (a running job stops
   within one training step; UNAVAILABLE if one has not stopped within the wait, with nothing deleted yet);
2. files go (a published folder's manifest first, so no replica starts loading a half-deleted model);
3. gallery entries generated with the models go;
4. the rows go in one transaction, which also records the receipt in `erasures`;
5. class-image sets that no remaining job names go.
The rows go last because they are how the lineage is found: an erasure interrupted before step 4 is found
again, whole, by the retry. Inference replicas drop their cached copies, in memory and on disk, at their next
subject sweep (`subject_sweep_seconds`), the bound the receipt states.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from likeness.controlplane.database import Database, db_now
from likeness.controlplane.schema import (
    api_keys,
    datasets,
    erasures,
    image_usage,
    job_events,
    job_leases,
    subject_models,
    tenant_quotas,
    training_jobs,
)
from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument, NotFound, Unavailable
from likeness.gallery.store import PromptStore
from likeness.storage.base import Storage
from likeness.storage.layout import (
    class_images_prefix,
    dataset_prefix,
    job_prefix,
    model_prefix,
    new_id,
    tenant_prefix,
)
from likeness.trainer.jobs import TrainingJobs
from likeness.trainer.states import TERMINAL_STATES

log = logging.getLogger(__name__)

#: How long an erasure waits for the workers of running jobs to stop before it answers UNAVAILABLE.
CANCEL_WAIT_SECONDS = 60.0
_TERMINAL = [state.value for state in TERMINAL_STATES]


class Scope(ValueEnum):
    """What an erasure took: one subject's lineage, or a whole tenant."""

    SUBJECT = "subject"
    TENANT = "tenant"


@dataclass
class Lineage:
    """The ids of what an erasure removes."""

    dataset_ids: set[str] = field(default_factory=set)
    job_ids: set[str] = field(default_factory=set)
    model_ids: set[str] = field(default_factory=set)
    class_images_keys: set[str] = field(default_factory=set)
    active_job_ids: set[str] = field(default_factory=set)


@dataclass
class ErasureReceipt:
    """What an erasure removed: ids and counts only, nothing derived from the photos."""

    erasure_id: str
    tenant: str
    scope: Scope
    dataset_ids: list[str]
    job_ids: list[str]
    model_ids: list[str]
    cancelled_job_ids: list[str]
    gallery_entries_removed: int = 0
    class_image_sets_removed: int = 0
    files_removed: int = 0
    events_removed: int = 0
    api_keys_removed: int = 0
    erase_time: float = 0.0
    #: Other inference replicas drop their cached copies within this many seconds of `erase_time`.
    replica_cache_bound_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "scope": self.scope.value}


class Eraser:
    """Erases subjects and tenants (the domain core of EraseSubject and EraseTenant; no gRPC here)."""

    def __init__(
        self,
        database: Database,
        storage: Storage,
        jobs: TrainingJobs,
        gallery: PromptStore,
        *,
        replica_cache_bound_seconds: float,
        cancel_wait_seconds: float = CANCEL_WAIT_SECONDS,
    ) -> None:
        self.database = database
        self.storage = storage
        self.jobs = jobs
        self.gallery = gallery
        self.replica_cache_bound_seconds = replica_cache_bound_seconds
        self.cancel_wait_seconds = cancel_wait_seconds

    # ---- entry points ------------------------------------------------------------------------------------

    def erase_subject(
        self, tenant: str, *, dataset_id: str = "", job_id: str = "", model_id: str = "", requested_by: str = ""
    ) -> ErasureReceipt:
        """Erase the subject that one of its ids names (exactly one of them). NotFound for unknown ids, other
        tenants' ids and a subject already erased."""
        named = [
            (name, value)
            for name, value in (("dataset_id", dataset_id), ("job_id", job_id), ("model_id", model_id))
            if value
        ]
        if len(named) != 1:
            raise InvalidArgument("name the subject by exactly one of dataset_id, job_id or model_id", field="subject")
        with self.database.read() as connection:
            lineage = self._subject_lineage(connection, tenant, *named[0])
        cancelled = self._stop_jobs(tenant, lineage)
        with self.database.read() as connection:
            lineage = self._subject_lineage(connection, tenant, *named[0])  # jobs queued meanwhile included
        return self._erase(tenant, Scope.SUBJECT, lineage, cancelled, requested_by)

    def erase_tenant(self, tenant: str, *, requested_by: str = "") -> ErasureReceipt:
        """Erase everything of a tenant. NotFound when it holds nothing (never had anything, or erased)."""
        with self.database.read() as connection:
            lineage = self._tenant_lineage(connection, tenant)
        cancelled = self._stop_jobs(tenant, lineage)
        with self.database.read() as connection:
            lineage = self._tenant_lineage(connection, tenant)
            has_rows = (
                lineage.dataset_ids or lineage.job_ids or lineage.model_ids or self._has_other_rows(connection, tenant)
            )
        if not has_rows and not self.storage.list(tenant_prefix(tenant)):
            raise NotFound(f"tenant {tenant!r} holds no data", field="tenant")
        return self._erase(tenant, Scope.TENANT, lineage, cancelled, requested_by)

    # ---- finding the lineage -----------------------------------------------------------------------------

    def _subject_lineage(self, connection: Connection, tenant: str, kind: str, value: str) -> Lineage:
        dataset_ids: set[str] = set()
        job_ids: set[str] = set()
        model_ids: set[str] = set()
        if kind == "model_id":
            row = connection.execute(
                sa.select(subject_models.c.job_id, subject_models.c.dataset_id).where(
                    subject_models.c.tenant == tenant, subject_models.c.model_id == value
                )
            ).first()
            if row is None:  # not published yet: the id its job reserved
                row = connection.execute(
                    sa.select(training_jobs.c.job_id, training_jobs.c.dataset_id).where(
                        training_jobs.c.tenant == tenant, training_jobs.c.model_id == value
                    )
                ).first()
            if row is None:
                raise NotFound(f"subject model {value!r} does not exist", field="model_id")
            model_ids.add(value)
            if row.job_id:  # an imported LoRA has no job; "" would match every other imported model
                job_ids.add(row.job_id)
            if row.dataset_id:
                dataset_ids.add(row.dataset_id)
        elif kind == "job_id":
            row = connection.execute(
                sa.select(training_jobs.c.dataset_id).where(
                    training_jobs.c.tenant == tenant, training_jobs.c.job_id == value
                )
            ).first()
            if row is None:
                raise NotFound(f"training job {value!r} does not exist", field="job_id")
            job_ids.add(value)
            if row.dataset_id:
                dataset_ids.add(row.dataset_id)
        else:
            known = connection.execute(
                sa.select(datasets.c.dataset_id).where(datasets.c.tenant == tenant, datasets.c.dataset_id == value)
            ).first()
            used = connection.execute(
                sa.select(training_jobs.c.job_id)
                .where(training_jobs.c.tenant == tenant, training_jobs.c.dataset_id == value)
                .limit(1)
            ).first()
            if known is None and used is None:
                raise NotFound(f"dataset {value!r} does not exist", field="dataset_id")
            dataset_ids.add(value)
        # Everything trained on those photos, and everything those jobs published.
        job_condition: sa.ColumnElement[bool] = training_jobs.c.job_id.in_(job_ids)
        model_condition: sa.ColumnElement[bool] = subject_models.c.job_id.in_(job_ids)
        if dataset_ids:
            job_condition = sa.or_(job_condition, training_jobs.c.dataset_id.in_(dataset_ids))
            model_condition = sa.or_(model_condition, subject_models.c.dataset_id.in_(dataset_ids))
        return self._complete(
            connection,
            tenant,
            Lineage(dataset_ids, job_ids, model_ids),
            training_jobs.c.tenant == tenant,
            job_condition,
            model_condition,
        )

    def _tenant_lineage(self, connection: Connection, tenant: str) -> Lineage:
        lineage = Lineage()
        lineage.dataset_ids.update(
            connection.execute(sa.select(datasets.c.dataset_id).where(datasets.c.tenant == tenant)).scalars()
        )
        return self._complete(connection, tenant, lineage, training_jobs.c.tenant == tenant, sa.true(), sa.true())

    def _complete(
        self,
        connection: Connection,
        tenant: str,
        lineage: Lineage,
        tenant_jobs: sa.ColumnElement[bool],
        job_condition: sa.ColumnElement[bool],
        model_condition: sa.ColumnElement[bool],
    ) -> Lineage:
        rows = connection.execute(
            sa.select(
                training_jobs.c.job_id,
                training_jobs.c.state,
                training_jobs.c.model_id,
                training_jobs.c.class_images_key,
            ).where(tenant_jobs, job_condition)
        ).all()
        for row in rows:
            lineage.job_ids.add(row.job_id)
            lineage.model_ids.add(row.model_id)  # reserved at creation; published or not
            if row.class_images_key:
                lineage.class_images_keys.add(row.class_images_key)
            if row.state not in _TERMINAL:
                lineage.active_job_ids.add(row.job_id)
        lineage.model_ids.update(
            connection.execute(
                sa.select(subject_models.c.model_id).where(subject_models.c.tenant == tenant, model_condition)
            ).scalars()
        )
        return lineage

    def _has_other_rows(self, connection: Connection, tenant: str) -> bool:
        for table in (api_keys, tenant_quotas, image_usage):
            if connection.execute(sa.select(sa.literal(1)).where(table.c.tenant == tenant).limit(1)).first():
                return True
        return self.gallery.count_by_tenant(tenant) > 0

    # ---- stopping jobs -----------------------------------------------------------------------------------

    def _stop_jobs(self, tenant: str, lineage: Lineage) -> list[str]:
        """Cancel the lineage's queued and running jobs and wait for their workers; the ids cancelled."""
        deadline = time.monotonic() + self.cancel_wait_seconds
        for job_id in sorted(lineage.active_job_ids):
            remaining = max(0.0, deadline - time.monotonic())
            record = self.jobs.cancel_job(tenant, job_id, wait_seconds=remaining)
            if record.state not in TERMINAL_STATES:
                raise Unavailable(
                    f"training job {job_id!r} is still stopping after {self.cancel_wait_seconds:.0f} s; nothing was "
                    "erased yet: retry the erasure"
                )
        return sorted(lineage.active_job_ids)

    # ---- erasing -----------------------------------------------------------------------------------------

    def _erase(
        self, tenant: str, scope: Scope, lineage: Lineage, cancelled: list[str], requested_by: str
    ) -> ErasureReceipt:
        receipt = ErasureReceipt(
            erasure_id=new_id("er"),
            tenant=tenant,
            scope=scope,
            dataset_ids=sorted(lineage.dataset_ids),
            job_ids=sorted(lineage.job_ids),
            model_ids=sorted(lineage.model_ids),
            cancelled_job_ids=cancelled,
            replica_cache_bound_seconds=self.replica_cache_bound_seconds,
        )
        files = 0
        for model_id in receipt.model_ids:  # models first: no replica starts loading one from here on
            files += self.storage.delete_prefix(model_prefix(tenant, model_id))
        for job_id in receipt.job_ids:
            files += self.storage.delete_prefix(job_prefix(tenant, job_id))
        for dataset_id in receipt.dataset_ids:
            files += self.storage.delete_prefix(dataset_prefix(tenant, dataset_id))
        if scope == Scope.TENANT:
            outcome = self.gallery.delete_by_tenant(tenant)
            receipt.gallery_entries_removed = outcome.entries
            files += outcome.files_removed
            files += self.storage.delete_prefix(tenant_prefix(tenant))  # whatever else the tenant had
        else:
            for model_id in receipt.model_ids:
                outcome = self.gallery.delete_by_subject(tenant, model_id)
                receipt.gallery_entries_removed += outcome.entries
                files += outcome.files_removed
        with self.database.transaction() as connection:
            receipt.events_removed, receipt.api_keys_removed = self._delete_rows(connection, tenant, scope, lineage)
            receipt.erase_time = connection.execute(sa.select(db_now())).scalar_one()
            receipt.files_removed = files
            receipt.class_image_sets_removed = 0
            unused = self._unused_class_image_sets(connection, lineage.class_images_keys)
        for key in unused:
            if self.storage.delete_prefix(class_images_prefix(key)):
                receipt.class_image_sets_removed += 1
        with self.database.transaction() as connection:
            connection.execute(
                sa.insert(erasures).values(
                    erasure_id=receipt.erasure_id,
                    tenant=tenant,
                    scope=scope.value,
                    requested_by=requested_by,
                    erase_time=receipt.erase_time,
                    receipt=receipt.to_dict(),
                )
            )
        log.info(
            "erased",
            extra={
                "erasure_id": receipt.erasure_id,
                "scope": scope.value,
                "datasets": len(receipt.dataset_ids),
                "jobs": len(receipt.job_ids),
                "models": len(receipt.model_ids),
                "files": files,
            },
        )
        return receipt

    def _delete_rows(self, connection: Connection, tenant: str, scope: Scope, lineage: Lineage) -> tuple[int, int]:
        job_ids = list(lineage.job_ids)
        in_lineage: sa.ColumnElement[bool] = training_jobs.c.job_id.in_(job_ids) | training_jobs.c.dataset_id.in_(
            list(lineage.dataset_ids)
        )
        if scope == Scope.TENANT:
            in_lineage = sa.true()
        started = connection.execute(
            sa.select(training_jobs.c.job_id)
            .where(training_jobs.c.tenant == tenant, in_lineage, training_jobs.c.state.not_in(_TERMINAL))
            .limit(1)
        ).scalar_one_or_none()
        if started is not None:
            raise Unavailable(
                f"training job {started!r} was queued on these photos during the erasure; retry the erasure"
            )
        events = connection.execute(
            sa.select(sa.func.count()).select_from(job_events).where(job_events.c.job_id.in_(job_ids))
        ).scalar_one()
        connection.execute(sa.delete(job_events).where(job_events.c.job_id.in_(job_ids)))
        connection.execute(sa.delete(job_leases).where(job_leases.c.job_id.in_(job_ids)))
        connection.execute(
            sa.delete(training_jobs).where(training_jobs.c.tenant == tenant, training_jobs.c.job_id.in_(job_ids))
        )
        connection.execute(
            sa.delete(subject_models).where(
                subject_models.c.tenant == tenant, subject_models.c.model_id.in_(list(lineage.model_ids))
            )
        )
        connection.execute(
            sa.delete(datasets).where(datasets.c.tenant == tenant, datasets.c.dataset_id.in_(list(lineage.dataset_ids)))
        )
        keys = 0
        if scope == Scope.TENANT:
            keys = connection.execute(sa.delete(api_keys).where(api_keys.c.tenant == tenant)).rowcount
            connection.execute(sa.delete(tenant_quotas).where(tenant_quotas.c.tenant == tenant))
            connection.execute(sa.delete(image_usage).where(image_usage.c.tenant == tenant))
        return int(events), int(keys)

    @staticmethod
    def _unused_class_image_sets(connection: Connection, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that no remaining job of any tenant trains with."""
        keys = sorted(keys)
        if not keys:
            return []
        still_used = set(
            connection.execute(
                sa.select(training_jobs.c.class_images_key).where(training_jobs.c.class_images_key.in_(keys))
            ).scalars()
        )
        return [key for key in keys if key not in still_used]
