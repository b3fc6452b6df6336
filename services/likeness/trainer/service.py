"""The trainer as a ServiceComponent of the shared server bootstrap: `TrainerComponent(settings)`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc

from likeness.models.catalog import BaseModelCatalog
from likeness.server.settings import Settings
from likeness.storage.base import open_storage
from likeness.trainer.jobs import JobManager, WorkerOptions, device_slots
from likeness.trainer.servicer import TrainerServicer, add_to_server
from likeness.trainer.v1 import trainer_service_pb2 as pb


class TrainerComponent:
    """Serves likeness.trainer.v1.TrainerService; runs queued jobs on this machine's devices.

    `metric_hooks` ("package.module:function") add metrics to every published subject model's manifest;
    `processes_per_job` > 1 trains each job data-parallel on that many processes under `accelerate launch`.
    """

    name = "trainer"
    service_names = (pb.DESCRIPTOR.services_by_name["TrainerService"].full_name,)

    def __init__(self, settings: Settings, *, metric_hooks: Sequence[str] = (), processes_per_job: int = 1) -> None:
        self.settings = settings
        storage = open_storage(settings.storage_url, cache_dir=Path(settings.cache_dir) / "storage")
        catalog = BaseModelCatalog(settings.base_models, Path(settings.cache_dir) / "base-models")
        worker = WorkerOptions(
            storage_url=settings.storage_url,
            base_models=settings.base_models,
            cache_dir=str(Path(settings.cache_dir) / "base-models"),
            progress_interval_seconds=settings.trainer_progress_interval_seconds,
            metric_hooks=tuple(metric_hooks),
            processes_per_job=processes_per_job,
            work_root=Path(settings.cache_dir) / "trainer-work",
        )
        self.manager = JobManager(
            storage,
            catalog,
            worker,
            slots=device_slots(settings.device),
            queue_capacity=settings.trainer_queue_capacity,
            default_base_model=settings.default_base_model,
        )
        self.servicer = TrainerServicer(self.manager)

    def register(self, server: grpc.aio.Server) -> None:
        add_to_server(self.servicer, server)

    async def start(self) -> None:
        """Recovers jobs from storage, materialises the default base model, then starts the device runners."""
        await asyncio.to_thread(self.manager.recover)
        if self.settings.default_base_model in self.manager.catalog:
            await asyncio.to_thread(self.manager.catalog.resolve, self.settings.default_base_model)
        self.manager.start()

    async def stop(self, grace_seconds: float) -> None:
        await asyncio.to_thread(self.manager.stop, grace_seconds)
