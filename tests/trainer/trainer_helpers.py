"""Shared helpers of the trainer tests: synthetic photos, specs, and waiting on jobs."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image, ImageDraw

from likeness_client.v1 import trainer_service_pb2 as pb
from likeness_client.v1 import types_pb2


def subject_image(index: int, size: int = 64) -> Image.Image:
    """A distinct synthetic photo: a coloured ellipse on a plain background."""
    rng = np.random.default_rng(index)
    background = tuple(int(v) for v in rng.integers(0, 255, 3))
    foreground = tuple(int(v) for v in rng.integers(0, 255, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    offset = size * (index % 4) // 16
    draw.ellipse([size // 5 + offset, size // 5, size * 3 // 4, size * 3 // 4 + offset], fill=foreground)
    return image


def photo_bytes(index: int, size: int = 96, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    subject_image(index, size).save(buffer, fmt)
    return buffer.getvalue()


def photos(count: int = 4, size: int = 96) -> list[tuple[str, bytes]]:
    return [(f"photo-{i}.png", photo_bytes(i, size)) for i in range(count)]


def job_spec(
    base_model: str = "tiny-sd15", *, method: str = "lora", steps: int = 4, dataset_id: str = "", **extra
) -> pb.TrainingJobSpec:
    methods = {"lora": types_pb2.TRAINING_METHOD_LORA, "full": types_pb2.TRAINING_METHOD_FULL}
    spec = pb.TrainingJobSpec(
        base_model=base_model,
        class_noun="dog",
        method=methods[method],
        dataset_id=dataset_id,
        hyperparameters=pb.Hyperparameters(max_train_steps=steps, seed=1),
        lora=pb.LoraConfig(rank=4),
        checkpointing=pb.CheckpointConfig(every_n_steps=0),
    )
    for name, value in extra.items():
        field = getattr(spec, name)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(spec, name, value)
    return spec


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class BackgroundTrainer:
    """The trainer service on a real gRPC server (full interceptor chain) in a background event loop."""

    def __init__(self, settings) -> None:
        from likeness.server.embedded import EmbeddedServer
        from likeness.trainer.service import TrainerComponent

        self.component = TrainerComponent(settings)
        self._server = EmbeddedServer(settings, components=[self.component], grace_seconds=2.0).__enter__()
        self.address = self._server.address

    def close(self) -> None:
        self._server.__exit__(None, None, None)
