"""The model repository: the base-model pool, the subject index and the subject cache of one server, composed.

* `base_pool`: base pipelines loaded once and kept; adapter switching.
* `subject_index`: subject manifests discovered in shared storage, listings, the deleted-subject sweep.
* `subject_cache`: subject models hot-loaded into a memory-bounded LRU with pins and eviction.
* `loading`: load states and `SingleFlight`, the one-load-per-key loader base models and subjects share.

`ModelRepository` is a thin facade over them: the engine and the batch runner use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import DiffusionPipeline

from likeness.inference.base_pool import BaseModel, BasePool, BaseStatus, module_bytes, pipeline_bytes
from likeness.inference.compiled import CompileOptions
from likeness.inference.loading import FAILED, FAILED_RETRY_SECONDS, LOADED, LOADING, NOT_LOADED, SingleFlight
from likeness.inference.subject_cache import CacheStats, SubjectCache, SubjectLease
from likeness.inference.subject_index import SubjectEntry, SubjectIndex, SubjectStatus
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.base import Storage
from likeness.storage.manifest import SubjectModelManifest

__all__ = [
    "FAILED",
    "FAILED_RETRY_SECONDS",
    "LOADED",
    "LOADING",
    "NOT_LOADED",
    "BaseModel",
    "BasePool",
    "BaseStatus",
    "CacheStats",
    "ModelRepository",
    "SingleFlight",
    "SubjectCache",
    "SubjectEntry",
    "SubjectIndex",
    "SubjectLease",
    "SubjectStatus",
    "module_bytes",
    "pipeline_bytes",
]


class ModelRepository:
    """Base and subject models of one inference server (see module doc)."""

    def __init__(
        self,
        storage: Storage,
        catalog: BaseModelCatalog,
        *,
        device: torch.device,
        dtype: torch.dtype,
        subject_budget_bytes: int,
        loader_threads: int = 2,
        compile_options: CompileOptions | None = None,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.device = device
        self.dtype = dtype
        # Loads go through `_load_base` and `_load_subject` looked up on this object at load time.
        self.pool = BasePool(
            catalog,
            device=device,
            dtype=dtype,
            load=lambda base_id: self._load_base(base_id),
            compile_options=compile_options,
        )
        self.index = SubjectIndex(storage)
        self.cache = SubjectCache(
            self.index,
            self.pool,
            subject_budget_bytes=subject_budget_bytes,
            loader_threads=loader_threads,
            load=lambda entry: self._load_subject(entry),
        )

    def close(self) -> None:
        self.cache.close()

    # ---- base models ------------------------------------------------------------------------------------

    def base(self, base_id: str) -> BaseModel:
        return self.pool.base(base_id)

    def _load_base(self, base_id: str) -> BaseModel:
        return self.pool.load_model(base_id)

    def base_statuses(self) -> list[BaseStatus]:
        return self.pool.base_statuses()

    def activate(self, base: BaseModel, entry: SubjectEntry | None) -> DiffusionPipeline:
        return self.pool.activate(base, entry)

    # ---- subjects: discovery ------------------------------------------------------------------------------

    def manifest(self, tenant: str, model_id: str, *, field: str = "subject_model_id") -> SubjectModelManifest:
        return self.index.manifest(tenant, model_id, field=field)

    def list_subjects(self, tenant: str, *, base_model: str = "", loaded_only: bool = False) -> list[SubjectStatus]:
        return self.index.list_subjects(tenant, base_model=base_model, loaded_only=loaded_only)

    def subject_status(self, tenant: str, model_id: str, *, read_storage: bool = True) -> SubjectStatus:
        return self.index.subject_status(tenant, model_id, read_storage=read_storage)

    def sweep_deleted(self) -> list[tuple[str, str]]:
        return self.index.sweep_deleted(self.cache.forget_subject)

    # ---- subjects: the cache ------------------------------------------------------------------------------

    def _load_subject(self, entry: SubjectEntry) -> None:
        self.cache.load_weights(entry)

    def prefetch(self, tenant: str, model_id: str) -> bool:
        return self.cache.prefetch(tenant, model_id)

    def load_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        return self.cache.load_subject(tenant, model_id)

    @contextmanager
    def acquire(self, tenant: str, model_id: str) -> Iterator[SubjectLease]:
        with self.cache.acquire(tenant, model_id) as lease:
            yield lease

    def unload_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        return self.cache.unload_subject(tenant, model_id)

    def forget_subject(self, tenant: str, model_id: str) -> bool:
        return self.cache.forget_subject(tenant, model_id)

    def loaded_subjects(self) -> list[SubjectStatus]:
        return self.cache.loaded_subjects()

    @property
    def stats(self) -> CacheStats:
        return self.cache.stats

    @property
    def subject_budget_bytes(self) -> int:
        return self.cache.subject_budget_bytes

    @property
    def used_bytes(self) -> int:
        return self.cache.used_bytes
