"""Training jobs as an API replica serves them: create, read, list, cancel, datasets. No gRPC here.

Life of a job: CreateTrainingJob validates the spec (`SpecValidator`; nothing is written for a bad one),
prepares and publishes inline photos as a dataset, and inserts the job QUEUED in the control-plane database
(`JobStore.create`: idempotency key, queue capacity and the first event in one transaction). Any worker of any
node then leases it (`likeness.trainer.leases`), trains it and ends it SUCCEEDED (the subject model is published),
FAILED or CANCELLED. Every replica reads the same rows, so any replica answers any RPC about any job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from likeness.dataset.options import PhotoInput, PrepareOptions
from likeness.dataset.prepare import prepare_photos
from likeness.dataset.report import summarize_rejections
from likeness.errors import InvalidArgument, Unavailable
from likeness.models.catalog import BaseModelCatalog
from likeness.net.egress import EgressPolicy
from likeness.storage.base import Storage
from likeness.storage.layout import dataset_prefix, job_prefix
from likeness.trainer.datasets import DatasetCatalog, PhotoSources, UploadCollector
from likeness.trainer.signals import Wakeup
from likeness.trainer.spec import SpecValidator
from likeness.trainer.states import TERMINAL_STATES, JobState
from likeness.trainer.store import JobRecord, JobStore
from likeness.trainer.webhooks import JobWebhook, WebhookOutbox, validate_webhook

log = logging.getLogger("likeness.trainer.jobs")

#: Priorities a caller may give a job (higher runs first).
MIN_PRIORITY, MAX_PRIORITY = -100, 100
#: How long CancelTrainingJob waits for the owning worker to stop a running job before it answers.
CANCEL_WAIT_SECONDS = 30.0


def request_digest(
    spec: Mapping[str, Any],
    priority: int,
    photos: Sequence[PhotoInput],
    dataset_options: PrepareOptions | None,
    dataset_name: str,
    *,
    photo_uris: Sequence[str] = (),
    webhook: Mapping[str, Any] | None = None,
) -> str:
    """SHA-256 of everything a CreateTrainingJob request asks for, photos by their own digests (photo URIs and a
    webhook only when given, so the digests of requests without them stay what they were)."""
    document: dict[str, Any] = {
        "spec": spec,
        "priority": priority,
        "photos": [[photo.name, hashlib.sha256(photo.data).hexdigest(), photo.caption] for photo in photos],
        "dataset_options": dataclasses.asdict(dataset_options) if dataset_options is not None else None,
        "dataset_name": dataset_name,
    }
    if photo_uris:
        document["photo_uris"] = list(photo_uris)
    if webhook is not None:
        document["webhook"] = {
            **{k: v for k, v in webhook.items() if k != "secret"},
            "secret_sha256": hashlib.sha256(str(webhook.get("secret", "")).encode()).hexdigest(),
        }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _same_request(existing: JobRecord, digest: str) -> JobRecord:
    """The job a retried request created; InvalidArgument when the key came with a different request."""
    if existing.request_digest and digest and existing.request_digest != digest:
        raise InvalidArgument(
            f"was already used for job {existing.job_id!r} with a different request; send a new idempotency key "
            "for a new job, or the same request to get that job",
            field="idempotency_key",
        )
    return existing


class TrainingJobs:
    """The trainer's domain core on an API replica."""

    def __init__(
        self,
        store: JobStore,
        storage: Storage,
        catalog: BaseModelCatalog,
        datasets: DatasetCatalog,
        validator: SpecValidator,
        *,
        queue_capacity: int = 16,
        work_available: Wakeup | None = None,
        heartbeat_now: Wakeup | None = None,
        webhook_policy: EgressPolicy | None = None,
        photo_sources: PhotoSources | None = None,
        webhook_outbox: WebhookOutbox | None = None,
        on_event_written: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.catalog = catalog
        self.datasets = datasets
        self.validator = validator
        self.queue_capacity = queue_capacity
        # Set when this process also runs workers (role `all`): they react at once instead of at their next poll.
        self.work_available = work_available or Wakeup()
        self.heartbeat_now = heartbeat_now or Wakeup()
        #: Where webhook URLs may point (checked at creation; the dispatcher checks again at every attempt).
        self.webhook_policy = webhook_policy or EgressPolicy()
        #: Reads `photo_uris`: storage keys, s3:// objects of the deployment, https:// URLs.
        self.photo_sources = photo_sources or PhotoSources(storage)
        self.webhook_outbox = webhook_outbox or WebhookOutbox(store.database)
        #: Called with a job id after this replica wrote one of its events (wakes the webhook dispatcher).
        self.on_event_written = on_event_written or (lambda job_id: None)
        self.accepting = True

    @property
    def default_base_model(self) -> str:
        return self.validator.default_base_model

    def create_job(
        self,
        tenant: str,
        spec: Mapping[str, Any],
        *,
        idempotency_key: str = "",
        priority: int = 0,
        photos: Sequence[PhotoInput] = (),
        dataset_options: PrepareOptions | None = None,
        dataset_name: str = "",
        photo_uris: Sequence[str] = (),
        webhook: Mapping[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queues a job; returns (record, existing). `existing` is True when the idempotency key matched.

        `photo_uris` are fetched (after the spec is validated) and prepared with the inline `photos`; `webhook`
        (url, secret, send_progress, progress_interval_seconds) receives the job's events.
        """
        if not self.accepting:
            raise Unavailable("the trainer is shutting down; retry on another replica")
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidArgument(f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}", field="priority")
        digest = (
            request_digest(
                spec, priority, photos, dataset_options, dataset_name, photo_uris=photo_uris, webhook=webhook
            )
            if idempotency_key
            else ""
        )
        existing = self.store.find_by_idempotency_key(tenant, idempotency_key)
        if existing is not None:
            return _same_request(existing, digest), True
        config, base = self.validator.validate(tenant, spec, inline_photos=bool(photos) or bool(photo_uris))
        hook = validate_webhook(self.webhook_policy, **webhook) if webhook is not None else None
        self.store.check_capacity(self.queue_capacity)
        if photo_uris:
            collector = UploadCollector()
            self.photo_sources.collect(tenant, photo_uris, collector, reserved_names=[p.name for p in photos])
            photos = [*photos, *collector.photos()]
        dataset_id = ""
        if photos:
            options = dataset_options or PrepareOptions(resolution=config.resolution or base.resolution)
            prepared = prepare_photos(list(photos), options)
            if prepared.rejected:
                raise InvalidArgument(
                    f"{len(prepared.rejected)} of {len(photos)} photos cannot be used: "
                    f"{summarize_rejections(prepared.reports)}",
                    field="photos",
                )
            if dataset_name:
                prepared.options["display_name"] = dataset_name
            dataset_id = self.datasets.publish(tenant, prepared, options, source="inline").dataset_id
            config.dataset_id = dataset_id
            config.resolution = config.resolution or options.resolution
        try:
            record, existing_job = self.store.create(
                tenant,
                config,
                capacity=self.queue_capacity,
                idempotency_key=idempotency_key,
                priority=priority,
                request_digest=digest,
                webhook=hook,
            )
        except BaseException:
            self._discard_dataset(tenant, dataset_id)
            raise
        if existing_job:
            # A concurrent call with the same key won while the photos were prepared.
            self._discard_dataset(tenant, dataset_id)
            return _same_request(record, digest), True
        log.info("job queued", extra={"job_id": record.job_id, "base_model": config.base_model})
        self.work_available.set()
        self.on_event_written(record.job_id)
        return record, False

    def _discard_dataset(self, tenant: str, dataset_id: str) -> None:
        """Removes an inline dataset whose job was not created (the database may be the reason: best effort)."""
        if not dataset_id:
            return
        try:
            self.datasets.discard(tenant, dataset_id)
        except Unavailable:
            log.warning("could not remove the dataset's row", extra={"dataset_id": dataset_id})
        self.storage.delete_prefix(dataset_prefix(tenant, dataset_id))

    def delete_job(self, tenant: str, job_id: str) -> tuple[JobRecord, int]:
        """Delete an ended job: its rows first (then no reader finds it), then its files. Returns the record and
        how many files left storage. The subject model it published and its dataset stay."""
        record = self.store.delete_job(tenant, job_id)
        removed = self.storage.delete_prefix(job_prefix(tenant, job_id))
        log.info("job deleted", extra={"job_id": job_id, "files": removed})
        return record, removed

    def delete_dataset(self, tenant: str, dataset_id: str) -> int:
        """Delete a dataset no queued or running job uses: its row, then its files (the manifest first, so no
        reader treats a half-deleted folder as published). Returns how many files left storage."""
        self.datasets.get(tenant, dataset_id)  # NotFound for unknown ids and other tenants' ids
        self.store.delete_dataset(tenant, dataset_id, unless_in_use=True)
        removed = self.storage.delete_prefix(dataset_prefix(tenant, dataset_id))
        log.info("dataset deleted", extra={"dataset_id": dataset_id, "files": removed})
        return removed

    def get_job(self, tenant: str, job_id: str) -> JobRecord:
        return self.store.get(tenant, job_id)

    def list_jobs(
        self, tenant: str, states: Sequence[JobState] = (), page_size: int = 0, page_token: str = ""
    ) -> tuple[list[JobRecord], str]:
        return self.store.list(tenant, states, page_size, page_token)

    def queue_positions(self, records: Sequence[JobRecord]) -> dict[str, int]:
        return self.store.queue_positions(records)

    def webhooks_of(self, records: Sequence[JobRecord]) -> dict[str, JobWebhook]:
        """The webhook (no secret) and latest deliveries of each job that has one."""
        return self.webhook_outbox.for_jobs(record.job_id for record in records)

    def cancel_job(self, tenant: str, job_id: str, *, wait_seconds: float = CANCEL_WAIT_SECONDS) -> JobRecord:
        """Cancels a queued job at once; a running one once its worker stopped it (its next heartbeat), waiting
        up to `wait_seconds` for that before answering with the job as it stands."""
        record = self.store.request_cancel(tenant, job_id)
        if record.state in TERMINAL_STATES:
            self.on_event_written(job_id)
            return record
        self.heartbeat_now.set()
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
            record = self.store.get(tenant, job_id)
            if record.state in TERMINAL_STATES:
                break
        return record
