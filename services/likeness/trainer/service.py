"""The trainer as a ServiceComponent of the shared server bootstrap: `TrainerComponent(settings)`.

One binary, three roles (`--role`): `api` answers every TrainerService RPC from the control-plane database (any
number of CPU replicas behind one Service); `worker` runs one supervisor per device that leases and trains jobs
(any number of GPU replicas); `all` is both in one process, the embedded default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.erasure.eraser import Eraser
from likeness.errors import Unavailable
from likeness.gallery.store import PromptStore
from likeness.identity.quotas import Quotas
from likeness.models.catalog import BaseModelCatalog
from likeness.server.settings import Settings
from likeness.storage.factory import open_storage
from likeness.trainer import metrics
from likeness.trainer.datasets import DatasetCatalog, PhotoSources
from likeness.trainer.devices import device_slots
from likeness.trainer.jobs import TrainingJobs
from likeness.trainer.leases import LeaseQueue
from likeness.trainer.servicer import TrainerServicer, add_to_server
from likeness.trainer.signals import Wakeup
from likeness.trainer.spec import SpecValidator
from likeness.trainer.states import JobState
from likeness.trainer.store import STOP_CHANNEL, WORK_CHANNEL, JobStore
from likeness.trainer.supervisor import WorkerOptions, WorkerSupervisor
from likeness.trainer.watch import EventFollower
from likeness.trainer.webhook_dispatcher import WebhookDispatcher
from likeness.trainer.webhooks import WebhookOutbox
from likeness_client.v1 import trainer_service_pb2 as pb

log = logging.getLogger("likeness.trainer")

ROLES = ("all", "api", "worker")
#: How often the component checks the database (health) and refreshes the queue gauges.
MONITOR_SECONDS = 2.0


class TrainerComponent:
    """Serves likeness.trainer.v1.TrainerService (roles api, all) and trains leased jobs (roles worker, all).

    `metric_hooks` ("package.module:function") add metrics to every published subject model's manifest;
    `settings.trainer_processes_per_job` > 1 trains each job data-parallel on that many processes (devices) under
    `accelerate launch`; a job's `spec.processes` may ask for fewer.
    """

    name = "trainer"

    def __init__(self, settings: Settings, *, metric_hooks: Sequence[str] = ()) -> None:
        self.settings = settings
        self.role = settings.role
        # A worker serves health and metrics only: it neither registers nor advertises TrainerService.
        trainer_service = pb.DESCRIPTOR.services_by_name["TrainerService"].full_name
        self.service_names: tuple[str, ...] = () if self.role == "worker" else (trainer_service,)
        self.database = Database(settings.resolved_database_url)
        self.store = JobStore(self.database, Quotas(self.database, settings.quota_limits))
        self.storage = open_storage(settings.storage_url, cache_dir=Path(settings.cache_dir) / "storage")
        self.catalog = BaseModelCatalog(settings.base_models, Path(settings.cache_dir) / "base-models")
        work_available, heartbeat_now = Wakeup(), Wakeup()
        self._work_available, self._heartbeat_now = work_available, heartbeat_now
        self.follower = EventFollower(self.store, poll_seconds=settings.watch_poll_ms / 1000.0)
        processes_per_job = settings.trainer_processes_per_job
        slots = device_slots(settings.device, processes_per_job) if self.role in ("worker", "all") else []
        self.datasets = DatasetCatalog(self.storage, self.store)
        validator = SpecValidator(
            self.catalog,
            self.datasets.resolution,
            default_base_model=settings.default_base_model,
            worker_devices=[slot.worker_device for slot in slots],
        )
        self.webhook_outbox = WebhookOutbox(self.database)
        # The API replicas send the webhooks; workers only queue them with the events they write.
        self.dispatcher: WebhookDispatcher | None = None
        if self.role != "worker":
            self.dispatcher = WebhookDispatcher(
                self.webhook_outbox,
                settings.webhook_policy,
                timeout_seconds=settings.webhook_timeout_seconds,
                max_attempts=settings.webhook_max_attempts,
                backoff_seconds=settings.webhook_backoff_seconds,
                poll_seconds=min(1.0, max(settings.webhook_backoff_seconds, 0.05)),
            )
        self.jobs = TrainingJobs(
            self.store,
            self.storage,
            self.catalog,
            self.datasets,
            validator,
            queue_capacity=settings.trainer_queue_capacity,
            work_available=work_available,
            heartbeat_now=heartbeat_now,
            webhook_policy=settings.webhook_policy,
            photo_sources=PhotoSources(
                self.storage,
                settings.fetch_policy,
                max_bytes=settings.fetch_max_mb * 1024 * 1024,
                timeout_seconds=settings.fetch_timeout_seconds,
            ),
            webhook_outbox=self.webhook_outbox,
            on_event_written=self._event_written,
        )
        eraser = Eraser(
            self.database,
            self.storage,
            self.jobs,
            PromptStore(self.database, self.storage),
            replica_cache_bound_seconds=settings.subject_sweep_seconds,
        )
        self.servicer = TrainerServicer(self.jobs, self.follower, eraser)
        options = WorkerOptions(
            storage_url=settings.storage_url,
            base_models=settings.base_models,
            cache_dir=str(Path(settings.cache_dir) / "base-models"),
            work_root=Path(settings.cache_dir) / "trainer-work",
            progress_interval_seconds=settings.trainer_progress_interval_seconds,
            metric_hooks=tuple(metric_hooks),
            processes_per_job=processes_per_job,
            heartbeat_seconds=settings.heartbeat_seconds,
            torch_threads=settings.torch_threads,
            preload_base_model=settings.default_base_model if settings.default_base_model in self.catalog else "",
        )
        leases = LeaseQueue(self.database, lease_seconds=settings.lease_seconds)
        self.supervisors = [
            WorkerSupervisor(
                leases,
                slot,
                options,
                work_available=work_available,
                heartbeat_now=heartbeat_now,
                on_event_written=self._event_written,
            )
            for slot in slots
        ]
        self._listener_stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._report_health: Callable[[bool], object] | None = None
        self._database_up = True

    def _event_written(self, job_id: str) -> None:
        """This process wrote an event of `job_id`: wake its watchers' poller and the webhook dispatcher."""
        self.follower.notify(job_id)
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def register(self, server: grpc.aio.Server) -> None:
        if self.role != "worker":
            add_to_server(self.servicer, server)

    def bind_health(self, report: Callable[[bool], object]) -> None:
        """The bootstrap's callback that sets this component's health (SERVING / NOT_SERVING)."""
        self._report_health = report

    async def start(self) -> None:
        """Migrates the database, materialises the default base model, starts the poller and the supervisors."""
        try:
            await asyncio.to_thread(migrate, self.database)
        except Unavailable as error:
            raise Unavailable(f"cannot start the trainer: {error.message}") from None
        if self.settings.default_base_model in self.catalog:
            await asyncio.to_thread(self.catalog.resolve, self.settings.default_base_model)
        await self.follower.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        for supervisor in self.supervisors:
            supervisor.start()
        if self.supervisors and self.database.is_postgresql:
            # Workers hear of new jobs and cancel requests from any API replica at once, not at their next poll.
            self._listener = threading.Thread(target=self._listen, name="trainer-listen", daemon=True)
            self._listener.start()
        self._monitor = asyncio.create_task(self._watch_database(), name="trainer-database-monitor")
        log.info("trainer started", extra={"role": self.role, "database": self.database.where})

    def _listen(self) -> None:
        def on_notify(channel: str, payload: str) -> None:
            (self._work_available if channel == WORK_CHANNEL else self._heartbeat_now).set()

        self.database.listen([WORK_CHANNEL, STOP_CHANNEL], on_notify, self._listener_stop)

    async def _watch_database(self) -> None:
        """Health follows the database: NOT_SERVING while it is unreachable, SERVING again when it is back."""
        while True:
            try:
                counts = await asyncio.to_thread(self.store.count_by_state)
                up = True
            except Unavailable:
                counts, up = None, False
            except Exception:
                log.exception("database monitor failed")
                counts, up = None, False
            if counts is not None:
                for state in JobState:
                    metrics.JOBS.labels(state.value).set(counts[state])
                metrics.QUEUE_DEPTH.set(counts[JobState.QUEUED])
            metrics.DATABASE_UP.set(1 if up else 0)
            if up != self._database_up:
                self._database_up = up
                log.warning("control-plane database %s", "is back" if up else "is unreachable")
                if self._report_health is not None:
                    result = self._report_health(up)
                    if asyncio.iscoroutine(result):
                        await result
            await asyncio.sleep(MONITOR_SECONDS)

    async def stop(self, grace_seconds: float) -> None:
        self.jobs.accepting = False
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        self._listener_stop.set()
        await asyncio.gather(*(asyncio.to_thread(s.stop, grace_seconds) for s in self.supervisors))
        if self.dispatcher is not None:
            await asyncio.to_thread(self.dispatcher.stop, min(grace_seconds, self.settings.webhook_timeout_seconds))
        await self.follower.stop()
        await asyncio.to_thread(self.database.dispose)
