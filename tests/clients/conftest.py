"""Real Likeness servers for the client tests: the gallery service and the scripted trainer and inference
services on the real bootstrap, in a background thread, shared by the Python, Node and Go clients. `live_server`
listens in plaintext without authentication; `tls_live_server` serves the same over TLS with API keys."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scripted_services import ScriptedComponent
from tls_certs import make_certificates

from likeness.controlplane.database import Database
from likeness.gallery.service import GalleryComponent
from likeness.identity.keys import ApiKeys
from likeness.server.settings import Settings
from likeness.server.testing import serve_components


@dataclass
class LiveServer:
    address: str
    scripted: ScriptedComponent
    ca_file: str = ""  # the CA to trust, when the server listens with TLS
    api_key: str = ""  # a valid key, when the server requires one


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


@contextmanager
def _serving(base: Path, **settings_fields) -> Iterator[LiveServer]:
    """The gallery and the scripted services on one server, with its storage under `base`, until the block ends."""
    settings = Settings(
        storage_url=str(base / "storage"),
        cache_dir=str(base / "cache"),
        log_level="WARNING",
        log_format="text",
        **settings_fields,
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


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with _serving(tmp_path_factory.mktemp("clients-server")) as server:
        yield server


@pytest.fixture(scope="session")
def tls_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same services over TLS (a test CA; the certificate names 127.0.0.1) with `auth="api-key"`, against
    a fresh SQLite control-plane database, and a key for tenant "acme" to call them with."""
    base = tmp_path_factory.mktemp("clients-tls-server")
    certs = make_certificates(base / "certs", "clients")
    database_url = f"sqlite:///{base / 'cp.db'}"
    with _serving(
        base,
        database_url=database_url,
        auth="api-key",
        tls_cert_file=str(certs.cert_file),
        tls_key_file=str(certs.key_file),
    ) as server:
        database = Database(database_url)  # the server migrated it at start
        try:
            _, server.api_key = ApiKeys(database).create("acme", name="client-tests")
        finally:
            database.dispose()
        server.ca_file = str(certs.ca_file)
        yield server
