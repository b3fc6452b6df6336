"""Resumable checkpoints: the local folder format, and their home in shared storage.

A checkpoint folder holds everything needed to continue the same run:

    trainable.safetensors   the trained parameters only (LoRA weights, or the full UNet / text encoder)
    optimizer.pt            the optimizer state (AdamW moments); loaded with weights_only=True
    scheduler.pt            the learning-rate scheduler state
    scaler.pt               the fp16 loss scaler's state (scale, growth tracker), in fp16 runs only
    rng-{rank}.pt           each process's Python / NumPy / torch (CPU and CUDA) random state
    state.json              step, seed, loss history, smoothed loss; written last, it marks the folder complete

In storage a checkpoint is published atomically under `jobs/{job}/checkpoints/step-{step:08d}/` (state.json as
the marker), and only the last K are kept.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from likeness.errors import AlreadyExists, FailedPrecondition
from likeness.storage.base import Storage
from likeness.storage.layout import checkpoint_prefix, job_checkpoints_prefix, parse_checkpoint_step

STATE_NAME = "state.json"
TRAINABLE_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
FORMAT_VERSION = 1


def _rng_name(rank: int) -> str:
    return f"rng-{rank}.pt"


def write_rng_state(folder: Path, rank: int) -> None:
    """Saves this process's random state into `folder` (every process writes its own file)."""
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # legacy=True (the default) always gives the tuple form
    state = {
        "python": random.getstate(),
        # NumPy's key array is stored as a tensor so the file loads with weights_only=True.
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, folder / _rng_name(rank))


def _restore_rng_state(folder: Path, rank: int) -> None:
    path = folder / _rng_name(rank)
    if not path.is_file():
        # Resumed with more processes than the checkpoint had: start the extra ones from rank 0's state.
        path = folder / _rng_name(0)
    state = torch.load(path, weights_only=True)
    random.setstate(_as_python_state(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def _as_python_state(value: Any) -> Any:
    # random.setstate needs tuples all the way down; serialisation may hand back lists.
    return tuple(_as_python_state(item) for item in value) if isinstance(value, list | tuple) else value


def _trainable_parameters(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    return {
        f"{name}.{param_name}": param
        for name, module in modules.items()
        for param_name, param in module.named_parameters()
        if param.requires_grad
    }


def write_checkpoint(
    folder: Path,
    *,
    step: int,
    modules: dict[str, torch.nn.Module],
    optimizer: Any,
    lr_scheduler: Any,
    training_state: dict[str, Any],
    scaler: Any = None,
) -> None:
    """Writes the main process's part of a checkpoint (everything but the other processes' RNG files).

    `scaler` is the fp16 run's gradient scaler (accelerate's `accelerator.scaler`): without its scale and growth
    tracker a resumed fp16 run would start over from the initial scale, skipping steps the uninterrupted run took.
    """
    tensors = {key: param.detach().to("cpu").contiguous() for key, param in _trainable_parameters(modules).items()}
    save_file(tensors, str(folder / TRAINABLE_NAME))
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_NAME)
    torch.save(lr_scheduler.state_dict(), folder / SCHEDULER_NAME)
    if scaler is not None:
        torch.save(scaler.state_dict(), folder / SCALER_NAME)
    state = {"format_version": FORMAT_VERSION, "step": step, **training_state}
    (folder / STATE_NAME).write_text(json.dumps(state, allow_nan=True), encoding="utf-8")


def read_checkpoint(
    folder: Path,
    *,
    modules: dict[str, torch.nn.Module],
    optimizer: Any,
    lr_scheduler: Any,
    rank: int,
    scaler: Any = None,
) -> dict[str, Any]:
    """Restores parameters, optimizer, scheduler, the fp16 scaler (when the run has one and the checkpoint holds
    its state) and this process's RNG from `folder`; returns state.json."""
    state_path = folder / STATE_NAME
    if not state_path.is_file():
        raise FailedPrecondition(f"checkpoint {folder} is incomplete (no {STATE_NAME})")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    saved = load_file(str(folder / TRAINABLE_NAME))
    parameters = _trainable_parameters(modules)
    if set(saved) != set(parameters):
        missing = sorted(set(parameters) - set(saved))[:3]
        raise FailedPrecondition(
            f"checkpoint {folder} does not match this run's trainable parameters (e.g. missing {missing}); "
            "it was written by a different configuration"
        )
    with torch.no_grad():
        for key, param in parameters.items():
            param.copy_(saved[key].to(param.device, param.dtype))
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_NAME, weights_only=True))
    lr_scheduler.load_state_dict(torch.load(folder / SCHEDULER_NAME, weights_only=True))
    if scaler is not None and (folder / SCALER_NAME).is_file():
        scaler.load_state_dict(torch.load(folder / SCALER_NAME, weights_only=True))
    _restore_rng_state(folder, rank)
    return state


class CheckpointStore:
    """The checkpoints of one job in shared storage: publish atomically, keep the last K, fetch the latest."""

    def __init__(self, storage: Storage, tenant: str, job_id: str) -> None:
        self.storage = storage
        self.tenant = tenant
        self.job_id = job_id

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending."""
        prefix = job_checkpoints_prefix(self.tenant, self.job_id)
        steps = []
        for name in self.storage.list_dirs(prefix):
            step = parse_checkpoint_step(name)
            if step is not None and self.storage.is_published(f"{prefix}/{name}", marker=STATE_NAME):
                steps.append(step)
        return sorted(steps)

    def publish(self, step: int, folder: Path, keep_last: int) -> tuple[str, float]:
        """Publishes `folder` as the checkpoint of `step`, prunes older ones; returns (key, seconds taken)."""
        started = time.monotonic()
        prefix = checkpoint_prefix(self.tenant, self.job_id, step)
        if self.storage.list(prefix):
            # A leftover of a run killed after this step (or while writing it): replace it.
            self.storage.delete_prefix(prefix, marker=STATE_NAME)
        try:
            self.storage.publish_dir(folder, prefix, marker=STATE_NAME)
        except AlreadyExists:
            self.storage.delete_prefix(prefix, marker=STATE_NAME)
            self.storage.publish_dir(folder, prefix, marker=STATE_NAME)
        self.prune(keep_last)
        return prefix, time.monotonic() - started

    def prune(self, keep_last: int) -> None:
        for step in self.steps()[:-keep_last] if keep_last > 0 else self.steps():
            self.storage.delete_prefix(checkpoint_prefix(self.tenant, self.job_id, step), marker=STATE_NAME)

    def download(self, step: int, into: Path | None = None) -> Path:
        """A local copy of the checkpoint of `step` (a fresh temporary folder unless `into` is given)."""
        local = Path(into) if into is not None else Path(tempfile.mkdtemp(prefix="likeness-resume-"))
        return self.storage.download_dir(checkpoint_prefix(self.tenant, self.job_id, step), local)

    def delete_all(self) -> None:
        self.storage.delete_prefix(job_checkpoints_prefix(self.tenant, self.job_id), marker=STATE_NAME)
