"""Real Likeness servers for the client tests: the gallery service and the scripted trainer and inference
services on the real bootstrap, in a background thread, shared by the Python, Node and Go clients. `live_server`
listens in plaintext without authentication; `tls_live_server` serves the same over TLS with API keys."""

from __future__ import annotations

import os
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
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings


@dataclass
class LiveServer:
    address: str
    scripted: ScriptedComponent
    ca_file: str = ""  # the CA to trust, when the server listens with TLS
    api_key: str = ""  # a valid key, when the server requires one


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
    with EmbeddedServer(settings, components=[GalleryComponent(settings), scripted], grace_seconds=0.5) as server:
        yield LiveServer(server.address, scripted)


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
