"""The shared bootstrap: error mapping, request ids, health while starting and draining, reflection, metrics."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from likeness import errors
from likeness.server import metrics
from likeness.server.context import current_request_id
from likeness.server.testing import serve_components
from likeness_client.v1 import gallery_service_pb2 as pb
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc

GALLERY = "likeness.gallery.v1.GalleryService"


class ScriptedGallery(pb_grpc.GalleryServiceServicer):
    """Answers according to the prompt text, to drive every path of the interceptor."""

    async def GetPrompt(self, request, context):
        kind = request.prompt_id
        if kind == "invalid":
            raise errors.InvalidArgument("must not be empty", field="prompt_id")
        if kind == "missing":
            raise errors.NotFound("prompt 'missing' does not exist")
        if kind == "full":
            raise errors.ResourceExhausted("queue is full; retry later")
        if kind == "bug":
            raise RuntimeError("secret internal detail /etc/passwd")
        return pb.GetPromptResponse(prompt=pb.PromptRecord(prompt_id=current_request_id()))

    async def SearchPrompts(self, request, context):
        raise errors.FailedPrecondition("index not ready")

    async def ListTemplates(self, request, context):
        raise KeyError("boom")


class ScriptedComponent:
    name = "gallery"
    service_names = (GALLERY,)

    def __init__(self) -> None:
        self.release_start = asyncio.Event()
        self.stopped = False

    def register(self, server):
        pb_grpc.add_GalleryServiceServicer_to_server(ScriptedGallery(), server)

    async def start(self):
        await self.release_start.wait()

    async def stop(self, grace_seconds):
        self.stopped = True


async def _health(channel, service=""):
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return response.status


def run(coro):
    return asyncio.run(coro)


def test_health_is_not_serving_until_started_then_serving_and_drains():
    async def scenario():
        component = ScriptedComponent()
        from likeness.server.app import start_server
        from likeness.server.settings import Settings

        settings = Settings(host="127.0.0.1", port=0, metrics_port=0)
        task = asyncio.create_task(start_server([component], settings, start_metrics=False))
        # The port is bound before components start: wait for it, then probe health while start() blocks.
        for _ in range(100):
            await asyncio.sleep(0.02)
            if task.done():
                break
        assert not task.done(), "start_server returned before the component finished starting"
        component.release_start.set()
        running = await task
        async with grpc.aio.insecure_channel(running.address) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            assert await _health(channel, GALLERY) == health_pb2.HealthCheckResponse.SERVING
            await running.set_serving(False)
            assert await _health(channel, GALLERY) == health_pb2.HealthCheckResponse.NOT_SERVING
        await running.stop(0.5)
        assert component.stopped

    run(scenario())


@pytest.mark.parametrize(
    ("prompt_id", "code", "text"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "prompt_id: must not be empty"),
        ("missing", grpc.StatusCode.NOT_FOUND, "does not exist"),
        ("full", grpc.StatusCode.RESOURCE_EXHAUSTED, "retry later"),
    ],
)
def test_domain_errors_map_to_status_codes(prompt_id, code, text):
    async def scenario():
        component = ScriptedComponent()
        component.release_start.set()
        async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.GalleryServiceStub(ch).GetPrompt(pb.GetPromptRequest(prompt_id=prompt_id))
            assert info.value.code() == code
            assert text in info.value.details()

    run(scenario())


def test_unexpected_errors_become_internal_without_leaking_details():
    async def scenario():
        component = ScriptedComponent()
        component.release_start.set()
        async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as ch:
            stub = pb_grpc.GalleryServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetPrompt(pb.GetPromptRequest(prompt_id="bug"), metadata=(("x-request-id", "req-42"),))
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in info.value.details() and "Traceback" not in info.value.details()
            assert "req-42" in info.value.details()
            # The server keeps serving after a bug in one request.
            ok = await stub.GetPrompt(pb.GetPromptRequest(prompt_id="fine"), metadata=(("x-request-id", "req-43"),))
            assert ok.prompt.prompt_id == "req-43"

    run(scenario())


def test_request_id_is_generated_and_returned_in_trailers():
    async def scenario():
        component = ScriptedComponent()
        component.release_start.set()
        async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as ch:
            call = pb_grpc.GalleryServiceStub(ch).GetPrompt(pb.GetPromptRequest(prompt_id="fine"))
            response = await call
            trailers = dict(await call.trailing_metadata())
            assert trailers["x-request-id"] == response.prompt.prompt_id
            assert len(response.prompt.prompt_id) == 32

    run(scenario())


def test_reflection_lists_the_service_and_metrics_count_codes():
    async def scenario():
        component = ScriptedComponent()
        component.release_start.set()
        before = metrics.RPC_HANDLED.labels(GALLERY, "SearchPrompts", "unary", "FAILED_PRECONDITION")._value.get()
        async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = [s.name async for r in responses for s in r.list_services_response.service]
            assert GALLERY in names and "grpc.health.v1.Health" in names
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.GalleryServiceStub(ch).SearchPrompts(pb.SearchPromptsRequest())
        after = metrics.RPC_HANDLED.labels(GALLERY, "SearchPrompts", "unary", "FAILED_PRECONDITION")._value.get()
        assert after == before + 1

    run(scenario())
