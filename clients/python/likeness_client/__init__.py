"""likeness-client: the Python client of the Likeness services (trainer, inference, gallery), on grpcio and
protobuf alone.

    from likeness_client import LikenessClient, AsyncLikenessClient
    from likeness_client.v1 import trainer_service_pb2 as trainer_pb      # the generated messages and stubs

The clients load lazily, so `likeness_client.errors` (which the services' cores share) pulls in no gRPC.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "LikenessClient": "likeness_client.sync",
    "AsyncLikenessClient": "likeness_client.aio",
    "GeneratedImage": "likeness_client.messages",
    "GenerationResult": "likeness_client.messages",
    "GenerationEvent": "likeness_client.messages",
    "ImageAssembler": "likeness_client.messages",
    "DownloadedFile": "likeness_client.messages",
    "PhotoSource": "likeness_client.messages",
    "UPLOAD_CHUNK_BYTES": "likeness_client.messages",
    "DEFAULT_ADDRESS": "likeness_client.channel",
    "MAX_MESSAGE_BYTES": "likeness_client.channel",
    "channel_options": "likeness_client.channel",
    "translate_error": "likeness_client.status",
}

__all__ = [
    "DEFAULT_ADDRESS",
    "MAX_MESSAGE_BYTES",
    "UPLOAD_CHUNK_BYTES",
    "AsyncLikenessClient",
    "DownloadedFile",
    "GeneratedImage",
    "GenerationEvent",
    "GenerationResult",
    "ImageAssembler",
    "LikenessClient",
    "PhotoSource",
    "__version__",
    "channel_options",
    "translate_error",
]

if TYPE_CHECKING:
    from likeness_client.aio import AsyncLikenessClient
    from likeness_client.channel import DEFAULT_ADDRESS, MAX_MESSAGE_BYTES, channel_options
    from likeness_client.messages import (
        UPLOAD_CHUNK_BYTES,
        DownloadedFile,
        GeneratedImage,
        GenerationEvent,
        GenerationResult,
        ImageAssembler,
        PhotoSource,
    )
    from likeness_client.status import translate_error
    from likeness_client.sync import LikenessClient


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'likeness_client' has no attribute {name!r}")
    return getattr(import_module(module), name)
