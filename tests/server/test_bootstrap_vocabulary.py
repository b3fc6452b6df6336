"""What the shared bootstrap advertises and exports, checked on a real server: every method reflection and health
name answers, and every metric series the alerts read exists from the first scrape, under labels that do not
collide with the ones Prometheus adds."""

from __future__ import annotations

import asyncio
import importlib
import re
import shutil
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from likeness.server import metrics
from likeness.server.testing import serve_components
from likeness_client.v1 import gallery_service_pb2_grpc, trainer_service_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
GALLERY = "likeness.gallery.v1.GalleryService"
TRAINER = "likeness.trainer.v1.TrainerService"
HEALTH = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}


class BareComponent:
    """A component serving a generated servicer base class (every method UNIMPLEMENTED): only names matter."""

    def __init__(self, name: str, service_name: str, add, servicer) -> None:
        self.name = name
        self.service_names = (service_name,)
        self._add = add
        self._servicer = servicer

    def register(self, server):
        self._add(self._servicer, server)

    async def start(self):
        pass

    async def stop(self, grace_seconds):
        pass


def components() -> list[BareComponent]:
    return [
        BareComponent(
            "gallery",
            GALLERY,
            gallery_service_pb2_grpc.add_GalleryServiceServicer_to_server,
            gallery_service_pb2_grpc.GalleryServiceServicer(),
        ),
        BareComponent(
            "trainer",
            TRAINER,
            trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server,
            trainer_service_pb2_grpc.TrainerServiceServicer(),
        ),
    ]


def run(coro):
    return asyncio.run(coro)


def grpcurl() -> str | None:
    path = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return path if Path(path).exists() else None


async def run_grpcurl(*args: str) -> str:
    """grpcurl in a subprocess, without blocking the event loop the server runs on."""
    process = await asyncio.create_subprocess_exec(
        grpcurl(), "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


def methods_of(service_name: str) -> list[tuple[str, str]]:
    from google.protobuf import descriptor_pool

    service = descriptor_pool.Default().FindServiceByName(service_name)
    return [(m.name, RPC_TYPES[m.client_streaming, m.server_streaming]) for m in service.methods]


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# ------------------------------------------------------------------------------------------------- health


def test_health_list_answers_every_registered_service():
    async def scenario():
        async with serve_components(components()) as running, grpc.aio.insecure_channel(running.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=5)
            statuses = {name: response.status for name, response in listed.statuses.items()}
            assert statuses == {"": SERVING, GALLERY: SERVING, TRAINER: SERVING}
            # List reports what Check reports, also while draining.
            await running.set_serving(False)
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=5)
            assert {name: r.status for name, r in listed.statuses.items()} == dict.fromkeys(statuses, NOT_SERVING)

    run(scenario())


@pytest.mark.skipif(grpcurl() is None, reason="grpcurl is not installed")
def test_grpcurl_finds_and_calls_health_list():
    async def scenario():
        async with serve_components(components()) as running:
            assert "List" in await run_grpcurl(running.address, "describe", HEALTH)
            answer = yaml.safe_load(await run_grpcurl(running.address, f"{HEALTH}/List"))
            assert {name: status["status"] for name, status in answer["statuses"].items()} == {
                "": "SERVING",
                GALLERY: "SERVING",
                TRAINER: "SERVING",
            }

    run(scenario())


# --------------------------------------------------------------------------------------------- reflection


async def _list_services(channel: grpc.aio.Channel, service: str) -> list[str]:
    """ListServices through `service`; v1 and v1alpha share their messages field for field."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return [s.name async for response in call for s in response.list_services_response.service]


async def _file_containing(channel: grpc.aio.Channel, service: str, symbol: str) -> list[bytes]:
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)]))
    responses = [response async for response in call]
    assert len(responses) == 1 and not responses[0].HasField("error_response"), responses
    return list(responses[0].file_descriptor_response.file_descriptor_proto)


def test_reflection_v1_and_v1alpha_both_list_every_service():
    async def scenario():
        async with serve_components(components()) as running, grpc.aio.insecure_channel(running.address) as ch:
            expected = {GALLERY, TRAINER, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA}
            assert set(await _list_services(ch, REFLECTION_V1)) == expected
            assert set(await _list_services(ch, REFLECTION_V1ALPHA)) == expected
            # Each advertised service resolves to its file, the v1 reflection service included.
            from google.protobuf import descriptor_pb2

            for name in expected:
                files = [
                    descriptor_pb2.FileDescriptorProto.FromString(f)
                    for f in await _file_containing(ch, REFLECTION_V1, name)
                ]
                package, _, short = name.rpartition(".")
                assert any(f.package == package and short in [s.name for s in f.service] for f in files), name

    run(scenario())


def test_the_v1alpha_stub_still_works():
    async def scenario():
        async with serve_components(components()) as running, grpc.aio.insecure_channel(running.address) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = [s.name async for r in responses for s in r.list_services_response.service]
            assert GALLERY in names and REFLECTION_V1 in names

    run(scenario())


@pytest.mark.skipif(grpcurl() is None, reason="grpcurl is not installed")
def test_grpcurl_lists_and_describes_every_service():
    async def scenario():
        async with serve_components(components()) as running:
            listed = set((await run_grpcurl(running.address, "list")).split())
            assert listed == {GALLERY, TRAINER, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA}
            # `describe` without a symbol resolves every listed service through reflection.
            described = await run_grpcurl(running.address, "describe")
            assert "ServerReflectionInfo" in described and "GetPrompt" in described

    run(scenario())


# ---------------------------------------------------------------------------------------------- metrics


def alerted_codes() -> set[str]:
    """The grpc_code values the shipped alerting rules select."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    codes: set[str] = set()
    for rule in (rule for group in groups for rule in group["rules"]):
        for selector in re.findall(r'grpc_code=~?"([^"]+)"', rule["expr"]):
            codes.update(selector.split("|"))
    return codes


def test_every_alerted_code_is_initialized():
    codes = alerted_codes()
    assert {"INTERNAL", "UNAVAILABLE", "RESOURCE_EXHAUSTED"} <= codes, codes
    assert codes | {"OK"} <= set(metrics.INITIAL_CODES)
    assert set(metrics.INITIAL_CODES) <= {code.name for code in grpc.StatusCode}


def test_per_rpc_series_exist_for_every_method_before_the_first_call():
    # The registry is process-wide: forget the series earlier tests created, so only the start-up can make them.
    for family in (metrics.RPC_STARTED, metrics.RPC_HANDLED, metrics.RPC_LATENCY, metrics.RPC_IN_FLIGHT):
        family.clear()

    async def scenario():
        async with serve_components(components()) as running:
            for service in (GALLERY, TRAINER):
                assert sample("likeness_grpc_server_in_flight", grpc_service=service) == 0
                methods = methods_of(service)
                assert methods
                for method, rpc_type in methods:
                    labels = {"grpc_service": service, "grpc_method": method, "grpc_type": rpc_type}
                    assert sample("likeness_grpc_server_started_total", **labels) == 0, labels
                    assert sample("likeness_grpc_server_handling_seconds_count", **labels) == 0, labels
                    for code in metrics.INITIAL_CODES:
                        assert sample("likeness_grpc_server_handled_total", **labels, grpc_code=code) == 0, (
                            labels,
                            code,
                        )
            # Health and reflection are not counted, so they get no series either.
            assert sample("likeness_grpc_server_in_flight", grpc_service=HEALTH) is None
            # The interceptor counts under exactly the pre-created label sets (a streaming method included).
            handled = len(metrics.RPC_HANDLED._metrics)
            async with grpc.aio.insecure_channel(running.address) as ch:
                stream = ch.unary_stream(f"/{GALLERY}/GetPromptImage")(b"")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in stream:
                        pass
            code = info.value.code().name
            assert code in metrics.INITIAL_CODES
            labels = {"grpc_service": GALLERY, "grpc_method": "GetPromptImage", "grpc_type": "server_stream"}
            assert sample("likeness_grpc_server_handled_total", **labels, grpc_code=code) == 1
            assert len(metrics.RPC_HANDLED._metrics) == handled

    run(scenario())


def test_inference_outcomes_exist_before_the_first_request():
    inference_metrics = importlib.import_module("likeness.inference.metrics")
    # Every outcome the code counts is one of the pre-created ones.
    source = "\n".join(path.read_text() for path in (REPO / "services" / "likeness" / "inference").glob("*.py"))
    counted = set(re.findall(r'REQUESTS\.labels\("([a-z_]+)"\)', source))
    assert counted and counted <= set(inference_metrics.OUTCOMES), counted
    for outcome in inference_metrics.OUTCOMES:
        assert sample("likeness_inference_requests_total", outcome=outcome) is not None, outcome


def test_trainer_final_states_exist_before_the_first_job_ends():
    trainer_metrics = importlib.import_module("likeness.trainer.metrics")
    from likeness.trainer.states import TERMINAL_STATES

    assert trainer_metrics.JOBS_FINISHED is not None
    for state in TERMINAL_STATES:
        assert sample("likeness_trainer_jobs_finished_total", state=state.value) is not None, state


# -------------------------------------------------------------------------------------- serving gauge label


def test_serving_gauge_is_labelled_by_component_not_service():
    async def scenario():
        async with serve_components(components()) as running:
            for name in ("gallery", "trainer"):
                assert sample("likeness_service_serving", component=name) == 1
            await running.set_serving(False)
            assert sample("likeness_service_serving", component="gallery") == 0

    run(scenario())
    # `service` is a target label the Prometheus Operator adds to every series: the gauge must not carry one.
    family = next(m for m in REGISTRY.collect() if m.name == "likeness_service_serving")
    assert all("service" not in s.labels for s in family.samples)


# ------------------------------------------------------------------------------------------ rejections


class _NoBaseModels:
    """A repository without base models: the engine's own admission rejects every request."""

    catalog = ()

    def base(self, base_id):
        from likeness import errors

        raise errors.NotFound(f"unknown base model {base_id!r}")


class _InferenceComponent:
    name = "inference"
    service_names = ("likeness.inference.v1.InferenceService",)

    def __init__(self) -> None:
        from likeness.inference.engine import InferenceEngine

        self.engine = InferenceEngine(_NoBaseModels(), default_base_model="none")

    def register(self, server):
        from likeness.inference.servicer import InferenceServicer
        from likeness_client.v1 import inference_service_pb2_grpc as pb_grpc

        pb_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(lambda: self.engine, 4096), server)

    async def start(self):
        pass

    async def stop(self, grace_seconds):
        self.engine._encoder.shutdown(wait=True)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"scheduler": 999}, grpc.StatusCode.INVALID_ARGUMENT),  # rejected by the servicer's enum check
        ({"output_format": 999}, grpc.StatusCode.INVALID_ARGUMENT),
        ({}, grpc.StatusCode.NOT_FOUND),  # rejected by the engine's admission
    ],
)
def test_every_rejected_generation_is_counted_once(changes, code):
    from likeness_client.v1 import inference_service_pb2 as pb
    from likeness_client.v1 import inference_service_pb2_grpc as pb_grpc

    request = pb.GenerateImagesRequest(prompt="a dog", num_images=1)
    if "scheduler" in changes:
        request.parameters.scheduler = changes["scheduler"]
    if "output_format" in changes:
        request.output_format = changes["output_format"]

    async def scenario():
        async with (
            serve_components([_InferenceComponent()]) as running,
            grpc.aio.insecure_channel(running.address) as ch,
        ):
            before = sample("likeness_inference_requests_total", outcome="rejected") or 0.0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in pb_grpc.InferenceServiceStub(ch).GenerateImages(request, timeout=10):
                    pass
            assert info.value.code() == code
            assert (sample("likeness_inference_requests_total", outcome="rejected") or 0.0) - before == 1

    run(scenario())
