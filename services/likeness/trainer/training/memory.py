"""How much device memory a training run needs, and which memory savers make it fit (the memory plan).

The estimate adds up what a run keeps on its device: the weights of every resident component at the dtype they
are placed in, the trainable parameters with their gradients and optimizer state, the activations autograd saves
during the UNet's forward pass, a backward workspace, and the runtime's own overhead. Activations are not a
table of measured numbers: the UNet is built on PyTorch's `meta` device (shapes only, no memory, no compute)
from the model's own config and run forward at the job's resolution and batch, and the tensors autograd saves
are summed. Attention is counted as the memory-efficient kernels PyTorch uses on CUDA and on the CPU keep it
(queries, keys, values, output and a log-sum-exp row, not the full attention matrix).

The plan then tries, cheapest first, the requested settings, text encoders off the device after their prompts
are cached, gradient checkpointing, and a memory-lean optimizer (8-bit AdamW from bitsandbytes on CUDA,
Adafactor elsewhere), and keeps the first that fits the device's memory.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.trainer.config import LoraSettings, TrainingConfig

log = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20
#: The share of a device's memory a plan fills at most: the rest is headroom for fragmentation and for what the
#: estimate does not model (the estimate is checked to within 20% of measured peaks).
USABLE_FRACTION = 0.9
#: GPU sizes the documented plans are given for.
DEVICE_SIZES_GIB = (16, 24, 40, 80)
# Optimizer state bytes per trainable parameter: AdamW keeps two float32 moments, 8-bit AdamW two int8 moments
# (plus block scales, ~2%), Adafactor a factored second moment (row + column sums; ~0 per parameter).
_OPTIMIZER_STATE_BYTES = {"adamw": 8.0, "adamw_8bit": 2.04, "adafactor": 0.1}
# What the runtime holds besides tensors. CUDA: the context, cuBLAS/cuDNN workspaces and allocator slack, as
# nvidia-smi reports them for a diffusers training process (~1 GiB). CPU: the worker process with torch, diffusers,
# transformers and accelerate imported, before it loads a model (resident set measured on the benchmark machine).
RUNTIME_OVERHEAD_BYTES = {"cuda": 1 * GIB, "cpu": int(0.9 * GIB)}
#: A warm worker keeps the base model it last trained loaded and hands each run a copy, which saves the reload but
#: holds the model twice in host memory: it does so only while the model is at most this share of the host's memory.
WARM_COPY_SHARE = 1 / 8
# Beyond the tensors autograd saves, a training step holds activation gradients, kernel scratch space and
# allocator slack. Modelled as a multiple of the largest saved activation plus a constant. CPU: fitted to the
# resident-set peaks of SD 1.5's UNet with LoRA at 256 and 512 px, with and without checkpointing (glibc keeps
# freed blocks, oneDNN its scratch); the full-size benchmark checks it on SDXL at 1024 px, which it was not fitted
# to. CUDA: PyTorch's caching allocator reuses freed blocks; 4x plus 5% of the saved bytes is an estimate, not a
# measurement (bench/gpu_check.sh measures it on a GPU).
_WORKSPACE = {"cpu": (23.0, 190 * MIB, 0.0), "cuda": (4.0, 0, 0.05)}
# A phase that only runs the model forward (class images) holds a few activations at a time, not a graph.
_INFERENCE_WORKSPACE_FACTOR = 8
_TEXT_TOKENS = 77


@dataclass(frozen=True)
class MemoryOptions:
    """The memory savers a run uses."""

    gradient_checkpointing: bool = False
    #: Text encoders leave the device once the prompts' embeddings are cached (frozen encoders only).
    offload_text_encoders: bool = False
    optimizer: str = "adamw"

    def describe(self) -> str:
        savers = [
            *(["gradient checkpointing"] if self.gradient_checkpointing else []),
            *(["text encoders off the device"] if self.offload_text_encoders else []),
        ]
        return f"{', '.join(savers) or 'no memory savers'}, optimizer {self.optimizer}"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs on its device, by what holds them."""

    weights: int
    trainable_state: int
    activations: int
    workspace: int
    overhead: int
    #: Peak of the phases before the training steps (the float32 base model as loaded on a CPU, class images).
    preparation: int = 0

    @property
    def training(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.workspace + self.overhead

    @property
    def total(self) -> int:
        return max(self.training, self.preparation)

    def describe(self) -> str:
        parts = dataclasses.asdict(self)
        return f"{self.total / GIB:.1f} GiB (" + ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items() if v) + ")"


@dataclass(frozen=True)
class MemoryPlan:
    """The options chosen for a run, their estimate and the budget they were chosen for."""

    options: MemoryOptions
    estimate: MemoryEstimate
    budget_bytes: int | None
    device_type: str
    mode: str

    @property
    def fits(self) -> bool:
        return self.budget_bytes is None or self.estimate.total <= USABLE_FRACTION * self.budget_bytes

    def describe(self) -> str:
        budget = "unknown" if self.budget_bytes is None else f"{self.budget_bytes / GIB:.1f} GiB"
        verdict = "fits" if self.fits else "does NOT fit"
        return (
            f"memory plan ({self.mode}) on {self.device_type}: {self.options.describe()}; needs "
            f"{self.estimate.describe()}; budget {budget}: {verdict}"
        )


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts of a base model and its UNet config: all the estimate needs to know about the model."""

    unet_config: Mapping[str, Any]
    unet_parameters: int
    text_encoder_parameters: int
    vae_parameters: int
    #: The largest component weights file (0: unknown). Loading maps it while converting it to float32, and the
    #: mapped pages count in the loading process's resident memory.
    largest_weights_file_bytes: int = 0

    @classmethod
    def of_pipeline(cls, pipeline: Any) -> ModelShape:
        """From a loaded pipeline (before adapters are added)."""
        encoders = [getattr(pipeline, name, None) for name in ("text_encoder", "text_encoder_2")]
        return cls(
            unet_config=dict(pipeline.unet.config),
            unet_parameters=_count(pipeline.unet),
            text_encoder_parameters=sum(_count(e) for e in encoders if e is not None),
            vae_parameters=_count(pipeline.vae),
        )

    @classmethod
    def of_configs(
        cls, unet: Mapping[str, Any], text_encoders: Sequence[Mapping[str, Any]], vae: Mapping[str, Any]
    ) -> ModelShape:
        """From component configs (a diffusers folder's config.json files), without loading any weights."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        with torch.device("meta"):
            unet_parameters = _count(UNet2DConditionModel.from_config(dict(unet)))
            vae_parameters = _count(AutoencoderKL.from_config(dict(vae)))
            encoder_parameters = 0
            for encoder in text_encoders:
                fields = {k: v for k, v in encoder.items() if not k.startswith("_")}
                text_config = CLIPTextConfig(**fields)
                projection = (
                    int(text_config.projection_dim or 0) if "WithProjection" in str(encoder.get("architectures")) else 0
                )
                encoder_parameters += _count(CLIPTextModel(text_config)) + projection * int(text_config.hidden_size)
        return cls(dict(unet), unet_parameters, encoder_parameters, vae_parameters)

    @classmethod
    def of_folder(cls, folder: Path) -> ModelShape:
        """From a diffusers folder's component configs (or a shipped standard config folder); no weights read."""

        def read(relative: str) -> dict[str, Any]:
            path = folder / relative
            try:
                data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise InvalidArgument(f"{path} is missing or not JSON: {error}", field="model") from error
            return data

        encoders = [
            read(f"{name}/config.json") for name in ("text_encoder", "text_encoder_2") if (folder / name).is_dir()
        ]
        shape = cls.of_configs(read("unet/config.json"), encoders, read("vae/config.json"))
        files = [path.stat().st_size for path in folder.glob("*/*.safetensors")]
        return dataclasses.replace(shape, largest_weights_file_bytes=max(files, default=0))


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype, device="meta").element_size()


# ---- activations, traced on the meta device -------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationTrace:
    """What autograd keeps for one UNet forward pass."""

    saved_bytes: int
    largest_bytes: int
    #: With checkpointing: the largest block's own saved bytes, alive again while that block is recomputed.
    recompute_bytes: int


class _FlashAttentionShape(torch.autograd.Function):
    """Stands in for a memory-efficient attention kernel on the meta device: its output shape, and what such a
    kernel saves for backward (queries, keys, values, output, a float32 log-sum-exp row), saved through autograd
    so that gradient checkpointing drops them inside a checkpointed block as it drops everything else."""

    @staticmethod
    def forward(ctx, query, key, value):  # type: ignore[no-untyped-def, override]
        output = query.new_empty((*query.shape[:-1], value.shape[-1]))
        log_sum_exp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, output, log_sum_exp)
        return output

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def, override]
        query, key, value, _, _ = ctx.saved_tensors
        return torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)


class _MemoryEfficientAttention(TorchFunctionMode):
    """Traces scaled-dot-product attention as a memory-efficient kernel: on the meta device PyTorch would trace
    the math fallback, which saves the full attention matrix that no real kernel keeps."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.nn.functional.scaled_dot_product_attention:
            return _FlashAttentionShape.apply(*args[:3])
        return func(*args, **(kwargs or {}))


class _SavedTensors:
    """Sums the distinct non-parameter tensors autograd saves (a view counts once, as its base)."""

    def __init__(self, parameters: set[int]) -> None:
        self.parameters = parameters
        self.seen: set[int] = set()
        # Holding every counted tensor keeps its id from being reused by a later one (meta tensors cost nothing).
        self.kept: list[torch.Tensor] = []
        self.total = 0
        self.largest = 0

    def record(self, tensor: torch.Tensor) -> None:
        base = tensor._base if tensor._base is not None else tensor
        if id(base) in self.parameters or id(base) in self.seen or isinstance(base, torch.nn.Parameter):
            return
        self.seen.add(id(base))
        self.kept.append(base)
        size = base.numel() * base.element_size()
        self.total += size
        self.largest = max(self.largest, size)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.record(tensor)
        return tensor


@contextmanager
def _block_meter(unet: torch.nn.Module, saved: _SavedTensors) -> Iterator[list[int]]:
    """Per checkpointed block (each resnet and transformer of the down, mid and up blocks), the bytes it saves."""
    sizes: list[int] = []
    handles = []
    stages: list[Any] = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]  # type: ignore[misc, union-attr]
    for stage in stages:
        for block in [*getattr(stage, "resnets", []), *getattr(stage, "attentions", [])]:
            start: list[int] = []
            handles.append(block.register_forward_pre_hook(lambda _m, _a, s=start: s.append(saved.total)))
            handles.append(block.register_forward_hook(lambda _m, _a, _o, s=start: sizes.append(saved.total - s.pop())))
    try:
        yield sizes
    finally:
        for handle in handles:
            handle.remove()


def _unet_inputs(config: Mapping[str, Any], resolution: int, batch: int, dtype: torch.dtype) -> dict[str, Any]:
    latent = max(1, resolution // 8)
    inputs: dict[str, Any] = {
        "sample": torch.empty(batch, config["in_channels"], latent, latent, dtype=dtype),
        "timestep": torch.zeros(batch, dtype=torch.long),
        "encoder_hidden_states": torch.empty(batch, _TEXT_TOKENS, config["cross_attention_dim"], dtype=dtype),
    }
    if config.get("addition_embed_type") == "text_time":
        time_ids = 6
        text_embeds = config["projection_class_embeddings_input_dim"] - time_ids * config["addition_time_embed_dim"]
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.empty(batch, text_embeds, dtype=dtype),
            "time_ids": torch.empty(batch, time_ids, dtype=dtype),
        }
    return inputs


@functools.lru_cache(maxsize=64)
def _trace(
    config_json: str, lora_json: str, resolution: int, batch: int, dtype_name: str, checkpointing: bool
) -> ActivationTrace:
    from diffusers import UNet2DConditionModel

    from likeness.trainer.training.lora import add_lora

    config = json.loads(config_json)
    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config).to(dtype)
        unet.requires_grad_(not lora_json)
        if lora_json:
            add_lora(unet, LoraSettings(**json.loads(lora_json)))
            for parameter in unet.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.to(torch.float32)
        inputs = _unet_inputs(config, resolution, batch, dtype)
    unet.train()
    saved = _SavedTensors({id(parameter) for parameter in unet.parameters()})
    with (
        _block_meter(unet, saved) as block_sizes,
        torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor),
        _MemoryEfficientAttention(),
    ):
        unet(**inputs, return_dict=False)
    if not checkpointing:
        return ActivationTrace(saved.total, saved.largest, 0)
    recompute = max(block_sizes, default=0)
    unet.enable_gradient_checkpointing()
    boundary = _SavedTensors(saved.parameters)
    with (
        torch.autograd.graph.saved_tensors_hooks(boundary.pack, lambda tensor: tensor),
        _MemoryEfficientAttention(),
    ):
        unet(**inputs, return_dict=False)
    return ActivationTrace(boundary.total, saved.largest, recompute)


def trace_activations(
    unet_config: Mapping[str, Any],
    *,
    lora: LoraSettings | None,
    resolution: int,
    batch: int,
    dtype: torch.dtype,
    gradient_checkpointing: bool,
) -> ActivationTrace:
    """Saved-activation bytes of one training forward pass of the UNet `unet_config` describes (meta device)."""
    lora_json = json.dumps(dataclasses.asdict(lora), sort_keys=True) if lora is not None else ""
    config_json = json.dumps({k: v for k, v in unet_config.items() if not k.startswith("_")}, sort_keys=True)
    dtype_name = str(dtype).removeprefix("torch.")
    return _trace(config_json, lora_json, resolution, batch, dtype_name, gradient_checkpointing)


def lora_parameters(unet_config: Mapping[str, Any], lora: LoraSettings) -> int:
    """Trainable parameters of a UNet LoRA (counted on the meta device)."""
    from diffusers import UNet2DConditionModel

    from likeness.trainer.training.lora import add_lora

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({k: v for k, v in unet_config.items() if not k.startswith("_")})
        unet.requires_grad_(False)
        add_lora(unet, lora)
    return sum(parameter.numel() for parameter in unet.parameters() if parameter.requires_grad)


# ---- the estimate and the plan ---------------------------------------------------------------------------------


def estimate_memory(
    shape: ModelShape,
    config: TrainingConfig,
    options: MemoryOptions,
    *,
    device_type: str,
    dtype: torch.dtype,
    resolution: int,
) -> MemoryEstimate:
    """Device bytes `config` needs with `options` on a `device_type` device computing in `dtype`.

    Mirrors how the training loop places components: frozen weights in `dtype`, trained ones in float32, the VAE
    off the device once latents are cached (unless validation renders images), text encoders off the device when
    `options` says so. On a CPU nothing leaves the device: all of it is in the same memory.
    """
    lora = config.method == "lora"
    size = _dtype_bytes(dtype)
    on_cpu = device_type == "cpu"
    unet_bytes = shape.unet_parameters * (size if lora else 4)
    trains_encoders = config.train_text_encoder
    encoder_size = size if (lora or not trains_encoders) else 4
    encoders_resident = on_cpu or trains_encoders or not options.offload_text_encoders
    encoder_bytes = shape.text_encoder_parameters * encoder_size if encoders_resident else 0
    vae_size = 4 if on_cpu else size
    vae_bytes = shape.vae_parameters * vae_size if (on_cpu or config.validation.prompts) else 0
    if lora:
        trainable = lora_parameters(shape.unet_config, config.lora)
        if trains_encoders:
            # Text-encoder LoRA is small next to the UNet's; counted at the UNet's ratio of adapted parameters.
            trainable += int(trainable * shape.text_encoder_parameters / max(shape.unet_parameters, 1))
        adapter_weights = trainable * 4
    else:
        trainable = shape.unet_parameters + (shape.text_encoder_parameters if trains_encoders else 0)
        adapter_weights = 0
    trainable_state = int(trainable * (4 + _OPTIMIZER_STATE_BYTES[options.optimizer]))
    batch = config.train_batch_size * (2 if config.prior.enabled else 1)
    trace = trace_activations(
        shape.unet_config,
        lora=config.lora if lora else None,
        resolution=resolution,
        batch=batch,
        dtype=dtype,
        gradient_checkpointing=options.gradient_checkpointing,
    )
    kind = "cpu" if on_cpu else "cuda"
    per_largest, constant, per_saved = _WORKSPACE[kind]
    overhead = RUNTIME_OVERHEAD_BYTES[kind]
    # The base model is loaded in float32 on the host (each component's file mapped while it is converted); on a CPU
    # that is the run's device. Class images are
    # rendered by the float32 pipeline on the device (half-precision autocast on a GPU).
    all_float32 = 4 * (shape.unet_parameters + shape.text_encoder_parameters + shape.vae_parameters)
    preparation = all_float32 + overhead + shape.largest_weights_file_bytes if on_cpu else 0
    # On a CPU the warm worker's kept copy of the base model is in the run's own memory.
    warm_copy = all_float32 if on_cpu and keeps_warm_copy(all_float32) else 0
    preparation += warm_copy
    if config.prior.enabled:
        # On a GPU a LoRA run renders with its frozen UNet and encoders already in `dtype` (the VAE in float32).
        rendered = (
            all_float32
            if on_cpu or not lora
            else size * (shape.unet_parameters + shape.text_encoder_parameters) + 4 * shape.vae_parameters
        )
        preparation = max(preparation, rendered + overhead + _INFERENCE_WORKSPACE_FACTOR * trace.largest_bytes)
    return MemoryEstimate(
        weights=unet_bytes + encoder_bytes + vae_bytes + adapter_weights + warm_copy,
        trainable_state=trainable_state,
        activations=trace.saved_bytes + trace.recompute_bytes,
        workspace=int(per_largest * trace.largest_bytes + constant + per_saved * trace.saved_bytes),
        overhead=overhead,
        preparation=preparation,
    )


def host_memory_bytes() -> int | None:
    """The host's total memory (MemTotal), None when it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def keeps_warm_copy(model_bytes: int, host_bytes: int | None = None) -> bool:
    """Whether a warm worker keeps a base model of `model_bytes` loaded between jobs (see WARM_COPY_SHARE)."""
    host = host_bytes if host_bytes is not None else host_memory_bytes()
    return host is None or model_bytes <= WARM_COPY_SHARE * host


def lean_optimizer(device_type: str) -> str:
    """8-bit AdamW where CUDA and bitsandbytes are present; Adafactor elsewhere (bitsandbytes needs CUDA)."""
    if device_type == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        return "adamw_8bit"
    return "adafactor"


def _candidates(config: TrainingConfig, device_type: str, mode: str) -> list[MemoryOptions]:
    requested = MemoryOptions(
        gradient_checkpointing=config.gradient_checkpointing,
        offload_text_encoders=False,
        optimizer=config.optimizer or "adamw",
    )
    if mode == "off":
        return [requested]
    candidates = [requested]
    if device_type != "cpu" and not config.train_text_encoder:
        candidates.append(dataclasses.replace(candidates[-1], offload_text_encoders=True))
    candidates.append(dataclasses.replace(candidates[-1], gradient_checkpointing=True))
    if not config.optimizer:
        candidates.append(dataclasses.replace(candidates[-1], optimizer=lean_optimizer(device_type)))
    return list(dict.fromkeys(candidates))


def plan_memory(
    shape: ModelShape,
    config: TrainingConfig,
    *,
    device_type: str,
    dtype: torch.dtype,
    resolution: int,
    budget_bytes: int | None,
) -> MemoryPlan:
    """The cheapest options whose estimate fits `budget_bytes` (None: unknown, the requested options), or the
    leanest ones when none fits (`plan.fits` is then False)."""
    mode = config.memory_plan
    plan = None
    for options in _candidates(config, device_type, mode):
        estimate = estimate_memory(shape, config, options, device_type=device_type, dtype=dtype, resolution=resolution)
        plan = MemoryPlan(options, estimate, budget_bytes, device_type, mode)
        if plan.fits:
            break
    assert plan is not None  # _candidates always yields the requested options
    return plan


def check_plan(plan: MemoryPlan) -> None:
    """FailedPrecondition when an automatic plan found no options that fit, saying what to change."""
    if plan.fits or plan.mode == "off":
        return
    assert plan.budget_bytes is not None
    raise FailedPrecondition(
        f"this job needs about {plan.estimate.total / GIB:.1f} GiB of {plan.device_type} memory even with "
        f"{plan.options.describe()}, and the device has {plan.budget_bytes / GIB:.1f} GiB; lower "
        "spec.hyperparameters.resolution or train_batch_size, train a LoRA instead of the full UNet, use a "
        "device with more memory, or set spec.hyperparameters.memory_plan to MEMORY_PLAN_OFF to try anyway"
    )


def device_budget_bytes(device: torch.device, override_mib: int = 0) -> int | None:
    """The memory a run may plan for: `override_mib` when set, else the GPU's total memory, else the system's
    available memory for a CPU run."""
    if override_mib:
        return override_mib * MIB
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    from likeness.models.inspect import available_memory_bytes

    available = available_memory_bytes("cpu")
    if available is None:
        return None
    # What this process already holds (the loaded base model) is part of what the run may use.
    return available + _resident_bytes()


def _resident_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def make_optimizer(name: str, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """The run's optimizer over `groups` (each with its own "lr"); one set of hyperparameters for all three."""
    if name == "adamw_8bit":
        if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
            raise FailedPrecondition(
                "8-bit AdamW needs a CUDA device with bitsandbytes installed (pip install 'likeness[gpu]'); "
                "set spec.hyperparameters.optimizer to OPTIMIZER_ADAFACTOR, or leave it unset for the plan's choice"
            )
        import bitsandbytes  # type: ignore[import-not-found]  # an optional dependency of GPU nodes

        return bitsandbytes.optim.AdamW8bit(groups, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)  # type: ignore[no-any-return]
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # A fixed learning rate (the run's schedule drives it), as AdamW: no relative step or parameter scaling.
        return Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False, weight_decay=1e-2)
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)


def plans_by_device_size(
    shape: ModelShape,
    config: TrainingConfig,
    *,
    dtype: torch.dtype,
    resolution: int,
    sizes_gib: tuple[int, ...] = DEVICE_SIZES_GIB,
) -> list[MemoryPlan]:
    """The automatic plan of `config` on a CUDA device of each size (what docs/trainer.md tabulates)."""
    return [
        plan_memory(shape, config, device_type="cuda", dtype=dtype, resolution=resolution, budget_bytes=size * GIB)
        for size in sizes_gib
    ]
