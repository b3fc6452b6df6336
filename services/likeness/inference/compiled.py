"""Compiled serving: the UNet under `torch.compile`, warmed up once, with LoRAs switched and mixed freely.

A compiled graph is specialised to its input shapes and to the module structure. Three things keep it stable:

* **LoRA slots of a fixed rank.** The router runs with `rank_capacity`: every routed layer's per-sample LoRA
  stacks have that rank whatever LoRAs the batch holds (zeros pad them), the role `target_rank` plays in diffusers'
  `enable_lora_hotswap`. The layers LoRAs usually adapt (`UNET_LORA_TARGETS`) are routed before compiling, so a
  typical subject changes tensor values only.
* **Batch buckets.** A batch of n images is padded to the next bucket (1, 2, 4, 8 by default) with blank images
  whose results are dropped, so a server compiles one graph per bucket, all at warm-up, and never while serving.
* **Static shapes** (`dynamic=False`): symbolic shapes would save the buckets but cost minutes of tracing on a CPU.

What still recompiles, and is counted (`likeness_inference_recompilations_total`): a resolution other than the
base model's default, a batch without classifier-free guidance (half the rows), and a LoRA adapting a UNet layer
outside `UNET_LORA_TARGETS` (routing it changes the module). Each is compiled once and then cached by torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._dynamo.callback import CallbackArgs, on_compile_start

from likeness.inference import metrics
from likeness.inference.lora_routing import LoraRouter, SampleLoras

log = logging.getLogger(__name__)

#: Leaf names of the UNet layers routed before compiling: attention projections, feed-forward and the transformer
#: blocks' projections, which diffusers' and kohya's LoRA trainers target by default.
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
DEFAULT_BUCKETS = (1, 2, 4, 8)


def unet_lora_keys(unet: torch.nn.Module) -> list[str]:
    """Router keys ("unet.<path>") of the UNet's Linear and Conv2d layers named by `UNET_LORA_TARGETS`."""
    keys = []
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            continue
        if any(name == target or name.endswith(f".{target}") for target in UNET_LORA_TARGETS):
            keys.append(f"unet.{name}")
    return keys


class CompileCounter:
    """Counts torch.compile graph compilations in this process, and those after warm-up separately."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.after_warmup = 0
        self.warm = False
        on_compile_start(self._started)

    def _started(self, _: CallbackArgs) -> None:
        with self._lock:
            self.total += 1
            metrics.COMPILATIONS.inc()
            if self.warm:
                self.after_warmup += 1
                metrics.RECOMPILATIONS.inc()
                log.warning("the compiled UNet recompiled (a new shape or layer); see docs/inference.md")

    def mark_warm(self) -> None:
        with self._lock:
            self.warm = True


_counter: CompileCounter | None = None
_counter_lock = threading.Lock()


def compile_counter() -> CompileCounter:
    """The process's one counter (torch's compile callbacks are process-wide)."""
    global _counter
    with _counter_lock:
        if _counter is None:
            _counter = CompileCounter()
        return _counter


@dataclass(frozen=True)
class CompileOptions:
    """How base models' UNets are compiled (`--compile-unet`)."""

    backend: str = "inductor"
    mode: str | None = None
    #: Total LoRA rank one image may carry (its subject plus its styles).
    rank_capacity: int = 32
    buckets: tuple[int, ...] = DEFAULT_BUCKETS

    def bucket(self, images: int) -> int:
        """The padded batch size of `images` images (the largest bucket caps the batch)."""
        return next((size for size in self.buckets if size >= images), max(self.buckets))


@dataclass
class CompiledUnet:
    """A base model's compiled UNet: the options it was compiled with and its warm-up."""

    options: CompileOptions
    warmup_seconds: float = 0.0
    compiled_buckets: list[int] = field(default_factory=list)


def compile_unet(
    pipeline: Any, router: LoraRouter, options: CompileOptions, *, resolution: int, dtype: torch.dtype
) -> CompiledUnet:
    """Route the usual LoRA layers, compile the UNet in place and run every bucket once at `resolution`."""
    counter = compile_counter()
    router.prepare(unet_lora_keys(pipeline.unet))
    pipeline.unet.compile(backend=options.backend, mode=options.mode, dynamic=False, fullgraph=False)
    compiled = CompiledUnet(options)
    started = time.perf_counter()
    for bucket in options.buckets:
        _warm(pipeline, router, bucket, resolution=resolution, dtype=dtype)
        compiled.compiled_buckets.append(bucket)
    compiled.warmup_seconds = time.perf_counter() - started
    counter.mark_warm()
    log.info(
        "compiled UNet warmed up",
        extra={"buckets": ",".join(map(str, options.buckets)), "seconds": round(compiled.warmup_seconds, 1)},
    )
    return compiled


def _warm(pipeline: Any, router: LoraRouter, images: int, *, resolution: int, dtype: torch.dtype) -> None:
    samples: Sequence[SampleLoras] = [SampleLoras()] * images
    with torch.no_grad(), router.route(samples, dtype=dtype):
        pipeline(
            prompt=[""] * images,
            num_inference_steps=1,
            guidance_scale=5.0,
            width=resolution,
            height=resolution,
            output_type="latent",
            return_dict=False,
        )
