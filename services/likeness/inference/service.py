"""`InferenceComponent`: the inference service as the shared server bootstrap runs it."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings

import grpc

from likeness.errors import InvalidArgument
from likeness.identity.quotas import Quotas
from likeness.inference.compiled import CompileOptions
from likeness.inference.deletion import sweep_subjects
from likeness.inference.engine import InferenceEngine
from likeness.inference.gallery_link import GalleryLink
from likeness.inference.lora_import import ControlPlaneModels
from likeness.inference.repository import ModelRepository
from likeness.inference.servicer import InferenceServicer
from likeness.models.catalog import BaseModelCatalog
from likeness.runtime import inference_dtype, resolve_device
from likeness.server.settings import Settings
from likeness.storage.base import Storage
from likeness.storage.factory import open_storage
from likeness_client.v1 import inference_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "likeness.inference.v1.InferenceService"
# Images travel in chunks well below gRPC's message limit; 1 MiB keeps per-message memory small.
DEFAULT_CHUNK_BYTES = 1024 * 1024
# Room for the other fields of an ImageChunk message and protobuf framing.
_MESSAGE_OVERHEAD_BYTES = 64 * 1024


def chunk_bytes_for(settings: Settings) -> int:
    """Largest chunk that fits the configured message limit, at most 1 MiB."""
    return max(1024, min(DEFAULT_CHUNK_BYTES, settings.max_message_mb * 1024 * 1024 - _MESSAGE_OVERHEAD_BYTES))


def compile_options(settings: Settings) -> CompileOptions | None:
    """The compiled-serving options of `--compile-unet`, or None (eager)."""
    if not settings.compile_unet:
        return None
    try:
        buckets = tuple(sorted({int(size) for size in settings.compile_buckets.split(",") if size.strip()}))
    except ValueError as exc:
        raise InvalidArgument(
            f"must be batch sizes separated by commas, e.g. 1,2,4,8; got {settings.compile_buckets!r}",
            field="compile_buckets",
        ) from exc
    if not buckets or buckets[0] <= 0:
        raise InvalidArgument("must list positive batch sizes, e.g. 1,2,4,8", field="compile_buckets")
    return CompileOptions(backend=settings.compile_backend, rank_capacity=settings.compile_lora_rank, buckets=buckets)


def _counts_images(settings: Settings) -> bool:
    """Whether generation counts images against quotas: with a default limit, or whenever callers are told
    apart (per-tenant overrides only matter then). Otherwise the hot path never touches the database."""
    return bool(settings.quota_images_per_minute) or settings.auth != "none" or settings.mtls_tenants


def _quiet_library_logs() -> None:
    # Per-load chatter that says nothing to an operator: "No LoRA keys associated to CLIPTextModel" for UNet-only
    # LoRAs, and peft's notice that a model now holds several adapters, which is exactly the design.
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
    # diffusers 0.42 renamed `torch_dtype` to `dtype`; older supported versions know only `torch_dtype`.
    warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)


class InferenceComponent:
    """Generates images of subjects; see docs/inference.md.

    `storage`, `catalog`, `subject_cache_bytes` and `chunk_bytes` override what `settings` would give (tests
    and benchmarks use them for small budgets and chunks).
    """

    name = "inference"
    service_names: tuple[str, ...] = (SERVICE_NAME,)

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        catalog: BaseModelCatalog | None = None,
        subject_cache_bytes: int | None = None,
        chunk_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self._storage = storage
        self._catalog = catalog
        self._subject_cache_bytes = subject_cache_bytes or settings.subject_cache_mb * 1024 * 1024
        self.chunk_bytes = chunk_bytes or chunk_bytes_for(settings)
        self.engine: InferenceEngine | None = None
        self._stop_sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._quotas: Quotas | None = None
        self._quotas_lock = threading.Lock()
        self.gallery = GalleryLink(
            settings.resolved_database_url,
            self._open_storage,
            record_by_default=settings.gallery_record_generations,
        )

    def _quota_checks(self) -> Quotas:
        """The tenants' quotas (the database opens on first use)."""
        with self._quotas_lock:
            if self._quotas is None:
                self._quotas = Quotas(self.gallery.database(), self.settings.quota_limits)
            return self._quotas

    def _consume_images(self, tenant: str, count: int) -> None:
        """Counts images against the tenant's images-per-minute quota."""
        self._quota_checks().consume_images(tenant, count)

    def _open_storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.settings.storage_url, cache_dir=self.settings.cache_path / "storage")
        return self._storage

    def register(self, server: grpc.aio.Server) -> None:
        servicer = InferenceServicer(lambda: self.engine, self.chunk_bytes, self.gallery)
        pb_grpc.add_InferenceServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        self.engine = await asyncio.to_thread(self._build)
        self.engine.start()
        # Subjects deleted through another replica leave this one within subject_sweep_seconds.
        self._sweeper = threading.Thread(
            target=sweep_subjects,
            args=(self.engine.sweep_deleted, self._stop_sweeping, self.settings.subject_sweep_seconds),
            name="likeness-subject-sweep",
            daemon=True,
        )
        self._sweeper.start()

    def _build(self) -> InferenceEngine:
        _quiet_library_logs()
        settings = self.settings
        storage = self._open_storage()
        catalog = self._catalog or BaseModelCatalog(settings.base_models, cache_dir=settings.cache_path / "base-models")
        device = resolve_device(settings.device)
        compiling = compile_options(settings)
        repository = ModelRepository(
            storage,
            catalog,
            device=device,
            dtype=inference_dtype(device),
            subject_budget_bytes=self._subject_cache_bytes,
            compile_options=compiling,
        )
        engine = InferenceEngine(
            repository,
            default_base_model=settings.default_base_model,
            queue_capacity=settings.inference_queue_capacity,
            batch_window_s=settings.batch_window_ms / 1000,
            # A compiled UNet has graphs for its buckets only.
            max_batch_images=min(settings.max_batch_images, max(compiling.buckets))
            if compiling
            else settings.max_batch_images,
            image_quota=self._consume_images if _counts_images(settings) else None,
            model_records=ControlPlaneModels(self.gallery.database, self._quota_checks),
        )
        preload = [name.strip() for name in settings.preload_base_models.split(",") if name.strip()]
        if "*" in preload:
            preload = catalog.ids()
        for base_id in preload:
            repository.base(base_id)
        log.info("inference ready", extra={"device": str(device), "preloaded": ",".join(preload)})
        return engine

    async def stop(self, grace_seconds: float) -> None:
        self._stop_sweeping.set()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop, grace_seconds)
        await asyncio.to_thread(self.gallery.close)
