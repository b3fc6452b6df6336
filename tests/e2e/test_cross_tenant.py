"""Tenant isolation across every RPC: tenant B's key with tenant A's ids in every id field gets NOT_FOUND (or an
empty list), and no response to B carries one of A's ids (the probe is tests/cross_tenant.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.identity.keys import ApiKeys
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness_client import LikenessClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cross_tenant import probe_every_rpc, tenant_with_everything


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross-tenant")
    settings = Settings(
        storage_url=str(root / "storage"),
        cache_dir=str(root / "cache"),
        database_url=f"sqlite:///{root / 'likeness.db'}",
        auth="api-key",
        device="cpu",
        trainer_queue_capacity=4,
    )
    database = Database(settings.database_url)
    migrate(database)
    keys = ApiKeys(database)
    key_a, key_b = keys.create("tenant-a")[1], keys.create("tenant-b")[1]
    database.dispose()
    with EmbeddedServer(settings, ["trainer", "inference", "gallery"]) as server:
        with LikenessClient(server.address, api_key=key_a, timeout=120) as client:
            ids = tenant_with_everything(client)
        yield server, ids, key_a, key_b


def test_tenant_b_never_sees_tenant_a(deployment) -> None:
    server, ids, key_a, key_b = deployment
    pairs, leaks = probe_every_rpc(server.address, ids, key_a, key_b)
    print(f"cross-tenant pairs tried: {pairs}, leaks: {len(leaks)}")
    assert pairs >= 15, pairs
    assert leaks == [], "\n".join(leaks)
