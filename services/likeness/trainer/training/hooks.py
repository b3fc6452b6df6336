"""Metric hooks: extra numbers recorded in a subject model's manifest (`metrics`) before it is published.

A hook is a function `hook(context: MetricContext) -> Mapping[str, float]`, named by a dotted path
("package.module:function") so the job worker process can import it. It receives the trained pipeline (LoRA
attached or UNet updated, on the training device), the config, the training result and the instance images, and
can, for example, render samples and score how well they show the subject. A failing hook fails the job: a
model is never published with metrics silently missing.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.trainer.config import TrainingConfig
from likeness.trainer.training.loop import TrainingResult


@dataclass
class MetricContext:
    """What a metric hook may look at."""

    pipeline: Any
    config: TrainingConfig
    result: TrainingResult
    instance_images: list[Image.Image]
    model_dir: Path


MetricHook = Callable[[MetricContext], Mapping[str, float]]


def load_hook(path: str) -> MetricHook:
    """Imports "package.module:function"; InvalidArgument when it does not name a callable."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise InvalidArgument(f"{path!r} must look like package.module:function", field="metric_hooks")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InvalidArgument(f"cannot import metric hook {path!r}: {error}", field="metric_hooks") from error
    if not callable(hook):
        raise InvalidArgument(f"metric hook {path!r} is not callable", field="metric_hooks")
    return hook


def run_hooks(paths: list[str], context: MetricContext) -> dict[str, float]:
    """Runs each hook and merges their metrics; FailedPrecondition for a non-numeric or non-finite value."""
    metrics: dict[str, float] = {}
    for path in paths:
        for name, value in load_hook(path)(context).items():
            number = float(value)
            if not math.isfinite(number):
                raise FailedPrecondition(f"metric hook {path!r} returned {name}={value!r}, not a finite number")
            metrics[str(name)] = number
    return metrics
