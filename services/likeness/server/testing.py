"""Helpers for tests: run components on a real grpc.aio server on a free loopback port."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from likeness.server.app import RunningServer, start_server
from likeness.server.component import ServiceComponent
from likeness.server.settings import Settings


@asynccontextmanager
async def serve_components(
    components: Sequence[ServiceComponent], settings: Settings | None = None, grace_seconds: float = 2.0
) -> AsyncIterator[RunningServer]:
    """Starts the components with the full interceptor chain on 127.0.0.1 and a free port; stops them after.

    `running.address` is the address to dial. Metrics are not served (the registry is process-wide).
    """
    settings = dataclasses.replace(settings or Settings(), host="127.0.0.1", port=0, metrics_port=0)
    running = await start_server(components, settings, start_metrics=False)
    try:
        yield running
    finally:
        await running.stop(grace_seconds)
