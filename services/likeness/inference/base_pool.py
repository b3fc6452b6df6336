"""Base models: catalog pipelines loaded once (on first use or at start-up) and kept, and adapter switching.

* **LoRA subjects** (and styles) are routed per sample (`lora_routing`): the layers they adapt are replaced once by
  routed layers that share the base's weights, and each batch sets which image runs through which LoRAs at which
  weight. A subject never reloads or copies the base model, and subjects mix in one batch.

A base model's `lock` serialises everything that touches its modules (generation, preparing routed layers). The
pool's own lock guards its bookkeeping and is never held during I/O or while taking a base model's `lock`.
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
from likeness.inference.compiled import CompiledUnet, CompileOptions, compile_unet
from likeness.inference.loading import FAILED, FAILED_RETRY_SECONDS, LOADED, LOADING, NOT_LOADED, SingleFlight
from likeness.inference.lora_layers import LoraLayer, LoraLayers
from likeness.inference.lora_routing import LoraRouter
from likeness.inference.previews import LatentPreviewer
from likeness.models.catalog import BaseModelCatalog, BaseModelSpec
from likeness.models.loading import ArchInfo

if TYPE_CHECKING:
    from likeness.inference.subject_index import SubjectEntry

log = logging.getLogger(__name__)

#: The pipeline components LoRAs may adapt (the keys of `LoraLayers` start with one of them).
ROUTABLE_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


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
    router: LoraRouter
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Set when the UNet is compiled (batches are then padded to its buckets).
    compiled: CompiledUnet | None = None
    # Image-to-image and inpainting pipelines built from this one (sharing its modules), by mode.
    variants: dict[str, DiffusionPipeline] = field(default_factory=dict)
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
        compile_options: CompileOptions | None = None,
    ) -> None:
        self.catalog = catalog
        #: Set: every base model's UNet is compiled at load (`compiled`); None: eager.
        self.compile_options = compile_options
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
        components = {
            name: module
            for name in ROUTABLE_COMPONENTS
            if isinstance(module := getattr(pipeline, name, None), torch.nn.Module)
        }
        options = self.compile_options
        router = LoraRouter(components, rank_capacity=options.rank_capacity if options else None)
        base = BaseModel(base_id, spec, pipeline, previewer, pipeline_bytes(pipeline), seconds, router)  # type: ignore[arg-type]  # diffusers' exports type-check as dummy objects
        if options is not None:
            base.compiled = compile_unet(
                pipeline, router, options, resolution=spec.info.default_resolution, dtype=self.dtype
            )
        return base

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

    # ---- LoRAs -------------------------------------------------------------------------------------------

    def attach_lora(self, base: BaseModel, layers: LoraLayers) -> LoraLayers:
        """Route the layers `layers` adapts and return them on the device, in the serving dtype."""
        placed = LoraLayers(
            {
                key: LoraLayer(
                    layer.down.to(self.device, self.dtype), layer.up.to(self.device, self.dtype), layer.scale
                )
                for key, layer in layers.layers.items()
            },
            layers.source_format,
        )
        with base.lock:
            base.router.prepare(sorted(placed.layers))
        return placed

    def activate(self, base: BaseModel, entry: SubjectEntry | None) -> DiffusionPipeline:
        """The pipeline a batch for `entry` runs: a full fine-tune's own, else the base's (LoRAs are routed)."""
        return entry.pipeline if entry is not None and entry.pipeline is not None else base.pipeline
