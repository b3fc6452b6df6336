"""The model repository: base pipelines loaded once, subject models hot-loaded into a memory-bounded LRU cache.

* **Base models** come from the catalog and are loaded once, on first use or at start-up, then kept.
* **Subject models** are found in shared storage (`tenants/{tenant}/models/{model_id}/manifest.json`): a listing
  or a request for an id not seen before reads storage, so models published after start-up are found without a
  restart. They are loaded on first use (or by `load_subject`, to pre-warm) and evicted least recently used first
  when the cache would exceed its memory budget, or by `unload_subject`.
* **LoRA subjects** become named adapters of the base pipeline itself (`load_lora_weights(adapter_name=...)`),
  so switching subject is `set_adapters` (about a millisecond) and never reloads or copies the base model.
* **Full fine-tunes** load only their UNet (and their text encoders when the trainer fine-tuned those); their
  pipeline is built with `from_pipe` and shares every other component of the base pipeline (VAE, tokenizers,
  scheduler, text encoders).

Concurrency: `_lock` guards the bookkeeping and is never held during I/O or while taking a base model's `lock`.
A base model's `lock` serialises everything that touches its modules (generation, attaching and deleting
adapters). A subject in use by a batch is pinned: eviction and unloading take it out of the cache at once (new
requests reload it) but free its memory only when the batch releases it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from likeness.errors import FailedPrecondition, InvalidArgument, LikenessError, NotFound, ResourceExhausted
from likeness.inference import metrics
from likeness.inference.previews import LatentPreviewer
from likeness.inference.subject_files import first_line, read_full_fine_tune, read_lora
from likeness.models.catalog import BaseModelCatalog, BaseModelSpec
from likeness.models.loading import ArchInfo
from likeness.storage.base import Storage
from likeness.storage.layout import model_manifest_key, model_prefix, models_prefix, validate_resource_id
from likeness.storage.manifest import SubjectModelManifest, parse_rfc3339
from likeness.threads import run_in_short_lived_thread

log = logging.getLogger(__name__)

NOT_LOADED, LOADING, LOADED, FAILED = "not_loaded", "loading", "loaded", "failed"
# A failed load is remembered this long, so requests fail fast instead of re-reading broken files each time;
# `load_subject` retries at once.
FAILED_RETRY_SECONDS = 60.0


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def pipeline_bytes(pipeline: DiffusionPipeline) -> int:
    return sum(module_bytes(c) for c in pipeline.components.values() if isinstance(c, torch.nn.Module))


@dataclass
class BaseModel:
    """A loaded base pipeline with what requests need to know about it."""

    id: str
    spec: BaseModelSpec
    pipeline: DiffusionPipeline
    previewer: LatentPreviewer
    memory_bytes: int
    load_seconds: float
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Adapter names attached to the pipeline, and which one is active at which scale (None: LoRA disabled).
    adapters: set[str] = field(default_factory=set)
    active: tuple[str, float] | None = None
    # False after an adapter was attached: the next activation must set the state explicitly.
    active_known: bool = True
    schedulers: dict[str, Any] = field(default_factory=dict)
    _counting_tokenizer: Any = None
    _tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def arch(self) -> str:
        return self.spec.arch

    @property
    def info(self) -> ArchInfo:
        return self.spec.info

    @property
    def max_tokens(self) -> int:
        return int(self.pipeline.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the start and end tokens, as the text encoder sees them (no truncation)."""
        # A private copy: the pipeline's tokenizer is in use on the worker thread, and fast tokenizers are not
        # safe to call from two threads at once.
        with self._tokenizer_lock:
            if self._counting_tokenizer is None:
                self._counting_tokenizer = copy.deepcopy(self.pipeline.tokenizer)
            return len(self._counting_tokenizer(text, truncation=False, verbose=False)["input_ids"])


@dataclass
class SubjectEntry:
    """One subject model's state on this server. A new entry replaces an evicted one (see module doc)."""

    tenant: str
    model_id: str
    manifest: SubjectModelManifest | None
    state: str = NOT_LOADED
    failure_reason: str = ""
    failed_at: float = 0.0
    memory_bytes: int = 0
    size_bytes: int = 0
    load_seconds: float = 0.0
    adapter_name: str | None = None
    pipeline: DiffusionPipeline | None = None
    future: Future | None = None
    pins: int = 0
    # Evicted or unloaded while pinned: free the memory when the last pin goes.
    doomed: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.model_id)

    @property
    def method(self) -> str:
        return self.manifest.method if self.manifest else ""


@dataclass(frozen=True)
class SubjectStatus:
    """A subject model as listings report it."""

    model_id: str
    manifest: SubjectModelManifest | None
    state: str
    failure_reason: str
    memory_bytes: int
    size_bytes: int


@dataclass(frozen=True)
class BaseStatus:
    id: str
    arch: str
    state: str
    default_resolution: int
    memory_bytes: int
    failure_reason: str = ""


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
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.device = device
        self.dtype = dtype
        self.subject_budget_bytes = subject_budget_bytes
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._bases: dict[str, BaseModel] = {}
        self._base_futures: dict[str, Future] = {}
        self._base_failures: dict[str, tuple[str, float]] = {}
        self._subjects: dict[tuple[str, str], SubjectEntry] = {}
        self._manifest_failures: dict[tuple[str, str], str] = {}
        # Loaded subjects, least recently used first.
        self._lru: OrderedDict[tuple[str, str], SubjectEntry] = OrderedDict()
        self._used_bytes = 0
        self._adapter_ids = itertools.count(1)
        self._loader = ThreadPoolExecutor(max_workers=loader_threads, thread_name_prefix="likeness-loader")

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    # ---- base models ------------------------------------------------------------------------------------

    def base(self, base_id: str) -> BaseModel:
        """The loaded base model, loading it once (concurrent callers wait for the same load)."""
        with self._lock:
            loaded = self._bases.get(base_id)
            if loaded is not None:
                return loaded
            failure = self._base_failures.get(base_id)
            if failure and time.monotonic() - failure[1] < FAILED_RETRY_SECONDS:
                raise FailedPrecondition(f"base model {base_id!r} failed to load: {failure[0]}")
            future = self._base_futures.get(base_id)
            owner = future is None
            if owner:
                future = Future()
                self._base_futures[base_id] = future
        if owner:
            try:
                base = run_in_short_lived_thread(self._load_base, base_id, name="likeness-base-load")
            except BaseException as exc:
                with self._lock:
                    self._base_futures.pop(base_id, None)
                    if not isinstance(exc, NotFound):
                        self._base_failures[base_id] = (str(exc), time.monotonic())
                future.set_exception(exc)
                raise
            with self._lock:
                self._bases[base_id] = base
                self._base_futures.pop(base_id, None)
                self._base_failures.pop(base_id, None)
            metrics.MEMORY_BYTES.labels("base").set(self._base_bytes())
            future.set_result(base)
        return future.result()

    def _load_base(self, base_id: str) -> BaseModel:
        spec = self.catalog.resolve(base_id)
        started = time.perf_counter()
        pipeline = self.catalog.load(base_id, device=self.device, dtype=self.dtype)
        pipeline.set_progress_bar_config(disable=True)
        previewer = LatentPreviewer.fit(pipeline.vae)
        seconds = time.perf_counter() - started
        metrics.LOAD_SECONDS.labels("base").observe(seconds)
        log.info("base model loaded", extra={"base_model": base_id, "seconds": round(seconds, 3)})
        return BaseModel(base_id, spec, pipeline, previewer, pipeline_bytes(pipeline), seconds)

    def base_statuses(self) -> list[BaseStatus]:
        """Every catalog entry with its state (resolving builtins only for loaded ones, to stay cheap)."""
        with self._lock:
            bases = dict(self._bases)
            loading = set(self._base_futures)
            failures = dict(self._base_failures)
        statuses = []
        for base_id in self.catalog.ids():
            if base_id in bases:
                base = bases[base_id]
                statuses.append(BaseStatus(base_id, base.arch, LOADED, base.info.default_resolution, base.memory_bytes))
                continue
            state = LOADING if base_id in loading else FAILED if base_id in failures else NOT_LOADED
            entry = next(e for e in self.catalog.entries() if e.id == base_id)
            statuses.append(BaseStatus(base_id, entry.arch or "", state, 0, 0, failures.get(base_id, ("", 0.0))[0]))
        return statuses

    def _base_bytes(self) -> int:
        with self._lock:
            return sum(base.memory_bytes for base in self._bases.values())

    # ---- discovery --------------------------------------------------------------------------------------

    def manifest(self, tenant: str, model_id: str, *, field: str = "subject_model_id") -> SubjectModelManifest:
        """The manifest of a published subject model, read from storage the first time it is asked for.

        NotFound when no such model is published; FailedPrecondition when its manifest is corrupt. Errors name
        `field`, the request field that carried the id (`model_id` for the Get/Load/Unload RPCs).
        """
        validate_resource_id(model_id, field=field)
        with self._lock:
            entry = self._subjects.get((tenant, model_id))
            if entry is not None and entry.manifest is not None:
                return entry.manifest
        key = model_manifest_key(tenant, model_id)
        try:
            data = self.storage.read_bytes(key)
        except NotFound:
            raise NotFound(
                f"subject model {model_id!r} does not exist; ListSubjectModels shows the published ones",
                field=field,
            ) from None
        try:
            manifest = SubjectModelManifest.from_json(data, source=key)
            if manifest.model_id != model_id or manifest.tenant != tenant:
                raise FailedPrecondition(
                    f"{key} is corrupt: it describes model {manifest.model_id!r} of tenant {manifest.tenant!r}"
                )
        except FailedPrecondition as exc:
            with self._lock:
                self._manifest_failures[(tenant, model_id)] = exc.message
            raise
        with self._lock:
            self._manifest_failures.pop((tenant, model_id), None)
            entry = self._subjects.get((tenant, model_id))
            if entry is None:
                entry = SubjectEntry(tenant, model_id, manifest)
                self._subjects[entry.key] = entry
            elif entry.manifest is None:
                entry.manifest = manifest
            return entry.manifest

    def list_subjects(self, tenant: str, *, base_model: str = "", loaded_only: bool = False) -> list[SubjectStatus]:
        """Published subject models of `tenant` with their state, newest first; corrupt ones as FAILED."""
        statuses: dict[str, SubjectStatus] = {}
        if not loaded_only:
            for model_id in self.storage.list_dirs(models_prefix(tenant)):
                try:
                    # A corrupt manifest is not skipped: it is reported below as FAILED with its reason.
                    with contextlib.suppress(FailedPrecondition):
                        self.manifest(tenant, model_id)
                except (NotFound, InvalidArgument):
                    continue  # not published yet (no manifest), or a folder that is not a model
                statuses[model_id] = self.subject_status(tenant, model_id, read_storage=False)
        with self._lock:
            loaded_ids = [model_id for (t, model_id) in self._lru if t == tenant]
        for model_id in loaded_ids:
            statuses.setdefault(model_id, self.subject_status(tenant, model_id, read_storage=False))
        result = [
            status
            for status in statuses.values()
            if (not base_model or (status.manifest is not None and status.manifest.base_model == base_model))
            and (not loaded_only or status.state == LOADED)
        ]
        result.sort(key=lambda s: (s.manifest is not None, _created_key(s)), reverse=True)
        return result

    def subject_status(self, tenant: str, model_id: str, *, read_storage: bool = True) -> SubjectStatus:
        """One subject's status; NotFound when it is not published (and not loaded)."""
        if read_storage:
            # A corrupt manifest is reported as FAILED below.
            with contextlib.suppress(FailedPrecondition):
                self.manifest(tenant, model_id, field="model_id")
        with self._lock:
            failure = self._manifest_failures.get((tenant, model_id))
            entry = self._subjects.get((tenant, model_id))
            if entry is None:
                if failure is None:
                    raise NotFound(f"subject model {model_id!r} does not exist", field="model_id")
                return SubjectStatus(model_id, None, FAILED, failure, 0, 0)
            return _status_of(entry)

    # ---- subject loading --------------------------------------------------------------------------------

    def _entry(self, tenant: str, model_id: str, *, field: str = "subject_model_id") -> SubjectEntry:
        self.manifest(tenant, model_id, field=field)
        with self._lock:
            return self._subjects[(tenant, model_id)]

    def _start_load_locked(self, entry: SubjectEntry) -> Future:
        """Under `_lock`: the future of the entry's load, starting it unless one runs (one load per subject)."""
        if entry.future is None:
            entry.future = Future()
            entry.state = LOADING
            entry.failure_reason = ""
            self._loader.submit(self._run_load, entry, entry.future)
        return entry.future

    def prefetch(self, tenant: str, model_id: str) -> bool:
        """Count a cache hit or miss for a new request and start loading the subject in the background if needed.

        Returns True when it is loaded already. A recent failure is raised as FailedPrecondition.
        """
        entry = self._entry(tenant, model_id)
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
            entry = self._entry(tenant, model_id, field="model_id")
            with self._lock:
                if entry.state == LOADED:
                    self._lru.move_to_end(entry.key)
                    return _status_of(entry)
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
            entry = self._entry(tenant, model_id)
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

    def _run_load(self, entry: SubjectEntry, future: Future) -> None:
        """Loader thread: load one subject, record the outcome, resolve its future."""
        started = time.perf_counter()
        try:
            run_in_short_lived_thread(self._load_subject, entry, name="likeness-subject-load")
        except BaseException as exc:
            reason = exc.message if isinstance(exc, LikenessError) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                entry.state = FAILED
                entry.failure_reason = reason
                entry.failed_at = time.monotonic()
                entry.future = None
                self.stats.load_failures += 1
            metrics.LOAD_FAILURES.inc()
            log.warning("subject model failed to load", extra={"model_id": entry.model_id, "reason": reason})
            if isinstance(exc, LikenessError):
                future.set_exception(exc)
            else:
                future.set_exception(FailedPrecondition(f"subject model {entry.model_id!r} cannot be loaded: {reason}"))
            return
        seconds = time.perf_counter() - started
        with self._lock:
            entry.state = LOADED
            entry.load_seconds = seconds
            entry.future = None
            self._lru[entry.key] = entry
            self._used_bytes += entry.memory_bytes
            self.stats.loads += 1
        metrics.LOAD_SECONDS.labels(entry.method).observe(seconds)
        log.info(
            "subject model loaded",
            extra={"model_id": entry.model_id, "method": entry.method, "seconds": round(seconds, 3)},
        )
        # Make room before waking the waiters, sparing the new entry: they are about to pin it.
        self._evict_to_budget(keep=entry)
        self._update_gauges()
        future.set_result(entry)

    def _load_subject(self, entry: SubjectEntry) -> None:
        manifest = entry.manifest
        if manifest is None:
            raise FailedPrecondition(f"subject model {entry.model_id!r} has no readable manifest")
        if manifest.base_model not in self.catalog:
            raise FailedPrecondition(
                f"subject model {entry.model_id!r} was trained on base model {manifest.base_model!r}, which this "
                f"server does not offer (it offers {', '.join(self.catalog.ids())})"
            )
        base = self.base(manifest.base_model)
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
        state_dict = read_lora(entry.manifest, folder)
        element = torch.tensor([], dtype=self.dtype).element_size()
        entry.memory_bytes = sum(tensor.numel() for tensor in state_dict.values()) * element
        self._check_budget(entry, entry.memory_bytes)
        name = f"subject_{next(self._adapter_ids)}"
        with base.lock:
            try:
                base.pipeline.load_lora_weights(state_dict, adapter_name=name)
            except (ValueError, RuntimeError, KeyError) as exc:
                # diffusers removes a half-attached adapter itself; make sure nothing of it stays active.
                if name in _adapter_names(base.pipeline):
                    base.pipeline.delete_adapters([name])
                base.active_known = False
                raise FailedPrecondition(
                    f"LoRA weights of subject model {entry.model_id!r} do not fit base model {base.id!r}: "
                    f"{first_line(exc)}"
                ) from exc
            base.adapters.add(name)
            # Attaching activates the new adapter: the next batch must set the state it needs.
            base.active_known = False
        entry.adapter_name = name

    def _build_full(self, entry: SubjectEntry, base: BaseModel, folder: Path) -> None:
        assert entry.manifest is not None
        modules = read_full_fine_tune(entry.manifest, folder, base.pipeline, self.dtype)
        entry.memory_bytes = sum(module_bytes(module) for module in modules.values())
        self._check_budget(entry, entry.memory_bytes)
        modules = {name: module.to(self.device) for name, module in modules.items()}
        with base.lock:
            # Shares every other component (VAE, tokenizers, scheduler, text encoders not fine-tuned).
            pipeline = type(base.pipeline).from_pipe(base.pipeline, **modules)
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
        fresh = SubjectEntry(entry.tenant, entry.model_id, entry.manifest)
        self._subjects[entry.key] = fresh
        entry.doomed = True

    def _free(self, entry: SubjectEntry) -> None:
        """Release a retired entry's memory (once no batch pins it)."""
        with self._lock:
            if entry.pins > 0 or entry.state != LOADED:
                return
            entry.state = NOT_LOADED
            self._used_bytes -= entry.memory_bytes
        if entry.adapter_name is not None and entry.manifest is not None:
            base = self.base(entry.manifest.base_model)
            with base.lock:
                if entry.adapter_name in _adapter_names(base.pipeline):
                    base.pipeline.delete_adapters([entry.adapter_name])
                base.adapters.discard(entry.adapter_name)
                if base.active is not None and base.active[0] == entry.adapter_name:
                    base.active_known = False
        entry.pipeline = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self._update_gauges()

    def unload_subject(self, tenant: str, model_id: str) -> SubjectStatus:
        """Evict a subject now; a batch using it finishes first. NotFound if it does not exist."""
        entry = self._entry(tenant, model_id, field="model_id")
        with self._lock:
            current = self._subjects[entry.key]
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
        return self.subject_status(tenant, model_id, read_storage=False)

    def forget_subject(self, tenant: str, model_id: str) -> bool:
        """Drop every trace of a deleted subject from this replica: its manifest, its cache entry and (once no
        batch pins it: a batch in flight finishes) its weights in memory. Returns whether anything was held."""
        key = (tenant, model_id)
        with self._lock:
            self._manifest_failures.pop(key, None)
            entry = self._subjects.pop(key, None)
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

    def sweep_deleted(self) -> list[tuple[str, str]]:
        """Forget the subjects whose manifest left storage (deleted through another replica); returns them.

        Servers run this every `subject_sweep_seconds`, the bound on how long a deleted subject stays usable on
        a replica that did not delete it. One existence check per subject this replica knows."""
        with self._lock:
            known = [key for key, entry in self._subjects.items() if entry.manifest is not None]
        gone = [key for key in known if not self.storage.exists(model_manifest_key(*key))]
        for tenant, model_id in gone:
            self.forget_subject(tenant, model_id)
            log.info("deleted subject forgotten", extra={"tenant": tenant, "model_id": model_id})
        return gone

    # ---- switching ---------------------------------------------------------------------------------------

    def activate(self, base: BaseModel, entry: SubjectEntry | None, lora_scale: float) -> DiffusionPipeline:
        """Make the pipeline for `entry` (None: the base alone) ready to run and return it.

        The caller holds `base.lock`. LoRA: `set_adapters([name], [scale])` on the base pipeline; base alone or a
        full fine-tune: adapters disabled (full fine-tunes share the base's text encoders, which may hold
        text-encoder LoRA layers).
        """
        want = (entry.adapter_name, lora_scale) if entry is not None and entry.adapter_name else None
        if want == base.active and base.active_known:
            return entry.pipeline if entry is not None and entry.pipeline is not None else base.pipeline
        pipeline = base.pipeline
        if want is None:
            if base.adapters:
                pipeline.disable_lora()
        else:
            if base.active is None or not base.active_known:
                pipeline.enable_lora()
            pipeline.set_adapters([want[0]], [want[1]])
        base.active = want
        base.active_known = True
        return entry.pipeline if entry is not None and entry.pipeline is not None else base.pipeline

    # ---- status -------------------------------------------------------------------------------------------

    def loaded_subjects(self) -> list[SubjectStatus]:
        """Loaded subjects, most recently used first."""
        with self._lock:
            return [_status_of(entry) for entry in reversed(self._lru.values())]

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used_bytes

    def _update_gauges(self) -> None:
        with self._lock:
            metrics.LOADED_SUBJECTS.set(len(self._lru))
            metrics.MEMORY_BYTES.labels("subjects").set(self._used_bytes)


def _adapter_names(pipeline: DiffusionPipeline) -> set[str]:
    return {name for names in pipeline.get_list_adapters().values() for name in names}


def _status_of(entry: SubjectEntry) -> SubjectStatus:
    return SubjectStatus(
        entry.model_id, entry.manifest, entry.state, entry.failure_reason, entry.memory_bytes, entry.size_bytes
    )


def _created_key(status: SubjectStatus) -> float:
    if status.manifest is None:
        return 0.0
    try:
        return parse_rfc3339(status.manifest.created_at).timestamp()
    except InvalidArgument:
        return 0.0
