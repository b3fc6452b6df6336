"""The devices a trainer's workers train on, from the `device` setting."""

from __future__ import annotations

import torch

from likeness.runtime import resolve_device
from likeness.trainer.supervisor import DeviceSlot


def device_slots(setting: str) -> list[DeviceSlot]:
    """The devices of the `device` setting: every visible GPU for "cuda"/"auto" with GPUs, else the CPU (or MPS).
    `likeness.runtime.resolve_device` decides (and logs why) and refuses `cuda` without a usable GPU."""
    device = resolve_device(setting)
    if device.type != "cuda":
        return [DeviceSlot(device.type, device.type)]
    if device.index is not None:
        return [DeviceSlot(setting, "cuda", {"CUDA_VISIBLE_DEVICES": str(device.index)})]
    count = torch.cuda.device_count()
    return [DeviceSlot(f"cuda:{i}", "cuda", {"CUDA_VISIBLE_DEVICES": str(i)}) for i in range(count)]
