"""The devices a trainer's workers train on, from the `device` setting."""

from __future__ import annotations

import logging

import torch

from likeness.errors import FailedPrecondition
from likeness.runtime import resolve_device
from likeness.trainer.supervisor import DeviceSlot

log = logging.getLogger("likeness.trainer")


def device_slots(setting: str, processes_per_job: int = 1) -> list[DeviceSlot]:
    """The slots of the `device` setting, each running one job at a time on `processes_per_job` devices.

    CUDA: the node's visible GPUs in groups of `processes_per_job` (4 GPUs, 2 per job: slots cuda:0-1 and
    cuda:2-3; GPUs left over are unused and logged). CPU or MPS: one slot, whose processes share the machine.
    `likeness.runtime.resolve_device` decides the device (and logs why) and refuses `cuda` without a usable GPU.
    """
    device = resolve_device(setting)
    if device.type != "cuda":
        return [DeviceSlot(device.type, device.type, devices=processes_per_job)]
    indices = [device.index] if device.index is not None else list(range(torch.cuda.device_count()))
    if len(indices) < processes_per_job:
        raise FailedPrecondition(
            f"--trainer-processes-per-job {processes_per_job} needs that many GPUs, but --device {setting} gives "
            f"{len(indices)}; lower it or use --device cuda on a node with more GPUs"
        )
    groups = [indices[start : start + processes_per_job] for start in range(0, len(indices), processes_per_job)]
    slots = []
    for group in groups:
        if len(group) < processes_per_job:
            log.warning("GPUs %s left unused: fewer than --trainer-processes-per-job %d", group, processes_per_job)
            continue
        name = f"cuda:{group[0]}" if len(group) == 1 else f"cuda:{group[0]}-{group[-1]}"
        visible = ",".join(str(index) for index in group)
        slots.append(DeviceSlot(name, "cuda", {"CUDA_VISIBLE_DEVICES": visible}, devices=len(group)))
    return slots
