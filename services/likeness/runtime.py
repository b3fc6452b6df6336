"""Device and precision choices shared by training and inference."""

from __future__ import annotations

import torch

from likeness.errors import FailedPrecondition


def resolve_device(setting: str = "auto") -> torch.device:
    """Turns the `device` setting into a torch device; `auto` prefers CUDA, then Apple MPS, then CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FailedPrecondition(f"device {setting!r} was asked for but no CUDA device is visible; use --device cpu")
    return device


def inference_dtype(device: torch.device) -> torch.dtype:
    """Half precision on accelerators (fp16 weights are what SD checkpoints ship), fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def supports_bf16(device: torch.device) -> bool:
    """True where bf16 autocast is both available and fast enough to be worth it for training."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()
