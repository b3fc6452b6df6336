"""Per-sample LoRA: every image of a batch runs through its own LoRAs, each at its own weight, in one forward pass.

Why not PEFT's mixed-batch routing (`adapter_names=`)? It gives each sample one adapter at the adapter's one scale
(no composition, no per-request weight), loops in Python over the distinct adapters of the batch with an
index-select per adapter and layer, cannot run with merged layers, and `torch.compile` recompiles it whenever the
set of adapters changes. Here each adapted layer of the base model is replaced, once, by a `RoutedLinear` or
`RoutedConv2d` that keeps the base's own weight tensors (no copy) and adds, per sample `s`,

    delta_s(x) = sum over the sample's LoRAs a of  weight_{s,a} * scale_a * up_a @ down_a @ x

as two batched products over stacks built once per batch: `down[s]` holds the sample's LoRAs' down-projections
concatenated along the rank (zero-padded to the batch's largest total rank `R`), `up[s]` the up-projections with
`weight * scale` folded in. The cost is two extra small matmuls per layer whatever the number of distinct adapters:
a batch of 8 subjects costs what a batch of one subject costs (no gather, no Python loop in the forward).

Rows map to samples by `row % samples`: the UNet sees `[uncond(s0..sn), cond(s0..sn)]` under classifier-free
guidance and `[s0..sn]` without; the text encoders see `[s0..sn]` for the prompts and again for the negatives.

Compiled serving (`torch.compile`): the stacks are plain tensors set as attributes before each call, with a fixed
rank capacity and zeros for samples without LoRAs, so switching or mixing subjects changes values, never shapes or
the graph: nothing recompiles (diffusers' `enable_lora_hotswap(target_rank=...)` pads one adapter the same way).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from likeness.inference.lora_layers import LoraLayer


def _split_rows(x: torch.Tensor, samples: int) -> int:
    """How many copies of the batch `x` holds (2 under classifier-free guidance), checking the layout."""
    rows = x.shape[0]
    if rows % samples != 0:
        raise RuntimeError(f"a routed LoRA layer got {rows} rows for a batch of {samples} samples")
    return rows // samples


class RoutedLinear(nn.Linear):
    """An `nn.Linear` of the base model (same weight and bias objects) plus the batch's per-sample LoRA delta."""

    lora_down: torch.Tensor | None  # [samples, R, in]
    lora_up: torch.Tensor | None  # [samples, out, R]

    def __init__(self, base: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.lora_down = None
        self.lora_up = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        down, up = self.lora_down, self.lora_up
        if down is None or up is None:
            return out
        samples = down.shape[0]
        copies = _split_rows(x, samples)
        # [copies, samples, tokens, in] @ [samples, in, R] @ [samples, R, out]
        xs = x.reshape(copies, samples, -1, x.shape[-1]).to(down.dtype)
        delta = torch.matmul(torch.matmul(xs, down.transpose(1, 2)), up.transpose(1, 2))
        return out + delta.reshape(out.shape).to(out.dtype)


class RoutedConv2d(nn.Conv2d):
    """An `nn.Conv2d` of the base model (same weight and bias objects) plus the batch's per-sample LoRA delta.

    The down-projection is a convolution with the base's kernel, stride and padding, run for all samples at once as
    a grouped convolution (one group per sample); the up-projection is 1x1, a batched matmul.
    """

    lora_down: torch.Tensor | None  # [samples, R, in, kh, kw]
    lora_up: torch.Tensor | None  # [samples, out, R]

    def __init__(self, base: nn.Conv2d) -> None:
        nn.Module.__init__(self)
        for name in (
            "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
            "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice",
        ):  # fmt: skip
            setattr(self, name, getattr(base, name))
        self.weight = base.weight
        self.bias = base.bias
        self.lora_down = None
        self.lora_up = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, self.bias)
        down, up = self.lora_down, self.lora_up
        if down is None or up is None:
            return out
        samples, rank = down.shape[0], down.shape[1]
        copies = _split_rows(x, samples)
        grouped = x.reshape(copies, samples * x.shape[1], *x.shape[2:]).to(down.dtype)
        hidden = F.conv2d(
            grouped,
            down.reshape(samples * rank, *down.shape[2:]),
            None,
            self.stride,
            self.padding,  # type: ignore[arg-type]  # "same"/"valid" strings are accepted too
            self.dilation,
            samples,
        )
        hidden = hidden.reshape(copies, samples, rank, -1)
        delta = torch.matmul(up.unsqueeze(0), hidden)  # [copies, samples, out, H*W]
        return out + delta.reshape(out.shape).to(out.dtype)


Routed = RoutedLinear | RoutedConv2d


@dataclass(frozen=True)
class SampleLoras:
    """The LoRAs of one sample (image) of a batch: (adapter layers, weight) pairs; empty runs the bare base."""

    loras: tuple[tuple[dict[str, LoraLayer], float], ...] = ()


def build_stacks(
    key: str,
    module: Routed,
    samples: Sequence[SampleLoras],
    *,
    rank_capacity: int | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The `(down, up)` stacks of one layer for a batch, or None when no sample adapts it (and no capacity is set).

    With `rank_capacity` (compiled serving) the stacks always exist and have exactly that rank, zeros included.
    """
    per_sample: list[list[tuple[LoraLayer, float]]] = [
        [(layers[key], weight) for layers, weight in sample.loras if key in layers] for sample in samples
    ]
    needed = max((sum(layer.down.shape[0] for layer, _ in pieces) for pieces in per_sample), default=0)
    if rank_capacity is None:
        if needed == 0:
            return None
        rank = needed
    else:
        if needed > rank_capacity:
            raise ValueError(f"layer {key} needs rank {needed}, more than the compiled capacity {rank_capacity}")
        rank = rank_capacity
    weight = module.weight
    down = weight.new_zeros((len(samples), rank, *weight.shape[1:]), dtype=dtype, device=device)
    up = weight.new_zeros((len(samples), weight.shape[0], rank), dtype=dtype, device=device)
    for index, pieces in enumerate(per_sample):
        offset = 0
        for layer, lora_weight in pieces:
            width = layer.down.shape[0]
            down[index, offset : offset + width] = layer.down
            up[index, :, offset : offset + width] = layer.up.reshape(layer.up.shape[0], width) * (
                lora_weight * layer.scale
            )
            offset += width
    return down, up


class LoraRouter:
    """The routed layers of one base pipeline's components, and the per-batch routing of LoRAs to samples.

    Layers are replaced the first time a LoRA adapts them and stay replaced (unrouted they cost one `is None`
    check). `rank_capacity` set (compiled serving) keeps every routed layer's stacks at that fixed rank.
    """

    def __init__(self, components: dict[str, nn.Module], *, rank_capacity: int | None = None) -> None:
        self.components = components
        self.rank_capacity = rank_capacity
        self.routed: dict[str, Routed] = {}

    def prepare(self, keys: Sequence[str]) -> int:
        """Replace the layers named by `keys` ("<component>.<module path>") with routed ones; returns how many
        were new. The caller holds the base model's lock (no forward pass may run meanwhile)."""
        added = 0
        for key in keys:
            if key in self.routed:
                continue
            component_name, _, path = key.partition(".")
            component = self.components[component_name]
            parent_path, _, child = path.rpartition(".")
            parent = component.get_submodule(parent_path) if parent_path else component
            base = getattr(parent, child)
            routed: Routed
            if isinstance(base, nn.Linear):
                routed = RoutedLinear(base)
            elif isinstance(base, nn.Conv2d):
                routed = RoutedConv2d(base)
            else:
                raise TypeError(f"{key} is a {type(base).__name__}; LoRA routing adapts Linear and Conv2d layers")
            setattr(parent, child, routed)
            self.routed[key] = routed
            added += 1
        return added

    @contextmanager
    def route(self, samples: Sequence[SampleLoras], *, dtype: torch.dtype) -> Iterator[None]:
        """Set every routed layer's stacks for one batch of `samples` (one per image), and clear them after."""
        needed = {key for sample in samples for layers, _ in sample.loras for key in layers}
        missing = needed - set(self.routed)
        if missing:
            raise RuntimeError(f"LoRA layers not prepared for routing: {sorted(missing)[:3]}")
        try:
            for key, module in self.routed.items():
                stacks = build_stacks(
                    key,
                    module,
                    samples,
                    rank_capacity=self.rank_capacity,
                    dtype=dtype,
                    device=module.weight.device,
                )
                module.lora_down, module.lora_up = stacks if stacks is not None else (None, None)
            yield
        finally:
            for module in self.routed.values():
                module.lora_down = module.lora_up = None
