"""The devices a trainer's workers train on, from the `device` setting."""

from __future__ import annotations

import torch

from likeness.errors import FailedPrecondition
from likeness.trainer.supervisor import DeviceSlot


def device_slots(setting: str) -> list[DeviceSlot]:
    """The devices of the `device` setting: every visible GPU for "cuda"/"auto" with GPUs, else the CPU."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        if setting == "auto" and torch.backends.mps.is_available():
            return [DeviceSlot("mps", "mps")]
        return [DeviceSlot("cpu", "cpu")]
    if setting == "mps":
        return [DeviceSlot("mps", "mps")]
    if setting.startswith("cuda:"):
        index = setting.split(":", 1)[1]
        return [DeviceSlot(setting, "cuda", {"CUDA_VISIBLE_DEVICES": index})]
    count = torch.cuda.device_count()
    if count == 0:
        raise FailedPrecondition(f"device {setting!r} asks for CUDA but no GPU is visible; use --device cpu")
    return [DeviceSlot(f"cuda:{i}", "cuda", {"CUDA_VISIBLE_DEVICES": str(i)}) for i in range(count)]
