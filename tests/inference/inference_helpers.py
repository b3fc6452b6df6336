"""Helpers of the inference tests: small requests, reading a whole stream, a repository on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from likeness_client import ImageAssembler
from likeness_client.v1 import inference_service_pb2 as pb
from likeness_client.v1 import types_pb2

TINY_CATALOG = "tiny-sd15=builtin:sd15,tiny-sdxl=builtin:sdxl"


def make_repository(storage, catalog, *, budget_bytes: int = 256 * 2**20):
    from likeness.inference.repository import ModelRepository

    return ModelRepository(
        storage, catalog, device=torch.device("cpu"), dtype=torch.float32, subject_budget_bytes=budget_bytes
    )


@dataclass
class Stream:
    """Everything one GenerateImages stream carried, images reassembled from their chunks."""

    events: list[str] = field(default_factory=list)
    accepted: pb.Accepted | None = None
    warnings: list[str] = field(default_factory=list)
    progress: list[pb.Progress] = field(default_factory=list)
    images: dict[int, bytes] = field(default_factory=dict)
    seeds: dict[int, int] = field(default_factory=dict)
    chunks: list[pb.ImageChunk] = field(default_factory=list)
    summary: pb.Summary | None = None


def read_stream(responses) -> Stream:
    stream = Stream()
    assembler = ImageAssembler()
    for response in responses:
        kind = response.WhichOneof("event")
        stream.events.append(kind)
        if kind == "accepted":
            stream.accepted = response.accepted
        elif kind == "warning":
            stream.warnings.append(response.warning.message)
        elif kind == "progress":
            stream.progress.append(response.progress)
        elif kind == "image_chunk":
            stream.chunks.append(response.image_chunk)
            image = assembler.add(response.image_chunk)
            if image is not None:
                stream.images[image.index] = image.data
                stream.seeds[image.index] = image.seed
        elif kind == "summary":
            stream.summary = response.summary
    assembler.finish()
    return stream


def request(
    prompt: str = "a photo of {subject}",
    *,
    subject: str = "",
    steps: int = 2,
    seed: int | None = 7,
    size: int = 64,
    num_images: int = 1,
    **fields,
) -> pb.GenerateImagesRequest:
    """A small, fast request: 64 px, 2 steps."""
    parameters = types_pb2.GenerationParameters(num_inference_steps=steps, width=size, height=size)
    if seed is not None:
        parameters.seed = seed
    for name in ("negative_prompt", "guidance_scale", "lora_scale", "scheduler"):
        if name in fields:
            setattr(parameters, name, fields.pop(name))
    return pb.GenerateImagesRequest(
        subject_model_id=subject, prompt=prompt, parameters=parameters, num_images=num_images, **fields
    )
