"""Authentication with API keys: the key store on SQLite and PostgreSQL, the interceptor through real gRPC
services, the Python client and grpcurl, and `likeness keys`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness.cli.main import main
from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.errors import InvalidArgument, NotFound, Unauthenticated
from likeness.gallery.service import GalleryComponent
from likeness.identity.keys import ApiKeys, Role
from likeness.server.settings import Settings
from likeness.server.testing import serve_components
from likeness_client import LikenessClient
from likeness_client.v1 import gallery_service_pb2 as pb
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_shown_once_stored_hashed_and_verified(database) -> None:
    clock = Clock()
    keys = ApiKeys(database, clock=clock)
    record, key = keys.create("acme", Role.ADMIN, name="ci", expires_in=3600)
    assert key.startswith(f"lk_{record.key_id}_") and record.tenant == "acme"
    with database.read() as connection:
        stored = connection.exec_driver_sql("SELECT * FROM api_keys").mappings().all()
    assert all(key not in json.dumps(dict(row), default=str) for row in stored)  # only its hash is kept
    principal = keys.verify(key)
    assert (principal.tenant, principal.role, principal.key_id) == ("acme", Role.ADMIN, record.key_id)
    clock.now += 3601
    with pytest.raises(Unauthenticated, match="expired"):
        keys.verify(key)
    _, other = keys.create("acme")
    keys.revoke(keys.verify(other).key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.verify(other)
    with pytest.raises(Unauthenticated, match="not known"):
        keys.verify(other[:-4] + "AAAA")
    with pytest.raises(Unauthenticated, match="malformed"):
        keys.verify("Bearer nonsense")
    assert [r.state(clock.now) for r in keys.list("acme")] == ["expired", "revoked"]
    with pytest.raises(NotFound):
        keys.revoke("000000000000")
    with pytest.raises(InvalidArgument, match="role"):
        keys.create("acme", "root")
    with pytest.raises(InvalidArgument):
        keys.create("Not A Tenant")


def run_gallery(tmp_path: Path, scenario) -> None:
    settings = Settings(
        storage_url=str(tmp_path / "storage"),
        cache_dir=str(tmp_path / "cache"),
        database_url=f"sqlite:///{tmp_path / 'likeness.db'}",
        auth="api-key",
        auth_cache_seconds=0,  # every call checks the database, so a revocation shows at once
    )

    async def main_() -> None:
        async with serve_components([GalleryComponent(settings)], settings) as running:
            await scenario(running.address)

    asyncio.run(main_())


def test_every_rpc_but_health_needs_a_valid_key_and_the_key_picks_the_tenant(tmp_path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    migrate(database)
    keys = ApiKeys(database)
    _, acme = keys.create("acme")
    _, globex = keys.create("globex")

    async def scenario(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GalleryServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                await health.Check(health_pb2.HealthCheckRequest())
            ).status == health_pb2.HealthCheckResponse.SERVING
            for metadata, reason in [
                ((), "requires an API key"),
                ((("authorization", f"Basic {acme}"),), "Bearer"),
                ((("authorization", "Bearer lk_nope"),), "malformed"),
                ((("authorization", "Bearer " + acme[:-4] + "AAAA"),), "not known"),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.SearchPrompts(pb.SearchPromptsRequest(query="x"), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert reason in caught.value.details() and acme not in caught.value.details()
            as_acme = (("authorization", f"Bearer {acme}"),)
            recorded = await stub.RecordPrompt(pb.RecordPromptRequest(prompt="a private lighthouse"), metadata=as_acme)
            prompt_id = recorded.prompt.prompt_id
            as_globex = (("authorization", f"Bearer {globex}"),)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetPrompt(pb.GetPromptRequest(prompt_id=prompt_id), metadata=as_globex)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            keys.revoke(keys.verify(acme).key_id)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetPrompt(pb.GetPromptRequest(prompt_id=prompt_id), metadata=as_acme)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in caught.value.details()

        # The blocking client sends $LIKENESS_API_KEY or its api_key argument on every call.
        def client_calls() -> None:
            with LikenessClient(address, api_key=globex) as client:
                assert client.record_prompt("a globex castle").prompt.prompt_id
            with LikenessClient(address, api_key="") as client, pytest.raises(Unauthenticated):
                client.search_prompts("castle")

        await asyncio.to_thread(client_calls)
        grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
        if Path(grpcurl).exists():
            call = [grpcurl, "-plaintext", "-d", '{"query": "castle"}']
            bare = await asyncio.to_thread(
                subprocess.run,
                [*call, address, "likeness.gallery.v1.GalleryService/SearchPrompts"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert "Unauthenticated" in bare.stdout + bare.stderr
            keyed = await asyncio.to_thread(
                subprocess.run,
                [
                    *call,
                    "-H",
                    f"authorization: Bearer {globex}",
                    address,
                    "likeness.gallery.v1.GalleryService/SearchPrompts",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert keyed.returncode == 0 and "globex castle" in keyed.stdout

    run_gallery(tmp_path, scenario)
    database.dispose()


def test_keys_cli_creates_lists_and_revokes(tmp_path, capsys) -> None:
    url = ["--database-url", f"sqlite:///{tmp_path / 'keys.db'}"]
    assert main(["keys", "create", "--tenant", "acme", "--name", "backend", "--expires-in", "30d", *url]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("lk_") and "shown only now" in out.err
    key_id = key.split("_")[1]
    assert main(["keys", "list", *url]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "active" in listing and key not in listing
    assert main(["keys", "revoke", key_id, *url]) == 0
    assert main(["keys", "list", "--tenant", "acme", *url]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "create", "--tenant", "acme", "--expires-in", "soon", *url]) != 0
