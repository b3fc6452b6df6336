"""Base models: catalog pipelines loaded once (on first use or at start-up) and kept, and adapter switching.

* **LoRA subjects** become named adapters of the base pipeline itself (`load_lora_weights(adapter_name=...)`),
  so switching subject is `set_adapters` (about a millisecond) and never reloads or copies the base model.

A base model's `lock` serialises everything that touches its modules (generation, attaching and deleting
adapters). The pool's own lock guards its bookkeeping and is never held during I/O or while taking a base
model's `lock`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from diffusers import DiffusionPipeline

from likeness.errors import FailedPrecondition, NotFound
from likeness.inference import metrics
from likeness.inference.loading import FAILED, FAILED_RETRY_SECONDS, LOADED, LOADING, NOT_LOADED, SingleFlight
from likeness.inference.previews import LatentPreviewer
from likeness.inference.subject_files import first_line
from likeness.models.catalog import BaseModelCatalog, BaseModelSpec
from likeness.models.loading import ArchInfo

if TYPE_CHECKING:
    from likeness.inference.subject_index import SubjectEntry

log = logging.getLogger(__name__)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def pipeline_bytes(pipeline: DiffusionPipeline) -> int:
    return sum(module_bytes(c) for c in pipeline.components.values() if isinstance(c, torch.nn.Module))  # type: ignore[attr-defined,misc]  # diffusers' exports type-check as dummy objects


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
        return int(self.pipeline.tokenizer.model_max_length)  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the start and end tokens, as the text encoder sees them (no truncation)."""
        # A private copy: the pipeline's tokenizer is in use on the worker thread, and fast tokenizers are not
        # safe to call from two threads at once.
        with self._tokenizer_lock:
            if self._counting_tokenizer is None:
                self._counting_tokenizer = copy.deepcopy(self.pipeline.tokenizer)  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            return len(self._counting_tokenizer(text, truncation=False, verbose=False)["input_ids"])


@dataclass(frozen=True)
class BaseStatus:
    id: str
    arch: str
    state: str
    default_resolution: int
    memory_bytes: int
    failure_reason: str = ""


class BasePool:
    """The base models of one inference server, each loaded once (see module doc).

    `load` loads one base model (default: `load_model`); the repository passes its own to keep it patchable.
    """

    def __init__(
        self,
        catalog: BaseModelCatalog,
        *,
        device: torch.device,
        dtype: torch.dtype,
        load: Callable[[str], BaseModel] | None = None,
    ) -> None:
        self.catalog = catalog
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._bases: dict[str, BaseModel] = {}
        self._failures: dict[str, tuple[str, float]] = {}
        self._loads: SingleFlight[str, BaseModel] = SingleFlight(
            load or self.load_model,
            lock=self._lock,
            settle=self._settle_locked,
            finish=self._finish,
            thread_name="likeness-base-load",
        )
        self._adapter_ids = itertools.count(1)

    def base(self, base_id: str) -> BaseModel:
        """The loaded base model, loading it once (concurrent callers wait for the same load)."""
        with self._lock:
            loaded = self._bases.get(base_id)
            if loaded is not None:
                return loaded
            failure = self._failures.get(base_id)
            if failure and time.monotonic() - failure[1] < FAILED_RETRY_SECONDS:
                raise FailedPrecondition(f"base model {base_id!r} failed to load: {failure[0]}")
            future, owner = self._loads.join_locked(base_id)
        if owner:
            self._loads.run(base_id, future)
        return future.result()

    def load_model(self, base_id: str) -> BaseModel:
        spec = self.catalog.resolve(base_id)
        started = time.perf_counter()
        pipeline = self.catalog.load(base_id, device=self.device, dtype=self.dtype)
        pipeline.set_progress_bar_config(disable=True)  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        previewer = LatentPreviewer.fit(pipeline.vae)  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
        seconds = time.perf_counter() - started
        metrics.LOAD_SECONDS.labels("base").observe(seconds)
        log.info("base model loaded", extra={"base_model": base_id, "seconds": round(seconds, 3)})
        return BaseModel(base_id, spec, pipeline, previewer, pipeline_bytes(pipeline), seconds)  # type: ignore[arg-type]  # diffusers' exports type-check as dummy objects

    def _settle_locked(self, base_id: str, base: BaseModel | None, error: BaseException | None) -> None:
        if error is not None:
            if not isinstance(error, NotFound):
                self._failures[base_id] = (str(error), time.monotonic())
            return
        assert base is not None
        self._bases[base_id] = base
        self._failures.pop(base_id, None)

    def _finish(self, base_id: str, base: BaseModel | None, error: BaseException | None) -> None:
        if error is None:
            metrics.MEMORY_BYTES.labels("base").set(self._base_bytes())

    def base_statuses(self) -> list[BaseStatus]:
        """Every catalog entry with its state (resolving builtins only for loaded ones, to stay cheap)."""
        with self._lock:
            bases = dict(self._bases)
            loading = self._loads.running_locked()
            failures = dict(self._failures)
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

    # ---- adapters -----------------------------------------------------------------------------------------

    def attach_lora(self, base: BaseModel, state_dict: dict[str, torch.Tensor], model_id: str) -> str:
        """Attach a subject's LoRA weights to the base pipeline as a new named adapter; returns its name."""
        name = f"subject_{next(self._adapter_ids)}"
        with base.lock:
            try:
                base.pipeline.load_lora_weights(state_dict, adapter_name=name)  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            except (ValueError, RuntimeError, KeyError) as exc:
                # diffusers removes a half-attached adapter itself; make sure nothing of it stays active.
                if name in _adapter_names(base.pipeline):
                    base.pipeline.delete_adapters([name])  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
                base.active_known = False
                raise FailedPrecondition(
                    f"LoRA weights of subject model {model_id!r} do not fit base model {base.id!r}: {first_line(exc)}"
                ) from exc
            base.adapters.add(name)
            # Attaching activates the new adapter: the next batch must set the state it needs.
            base.active_known = False
        return name

    def detach_adapter(self, base: BaseModel, adapter_name: str) -> None:
        """Delete an adapter from the base pipeline (the next activation sets the state again if it was active)."""
        with base.lock:
            if adapter_name in _adapter_names(base.pipeline):
                base.pipeline.delete_adapters([adapter_name])  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            base.adapters.discard(adapter_name)
            if base.active is not None and base.active[0] == adapter_name:
                base.active_known = False

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
                pipeline.disable_lora()  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
        else:
            if base.active is None or not base.active_known:
                pipeline.enable_lora()  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            pipeline.set_adapters([want[0]], [want[1]])  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
        base.active = want
        base.active_known = True
        return entry.pipeline if entry is not None and entry.pipeline is not None else base.pipeline


def _adapter_names(pipeline: DiffusionPipeline) -> set[str]:
    return {name for names in pipeline.get_list_adapters().values() for name in names}  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
