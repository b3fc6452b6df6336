"""Retries the gRPC way: the clients' service config retries RESOURCE_EXHAUSTED after the delay the server pushes
back (grpc-retry-pushback-ms), and does not retry when the delay is too long for an automatic retry, surfacing
RetryInfo instead. A real grpc.aio server behind the services' own interceptor, both clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from likeness import errors
from likeness.server.interceptors import ServerInterceptor
from likeness_client import AsyncLikenessClient, LikenessClient
from likeness_client import errors as client_errors
from likeness_client.v1 import gallery_service_pb2 as pb
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc


class _BusyGallery(pb_grpc.GalleryServiceServicer):
    """ListTemplates answers RESOURCE_EXHAUSTED (retry after `delay` s) `failures` times, then succeeds."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self.failures = 0
        self.delay = 0.0

    async def ListTemplates(self, request, context):
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise errors.ResourceExhausted("the queue is full", retry_after=self.delay, quota="queue")
        return pb.ListTemplatesResponse(templates=[pb.Template(template_id="t1")])


@pytest.fixture(scope="module")
def busy_server() -> Iterator[tuple[str, _BusyGallery]]:
    servicer = _BusyGallery()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        server = grpc.aio.server(interceptors=[ServerInterceptor()])
        pb_grpc.add_GalleryServiceServicer_to_server(servicer, server)
        state["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = asyncio.Event()
        state["stop"], state["loop"] = stop, asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await server.stop(0)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"127.0.0.1:{state['port']}", servicer
    state["loop"].call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
    thread.join(10)


def _arm(servicer: _BusyGallery, failures: int, delay: float) -> None:
    servicer.attempts.clear()
    servicer.failures, servicer.delay = failures, delay


def test_sync_client_retries_after_the_pushed_back_delay(busy_server) -> None:
    address, servicer = busy_server
    _arm(servicer, failures=2, delay=0.4)
    with LikenessClient(address) as client:
        templates = client.list_templates()
    assert [t.template_id for t in templates] == ["t1"]
    assert len(servicer.attempts) == 3
    gaps = [later - earlier for earlier, later in zip(servicer.attempts, servicer.attempts[1:], strict=False)]
    assert min(gaps) >= 0.35, f"retried before the server's delay: {gaps}"


def test_a_long_delay_is_not_retried_and_surfaces_retry_info(busy_server) -> None:
    address, servicer = busy_server
    _arm(servicer, failures=5, delay=45.0)
    with LikenessClient(address) as client, pytest.raises(client_errors.ResourceExhausted) as raised:
        client.list_templates()
    assert len(servicer.attempts) == 1
    assert raised.value.retry_after == pytest.approx(45.0)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_asyncio_client_retries_the_same_way(busy_server) -> None:
    address, servicer = busy_server
    _arm(servicer, failures=1, delay=0.3)

    async def call() -> list[pb.Template]:
        async with AsyncLikenessClient(address) as client:
            return await client.list_templates()

    assert [t.template_id for t in asyncio.run(call())] == ["t1"]
    assert len(servicer.attempts) == 2 and servicer.attempts[1] - servicer.attempts[0] >= 0.25


def test_retries_can_be_turned_off(busy_server) -> None:
    address, servicer = busy_server
    _arm(servicer, failures=1, delay=0.1)
    with LikenessClient(address, retries=False) as client, pytest.raises(client_errors.ResourceExhausted):
        client.list_templates()
    assert len(servicer.attempts) == 1


def test_an_rpc_the_server_does_not_implement_is_unimplemented_not_internal(busy_server) -> None:
    address, _ = busy_server  # the scripted gallery implements ListTemplates only
    with LikenessClient(address) as client, pytest.raises(client_errors.LikenessError) as raised:
        client.get_prompt("pr-1")
    assert raised.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert "GetPrompt is not implemented" in str(raised.value)
