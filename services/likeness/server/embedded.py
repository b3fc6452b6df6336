"""Runs services inside the current process on a background event loop: the one harness for the demo, the eval,
scripts and every test that wants the real gRPC path (full interceptor chain, health, reflection) without
managing a separate server process."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence

from likeness.server.app import RunningServer, start_server
from likeness.server.component import ServiceComponent
from likeness.server.settings import Settings


class EmbeddedServer:
    """`with EmbeddedServer(settings, ["trainer", "inference", "gallery"]) as server: server.address`.

    `components` serves ready-made components instead of building them by name (tests inject a storage or a
    catalog that way); `server.components` are the ones running, `server.running` the started server.
    """

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] = (),
        *,
        components: Sequence[ServiceComponent] = (),
        grace_seconds: float = 10.0,
    ) -> None:
        if bool(services) == bool(components):
            raise ValueError("give either service names or components")
        self.components = list(components)
        # An ephemeral port, so the demo or an eval never collides with a server already running here.
        self.settings = dataclasses.replace(settings, host="127.0.0.1", port=0, metrics_port=0)
        self.services = list(services)
        self.grace_seconds = grace_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="likeness-embedded", daemon=True)
        self._running: RunningServer | None = None

    @property
    def address(self) -> str:
        if self._running is None:
            raise RuntimeError("the embedded server is not started")
        return self._running.address

    def __enter__(self) -> EmbeddedServer:
        from likeness.server.composition import build_components

        self._thread.start()
        if not self.components:
            self.components = build_components(self.services, self.settings)
        future = asyncio.run_coroutine_threadsafe(
            start_server(self.components, self.settings, start_metrics=False), self._loop
        )
        try:
            self._running = future.result()
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.stop(self.grace_seconds), self._loop).result()
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
