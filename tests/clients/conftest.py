"""One real Likeness server for the client tests: the gallery service and the scripted trainer and inference
services on the real bootstrap, in a background thread, shared by the Python, Node and Go clients."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scripted_services import ScriptedComponent

from likeness.gallery.service import GalleryComponent
from likeness.server.settings import Settings
from likeness.server.testing import serve_components


@dataclass
class LiveServer:
    address: str
    scripted: ScriptedComponent


class _ServerThread(threading.Thread):
    """Runs `serve_components` on its own event loop until `stop` is called."""

    def __init__(self, components: list, settings: Settings) -> None:
        super().__init__(name="likeness-test-server", daemon=True)
        self.components = components
        self.settings = settings
        self.ready = threading.Event()
        self.address = ""
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to the fixture, which fails the tests with it
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        async with serve_components(self.components, self.settings, grace_seconds=0.5) as running:
            self.address = running.address
            self.ready.set()
            await self._stop_requested.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop_requested is not None:
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("clients-server")
    settings = Settings(
        storage_url=str(base / "storage"), cache_dir=str(base / "cache"), log_level="WARNING", log_format="text"
    )
    scripted = ScriptedComponent()
    thread = _ServerThread([GalleryComponent(settings), scripted], settings)
    thread.start()
    if not thread.ready.wait(timeout=60):
        raise RuntimeError("the test server did not start within 60 s")
    if thread.error is not None:
        raise RuntimeError("the test server failed to start") from thread.error
    try:
        yield LiveServer(thread.address, scripted)
    finally:
        thread.stop()
