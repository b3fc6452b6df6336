"""Device, precision and threading choices shared by training and inference."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from likeness.errors import FailedPrecondition

T = TypeVar("T")


def run_in_short_lived_thread(fn: Callable[..., T], *args: Any, name: str = "likeness-load") -> T:
    """Runs `fn(*args)` on a new thread that ends with it; returns its result or raises its exception.

    Why: with torch's OpenMP backend (libgomp) each thread that runs a parallel op gets its own pool of OpenMP
    workers, kept for as long as that thread lives. Once the pools' threads outnumber the cores, libgomp stops
    spin-waiting between parallel regions and every small op pays for waking its workers: on 2 cores a tiny-model
    generation ran 1.8x slower on the inference worker while an idle loader thread that had once loaded a model
    was still alive. Loading models on threads that end keeps the worker the only long-lived thread with a pool.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


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
