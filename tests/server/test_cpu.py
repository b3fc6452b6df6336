"""Torch thread count from the container's CPU limit (cgroup v2 and v1), or from the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from likeness.server.cpu import apply_cpu_threads, available_cpus, cgroup_cpu_limit


def cgroup_v2(tmp_path: Path, cpu_max: str) -> Path:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def cgroup_v1(tmp_path: Path, quota_us: int, period_us: int) -> Path:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return tmp_path


@pytest.fixture
def restore_threads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # monkeypatch restores the original value afterwards
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cgroup_quota_is_read_in_cores(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / name).mkdir()
    assert cgroup_cpu_limit(cgroup_v2(tmp_path / "a", "max 100000")) is None
    assert cgroup_cpu_limit(cgroup_v2(tmp_path / "b", "150000 100000")) == 1.5
    assert cgroup_cpu_limit(cgroup_v1(tmp_path / "c", 300000, 100000)) == 3.0
    assert cgroup_cpu_limit(cgroup_v1(tmp_path / "d", -1, 100000)) is None  # v1's "unlimited"
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_available_cpus_is_capped_by_the_quota_rounded_up(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert available_cpus(cgroup_v2(tmp_path, "50000 100000")) == 1  # half a core still gets one thread
    assert available_cpus(tmp_path / "no-cgroup") == cores
    (tmp_path / "wide").mkdir()
    assert available_cpus(cgroup_v2(tmp_path / "wide", f"{(cores + 8) * 100000} 100000")) == cores


def test_apply_sets_torch_and_the_environment_for_workers(tmp_path: Path, restore_threads) -> None:
    assert apply_cpu_threads(0, cgroup_v2(tmp_path, "100000 100000")) == 1
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert apply_cpu_threads(3, tmp_path) == 3  # an explicit setting wins over the quota
    assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
