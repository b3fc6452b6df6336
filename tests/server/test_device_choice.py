"""`--device`: `auto` says which device it chose and why it fell back to the CPU (a CUDA build of torch with an
unusable driver used to fall back silently), and `cuda` without a usable GPU is one line saying why."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from likeness.errors import FailedPrecondition
from likeness.runtime import cuda_status, resolve_device
from likeness.trainer.devices import device_slots


def _cuda_build_with_a_broken_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """What torch does on a node whose driver is older than its CUDA build: a warning, then False."""

    def is_available() -> bool:
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).", stacklevel=2
        )
        return False

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_auto_logs_why_a_cuda_build_fell_back_to_the_cpu(monkeypatch, caplog) -> None:
    _cuda_build_with_a_broken_driver(monkeypatch)
    with caplog.at_level(logging.INFO, logger="likeness.runtime"):
        assert resolve_device("auto").type == "cpu"
    (record,) = [r for r in caplog.records if r.name == "likeness.runtime"]
    assert record.levelno == logging.WARNING
    assert "driver on your system is too old" in record.getMessage()


def test_cuda_without_a_usable_gpu_is_one_line_with_the_reason(monkeypatch) -> None:
    _cuda_build_with_a_broken_driver(monkeypatch)
    for setting in ("cuda", "cuda:1"):
        with pytest.raises(FailedPrecondition) as raised:
            resolve_device(setting)
        message = str(raised.value)
        assert "\n" not in message and "too old" in message and "--device cpu" in message
    with pytest.raises(FailedPrecondition, match="too old"):
        device_slots("cuda")  # the trainer's workers decide the same way


def test_hidden_gpus_and_cpu_builds_are_named(monkeypatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES" in cuda_status().reason
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "no CUDA support" in cuda_status().reason


def test_this_machine_resolves_auto_and_cpu_to_the_cpu_slots() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: auto means cuda here")
    assert resolve_device("auto").type in ("cpu", "mps")
    assert [slot.name for slot in device_slots("cpu")] == ["cpu"]
