"""How many CPU threads torch may use: the container's CPU limit, not the node's core count.

In a Kubernetes pod `os.cpu_count()` reports every core of the node while the cgroup quota allows a few; torch's
default thread pool sized to the node then oversubscribes the quota and each step is throttled many times over.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

log = logging.getLogger("likeness.server")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_v2_limit(root: Path) -> float | None:
    """Cores from cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"); None when absent or unlimited."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100_000)
    except (OSError, ValueError):
        return None


def _cgroup_v1_limit(root: Path) -> float | None:
    """Cores from cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; None when absent or unlimited (-1)."""
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in cores (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), or None when unlimited."""
    if (root / "cpu.max").exists():
        return _cgroup_v2_limit(root)
    return _cgroup_v1_limit(root)


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Cores this process may really use: its CPU affinity, capped by the cgroup quota (rounded up), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def apply_cpu_threads(setting: int, root: Path = CGROUP_ROOT) -> int:
    """Sizes torch's thread pool: `setting` when positive, else `available_cpus()`.

    Also exported as OMP_NUM_THREADS so processes started later (training workers) size their pools the same way.
    """
    threads = setting if setting > 0 else available_cpus(root)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")  # gallery-only servers never import torch; don't pay for it here
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("cpu threads", extra={"threads": threads, "source": "setting" if setting > 0 else "cgroup/affinity"})
    return threads
