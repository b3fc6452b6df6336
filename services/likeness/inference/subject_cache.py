"""The subject cache: subject models hot-loaded into a memory-bounded LRU, with pins and eviction.

Subject models are loaded on first use (or by `load_subject`, to pre-warm) and evicted least recently used first
when the cache would exceed its memory budget, or by `unload_subject`.

* **LoRA subjects and styles** are read once into `LoraLayers` on the device; the base pipeline's router applies
  them per sample (see `base_pool` and `lora_routing`).
* **Full fine-tunes** load only their UNet (and their text encoders when the trainer fine-tuned those); their
  pipeline is built with `from_pipe` and shares every other component of the base pipeline (VAE, tokenizers,
  scheduler, text encoders).

Concurrency: the index's `lock` guards the bookkeeping and is never held during I/O or while taking a base
model's `lock`. A subject in use by a batch is pinned: eviction and unloading take it out of the cache at once
(new requests reload it) but free its memory only when the batch releases it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from likeness.errors import FailedPrecondition, LikenessError, ResourceExhausted
from likeness.inference import metrics
from likeness.inference.base_pool import BaseModel, BasePool, module_bytes
from likeness.inference.loading import FAILED, FAILED_RETRY_SECONDS, LOADED, LOADING, NOT_LOADED, SingleFlight
from likeness.inference.subject_files import read_full_fine_tune, read_lora
from likeness.inference.subject_index import SubjectEntry, SubjectIndex, SubjectStatus, status_of
from likeness.storage.layout import model_prefix

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    """Counters since start-up (also exported as Prometheus metrics)."""

    hits: int = 0
    misses: int = 0
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0


@dataclass
class SubjectLease:
    """A pinned, loaded subject for one batch; `release()` (or the context manager) unpins it."""

    entry: SubjectEntry
    # True when the subject had been evicted since the request was admitted and was loaded again for it.
    reloaded: bool


class SubjectCache:
    """Loaded subject models of one inference server (see module doc).

    `load` loads one entry's weights (default: `load_weights`); the repository passes its own to keep it
    patchable.
    """

    def __init__(
        self,
        index: SubjectIndex,
        pool: BasePool,
        *,
        subject_budget_bytes: int,
        loader_threads: int = 2,
        load: Callable[[SubjectEntry], None] | None = None,
    ) -> None:
        self.index = index
        self.pool = pool
        self.storage = index.storage
        self.subject_budget_bytes = subject_budget_bytes
        self.stats = CacheStats()
        self._lock = index.lock
        # Loaded subjects, least recently used first.
        self._lru: OrderedDict[tuple[str, str], SubjectEntry] = OrderedDict()
        self._used_bytes = 0
        load_weights = load or self.load_weights

        def load_entry(entry: SubjectEntry) -> SubjectEntry:
            started = time.perf_counter()
            load_weights(entry)
            entry.load_seconds = time.perf_counter() - started
            return entry

        # Keyed by entry, not by subject: an evicted entry's load never serves its replacement.
        self._loads: SingleFlight[SubjectEntry, SubjectEntry] = SingleFlight(
            load_entry,
            lock=self._lock,
            settle=self._settle_locked,
            finish=self._finish,
            thread_name="likeness-subject-load",
        )
        self._loader = ThreadPoolExecutor(max_workers=loader_threads, thread_name_prefix="likeness-loader")
        index.loaded_ids_locked = lambda tenant: [model_id for (t, model_id) in self._lru if t == tenant]

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    # ---- loading ------------------------------------------------------------------------------------------

    def _start_load_locked(self, entry: SubjectEntry) -> Future:
        """Under `_lock`: the future of the entry's load, starting it unless one runs (one load per subject)."""
        future, started = self._loads.join_locked(entry)
        if started:
            entry.state = LOADING
            entry.failure_reason = ""
            self._loader.submit(self._loads.run, entry, future)
        return future

    def prefetch(self, tenant: str, model_id: str) -> bool:
        """Count a cache hit or miss for a new request and start loading the subject in the background if needed.

        Returns True when it is loaded already. A recent failure is raised as FailedPrecondition.
        """
        entry = self.index.entry(tenant, model_id)
        with self._lock:
            if entry.state == LOADED:
                self._lru.move_to_end(entry.key)
                self.stats.hits += 1
                metrics.CACHE_HITS.inc()
                return True
            if entry.state == FAILED and not self._retry_due(entry):
                raise FailedPrecondition(f"subject model {model_id!r} cannot be loaded: {entry.failure_reason}")
            self.stats.misses += 1
            metrics.CACHE_MISSES.inc()
            self._start_load_locked(entry)
            return False

    def load_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        """Load (pre-warm) a subject and wait for it; retries a failed one at once."""
        while True:
            entry = self.index.entry(tenant, model_id, field="model_id")
            with self._lock:
                if entry.state == LOADED:
                    self._lru.move_to_end(entry.key)
                    return status_of(entry)
                if entry.state == FAILED:
                    entry.state = NOT_LOADED
                future = self._start_load_locked(entry)
            future.result()

    @contextmanager
    def acquire(self, tenant: str, model_id: str) -> Iterator[SubjectLease]:
        """Pin a loaded subject for one batch, loading it first if needed (waiting for a load in progress).

        Hits and misses are counted by `prefetch` when a request is admitted, not here. Never call it while
        holding a base model's `lock`: a load attaches the subject under that lock.
        """
        lease = self._acquire(tenant, model_id)
        try:
            yield lease
        finally:
            self._release(lease.entry)

    def _acquire(self, tenant: str, model_id: str) -> SubjectLease:
        reloaded = False
        while True:
            entry = self.index.entry(tenant, model_id)
            with self._lock:
                if entry.state == LOADED:
                    entry.pins += 1
                    self._lru.move_to_end(entry.key)
                    return SubjectLease(entry, reloaded=reloaded)
                if entry.state == FAILED and not self._retry_due(entry):
                    raise FailedPrecondition(f"subject model {model_id!r} cannot be loaded: {entry.failure_reason}")
                if entry.state == NOT_LOADED and not reloaded:
                    # Evicted between the request's admission (which counted its hit or miss) and its batch.
                    reloaded = True
                    self.stats.misses += 1
                    metrics.CACHE_MISSES.inc()
                future = self._start_load_locked(entry)
            try:
                future.result()
            except LikenessError:
                continue  # recorded as FAILED: the loop raises it with the reason

    def _release(self, entry: SubjectEntry) -> None:
        with self._lock:
            entry.pins -= 1
            free_now = entry.doomed and entry.pins == 0
        if free_now:
            self._free(entry)
        self._evict_to_budget()

    @staticmethod
    def _retry_due(entry: SubjectEntry) -> bool:
        return time.monotonic() - entry.failed_at >= FAILED_RETRY_SECONDS

    def _settle_locked(self, entry: SubjectEntry, _: SubjectEntry | None, error: BaseException | None) -> None:
        """Under `_lock`, as a load ends: record its outcome."""
        if error is not None:
            entry.state = FAILED
            entry.failure_reason = _reason(error)
            entry.failed_at = time.monotonic()
            self.stats.load_failures += 1
            return
        entry.state = LOADED
        self._lru[entry.key] = entry
        self._used_bytes += entry.memory_bytes
        self.stats.loads += 1

    def _finish(self, entry: SubjectEntry, _: SubjectEntry | None, error: BaseException | None) -> Exception | None:
        """After a load ended, before its waiters wake: metrics, logs, and room in the cache."""
        if error is not None:
            reason = _reason(error)
            metrics.LOAD_FAILURES.inc()
            log.warning("subject model failed to load", extra={"model_id": entry.model_id, "reason": reason})
            if isinstance(error, LikenessError):
                return None
            return FailedPrecondition(f"subject model {entry.model_id!r} cannot be loaded: {reason}")
        metrics.LOAD_SECONDS.labels(entry.method).observe(entry.load_seconds)
        log.info(
            "subject model loaded",
            extra={"model_id": entry.model_id, "method": entry.method, "seconds": round(entry.load_seconds, 3)},
        )
        # Make room before waking the waiters, sparing the new entry: they are about to pin it.
        self._evict_to_budget(keep=entry)
        self._update_gauges()
        return None

    def load_weights(self, entry: SubjectEntry) -> None:
        """Load one entry's weights onto its base model (runs on a short-lived loading thread)."""
        manifest = entry.manifest
        if manifest is None:
            raise FailedPrecondition(f"subject model {entry.model_id!r} has no readable manifest")
        catalog = self.pool.catalog
        if manifest.base_model not in catalog:
            raise FailedPrecondition(
                f"subject model {entry.model_id!r} was trained on base model {manifest.base_model!r}, which this "
                f"server does not offer (it offers {', '.join(catalog.ids())})"
            )
        base = self.pool.base(manifest.base_model)
        if manifest.arch != base.arch:
            raise FailedPrecondition(
                f"subject model {entry.model_id!r} is for architecture {manifest.arch!r} but base model "
                f"{base.id!r} is {base.arch!r}"
            )
        folder = self.storage.materialize(model_prefix(entry.tenant, entry.model_id))
        entry.size_bytes = sum((folder / name).stat().st_size for name in manifest.weights if (folder / name).is_file())
        if manifest.method == "lora":
            self._attach_lora(entry, base, folder)
        else:
            self._build_full(entry, base, folder)

    def _check_budget(self, entry: SubjectEntry, needed: int) -> None:
        if needed > self.subject_budget_bytes:
            raise ResourceExhausted(
                f"subject model {entry.model_id!r} needs {needed / 2**20:.1f} MiB, more than the whole subject "
                f"cache budget of {self.subject_budget_bytes / 2**20:.1f} MiB; raise --subject-cache-mb"
            )

    def _attach_lora(self, entry: SubjectEntry, base: BaseModel, folder: Path) -> None:
        assert entry.manifest is not None
        layers = read_lora(entry.manifest, folder, base.pipeline)
        element = torch.tensor([], dtype=self.pool.dtype).element_size()
        entry.memory_bytes = sum(layer.down.numel() + layer.up.numel() for layer in layers.layers.values()) * element
        self._check_budget(entry, entry.memory_bytes)
        entry.lora = self.pool.attach_lora(base, layers)

    def _build_full(self, entry: SubjectEntry, base: BaseModel, folder: Path) -> None:
        assert entry.manifest is not None
        modules = read_full_fine_tune(entry.manifest, folder, base.pipeline, self.pool.dtype)
        entry.memory_bytes = sum(module_bytes(module) for module in modules.values())
        self._check_budget(entry, entry.memory_bytes)
        modules = {name: module.to(self.pool.device) for name, module in modules.items()}
        with base.lock:
            # Shares every other component (VAE, tokenizers, scheduler, text encoders not fine-tuned).
            # torch_dtype: without it diffusers casts the shared modules to float32 in place.
            pipeline = type(base.pipeline).from_pipe(base.pipeline, torch_dtype=self.pool.dtype, **modules)
        pipeline.set_progress_bar_config(disable=True)
        entry.pipeline = pipeline

    # ---- eviction ---------------------------------------------------------------------------------------

    def _evict_to_budget(self, keep: SubjectEntry | None = None) -> None:
        """Evict least recently used, unpinned subjects (except `keep`) until the cache fits its budget.

        When pinned subjects fill the budget the cache stays over it until their batches release them.
        """
        victims: list[SubjectEntry] = []
        with self._lock:
            over = self._used_bytes - self.subject_budget_bytes
            for entry in list(self._lru.values()):
                if over <= 0:
                    break
                if entry.pins > 0 or entry is keep:
                    continue
                self._retire_locked(entry)
                victims.append(entry)
                over -= entry.memory_bytes
        for entry in victims:
            self._free(entry)
            with self._lock:
                self.stats.evictions += 1
            metrics.CACHE_EVICTIONS.inc()
            log.info("subject model evicted", extra={"model_id": entry.model_id})

    def _retire_locked(self, entry: SubjectEntry) -> None:
        """Under `_lock`: take a loaded entry out of the cache; a fresh entry takes its place for new requests."""
        self._lru.pop(entry.key, None)
        self.index.replace_locked(entry)
        entry.doomed = True

    def _free(self, entry: SubjectEntry) -> None:
        """Release a retired entry's memory (once no batch pins it)."""
        with self._lock:
            if entry.pins > 0 or entry.state != LOADED:
                return
            entry.state = NOT_LOADED
            self._used_bytes -= entry.memory_bytes
        # A batch that routed these layers has released its pin: dropping the reference frees them.
        entry.lora = None
        entry.pipeline = None
        if self.pool.device.type == "cuda":
            torch.cuda.empty_cache()
        self._update_gauges()

    def unload_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        """Evict a subject now; a batch using it finishes first. NotFound if it does not exist."""
        entry = self.index.entry(tenant, model_id, field="model_id")
        with self._lock:
            current = self.index.current_locked(entry.key)
            if current.state == LOADED:
                self._retire_locked(current)
            elif current.state == FAILED:
                current.state = NOT_LOADED
                current.failure_reason = ""
        if current.doomed:
            self._free(current)
            with self._lock:
                self.stats.evictions += 1
            metrics.CACHE_EVICTIONS.inc()
        return self.index.subject_status(tenant, model_id, read_storage=False)

    def forget_subject(self, tenant: str, model_id: str) -> bool:
        """Drop every trace of a deleted subject from this replica: its manifest, its cache entry and (once no
        batch pins it: a batch in flight finishes) its weights in memory. Returns whether anything was held."""
        key = (tenant, model_id)
        with self._lock:
            entry = self.index.forget_locked(key)
            if entry is None:
                return False
            self._lru.pop(key, None)
            entry.doomed = True
            free_now = entry.state == LOADED and entry.pins == 0
        if free_now:
            self._free(entry)
            with self._lock:
                self.stats.evictions += 1
            metrics.CACHE_EVICTIONS.inc()
        self.storage.forget_local(model_prefix(tenant, model_id))
        return True

    # ---- status -------------------------------------------------------------------------------------------

    def loaded_subjects(self) -> list[SubjectStatus]:
        """Loaded subjects, most recently used first."""
        with self._lock:
            return [status_of(entry) for entry in reversed(self._lru.values())]

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used_bytes

    def _update_gauges(self) -> None:
        with self._lock:
            metrics.LOADED_SUBJECTS.set(len(self._lru))
            metrics.MEMORY_BYTES.labels("subjects").set(self._used_bytes)


def _reason(error: BaseException) -> str:
    return error.message if isinstance(error, LikenessError) else f"{type(error).__name__}: {error}"
