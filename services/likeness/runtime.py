"""Device and precision choices shared by training and inference: which device a `device` setting means, and why
(logged at start-up, so a GPU node that silently falls back to the CPU says so and says what to fix)."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import torch

from likeness.errors import FailedPrecondition

log = logging.getLogger("likeness.runtime")


@dataclass(frozen=True)
class CudaStatus:
    """How many CUDA devices this process sees, with their names, and why there are none when there are none."""

    count: int
    names: tuple[str, ...] = ()
    reason: str = ""


def cuda_status() -> CudaStatus:
    """Asks torch for CUDA devices, keeping the warning it gives when a driver is present but unusable (a driver
    too old for this torch build, for example), which `torch.cuda.is_available()` alone turns into a silent False."""
    if torch.version.cuda is None:
        return CudaStatus(0, reason=f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA build")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        count = torch.cuda.device_count()
        return CudaStatus(count, tuple(torch.cuda.get_device_name(index) for index in range(count)))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return CudaStatus(0, reason=f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    for warning in caught:
        text = str(warning.message).strip().splitlines()
        if text:
            return CudaStatus(0, reason=f"the CUDA driver cannot be used: {text[0]}")
    return CudaStatus(0, reason="no NVIDIA GPU or driver is visible to this process")


def resolve_device(setting: str = "auto") -> torch.device:
    """Turns the `device` setting into a torch device; `auto` prefers CUDA, then Apple MPS, then CPU. Logs the
    choice and, for a CPU fallback, why. `cuda` without a usable GPU is FailedPrecondition with the reason."""
    if setting == "auto":
        status = cuda_status()
        if status.count:
            log.info("device auto: cuda (%s)", ", ".join(status.names))
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            log.info("device auto: mps (no CUDA: %s)", status.reason)
            return torch.device("mps")
        # A CPU build of torch is a deliberate choice; a CUDA build that finds no usable GPU is the surprise.
        level = logging.INFO if torch.version.cuda is None else logging.WARNING
        log.log(level, "device auto: cpu, because %s", status.reason)
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        status = cuda_status()
        if not status.count:
            raise FailedPrecondition(f"--device {setting} needs a GPU, but {status.reason}; or use --device cpu")
        if device.index is not None and device.index >= status.count:
            raise FailedPrecondition(f"--device {setting}: only {status.count} GPU(s) are visible (cuda:0 first)")
        log.info("device %s: %s", setting, status.names[device.index or 0])
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
