"""The contract between the shared bootstrap and one service (trainer, inference or gallery)."""

from __future__ import annotations

from typing import Protocol

import grpc


class ServiceComponent(Protocol):
    """One gRPC service with its domain core.

    The bootstrap registers it on the server, reports NOT_SERVING for its service names until `start` returns,
    and on SIGTERM reports NOT_SERVING again, waits for in-flight RPCs within the grace period, then calls `stop`.
    """

    #: Short name used in logs and on the command line: "trainer", "inference" or "gallery".
    name: str
    #: Fully qualified protobuf service names, for health checking and reflection.
    service_names: tuple[str, ...]

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the servicer(s) to the server."""
        ...

    async def start(self) -> None:
        """Loads models, recovers state; may take a while. Health is SERVING only after it returns."""
        ...

    async def stop(self, grace_seconds: float) -> None:
        """Stops background work cleanly within `grace_seconds` (in-flight RPCs have already drained)."""
        ...
