"""One entry address: the three services as separate processes behind the gateway component's nginx.conf
(the `gateway_stack` fixture of tests/gateway.py), called through that one address with grpc and the generated
stubs, as an SDK would."""

from __future__ import annotations

import io
import uuid

import grpc
import numpy as np
import pytest
from gateway import GRPC_SERVICES
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from PIL import Image, ImageDraw

from likeness_client.v1 import (
    gallery_service_pb2,
    gallery_service_pb2_grpc,
    inference_service_pb2,
    inference_service_pb2_grpc,
    trainer_service_pb2,
    trainer_service_pb2_grpc,
    types_pb2,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
#: More than nginx's default request body limit (1 MiB), in one client stream.
BIG_UPLOAD_BYTES = 1_500_000
CHUNK_BYTES = 64 * 1024


@pytest.fixture
def channel(gateway_stack):
    with grpc.insecure_channel(gateway_stack.address) as channel:
        yield channel


def tagged(label: str) -> tuple[tuple[str, str], ...]:
    """Metadata giving a call a request id of its own, to find its line in the gateway's access log."""
    return (("x-request-id", f"{label}-{uuid.uuid4().hex[:8]}"),)


def box_photos(count: int = 4) -> list[tuple[str, bytes]]:
    """A striped orange box on different backgrounds (as in test_train_then_generate.py); the first photo big and
    noisy, so that it does not compress: alone it is above nginx's default request body limit."""
    rng = np.random.default_rng(5)
    photos = []
    for index in range(count):
        background = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        image = Image.fromarray(background).resize((128, 128), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        size = 40 + 12 * index
        left, top = [(10, 12), (60, 20), (20, 60), (45, 45)][index % 4]
        draw.rectangle([left, top, left + size, top + size], fill=(240, 130, 20))
        if index == 0:
            pixels = np.asarray(image.resize((1024, 1024)), dtype=np.int16)
            noisy = pixels + rng.integers(-24, 25, size=pixels.shape, dtype=np.int16)
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        photos.append((f"box-{index}.png", buffer.getvalue()))
    return photos


def test_the_one_address_reaches_every_service(gateway_stack, channel):
    # Health through the entry (answered by the gallery), and each service's own health at its process.
    health = health_pb2_grpc.HealthStub(channel)
    health_call = tagged("health")
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10, metadata=health_call).status == SERVING
    # Not aggregated (docs/deployment.md): through the entry the gallery answers for its own services only.
    with pytest.raises(grpc.RpcError) as raised:
        health.Check(health_pb2.HealthCheckRequest(service=GRPC_SERVICES["inference"]), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    for name, address in gateway_stack.services.items():
        with grpc.insecure_channel(address) as direct:
            request = health_pb2.HealthCheckRequest(service=GRPC_SERVICES[name])
            assert health_pb2_grpc.HealthStub(direct).Check(request, timeout=10).status == SERVING, name

    # One call to each service through the same channel, each sent by nginx to its own process.
    calls = {"health": (health_call, "gallery")}
    trainer_call = calls["trainer"] = (tagged("trainer"), "trainer")
    jobs, call = trainer_service_pb2_grpc.TrainerServiceStub(channel).ListTrainingJobs.with_call(
        trainer_service_pb2.ListTrainingJobsRequest(), timeout=30, metadata=trainer_call[0]
    )
    assert isinstance(jobs, trainer_service_pb2.ListTrainingJobsResponse)
    # The client's request id reaches the service, which echoes it.
    assert trainer_call[0][0] in tuple(call.trailing_metadata())
    inference_call = calls["inference"] = (tagged("inference"), "inference")
    status = inference_service_pb2_grpc.InferenceServiceStub(channel).GetServerStatus(
        inference_service_pb2.GetServerStatusRequest(), timeout=30, metadata=inference_call[0]
    )
    assert "toy-sd15" in {model.base_model for model in status.base_models}
    gallery_call = calls["gallery"] = (tagged("gallery"), "gallery")
    found = gallery_service_pb2_grpc.GalleryServiceStub(channel).SearchPrompts(
        gallery_service_pb2.SearchPromptsRequest(query="beach"), timeout=30, metadata=gallery_call[0]
    )
    assert found.results, "the seeded gallery has beach prompts"

    for label, (metadata, service) in calls.items():
        line = gateway_stack.logged_call(metadata[0][1])
        assert (line["upstream"], line["grpc_status"]) == (gateway_stack.services[service], "0"), (label, line)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_through_the_one_address(channel, version):
    """Both reflection versions are routed (to the gallery, which describes its own services)."""
    info = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30))
    listed = {service.name for service in response.list_services_response.service}
    assert GRPC_SERVICES["gallery"] in listed and "grpc.health.v1.Health" in listed


def test_streams_through_the_one_address(gateway_stack, channel):
    # A client stream of several megabytes (one photo alone is above nginx's default body limit).
    photos = box_photos()
    assert sum(len(data) for _name, data in photos) > BIG_UPLOAD_BYTES

    def upload():
        yield trainer_service_pb2.PrepareDatasetRequest(
            options=trainer_service_pb2.DatasetOptions(resolution=64, display_name="through the gateway")
        )
        for name, data in photos:
            for start in range(0, len(data), CHUNK_BYTES):
                chunk = trainer_service_pb2.PhotoChunk(file_name=name, data=data[start : start + CHUNK_BYTES])
                yield trainer_service_pb2.PrepareDatasetRequest(photo_chunk=chunk)

    trainer = trainer_service_pb2_grpc.TrainerServiceStub(channel)
    upload_call = tagged("upload")
    prepared = trainer.PrepareDataset(upload(), timeout=120, metadata=upload_call)
    assert {report.file_name for report in prepared.dataset.reports} == {name for name, _ in photos}
    assert prepared.dataset.image_count >= 3 and prepared.contact_sheet.data
    # Stored in the shared storage and database: the trainer process itself knows it too.
    with grpc.insecure_channel(gateway_stack.services["trainer"]) as direct:
        stored = trainer_service_pb2_grpc.TrainerServiceStub(direct).GetDataset(
            trainer_service_pb2.GetDatasetRequest(dataset_id=prepared.dataset.dataset_id), timeout=30
        )
    assert stored.dataset.image_count == prepared.dataset.image_count
    line = gateway_stack.logged_call(upload_call[0][1])
    assert line["method"] == "/likeness.trainer.v1.TrainerService/PrepareDataset", line
    assert int(line["bytes_in"]) > BIG_UPLOAD_BYTES and line["grpc_status"] == "0", line

    # A server stream: images generated on the toy base model, event by event.
    request = inference_service_pb2.GenerateImagesRequest(
        base_model="toy-sd15",
        prompt="a photo of a dog on the beach",
        num_images=1,
        parameters=types_pb2.GenerationParameters(num_inference_steps=2, seed=7, width=64, height=64),
        preview_every_n_steps=1,
    )
    generate_call = tagged("generate")
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    events = list(stub.GenerateImages(request, timeout=300, metadata=generate_call))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "accepted" and kinds[-1] == "summary" and "progress" in kinds, kinds
    image = b"".join(event.image_chunk.data for event in events if event.WhichOneof("event") == "image_chunk")
    assert Image.open(io.BytesIO(image)).size == (64, 64)
    line = gateway_stack.logged_call(generate_call[0][1])
    assert (line["upstream"], line["grpc_status"]) == (gateway_stack.services["inference"], "0"), line


def test_an_unknown_service_is_unimplemented(gateway_stack, channel):
    for method in ("/likeness.billing.v1.BillingService/Charge", "/Nothing"):
        metadata = tagged("unknown")
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(method)(b"", timeout=10, metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED, raised.value
        assert "unknown service" in raised.value.details()
        # Answered by nginx itself: no upstream, HTTP 200 with grpc-status 12 (a trailers-only response).
        line = gateway_stack.logged_call(metadata[0][1])
        assert (line["method"], line["grpc_status"], line["upstream"], line["http_status"]) == (method, "12", "", "200")
    # Streaming calls too.
    with pytest.raises(grpc.RpcError) as raised:
        list(channel.stream_stream("/likeness.billing.v1.BillingService/Stream")(iter([b"x"]), timeout=10))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # An unknown method of a routed service: the service itself answers.
    metadata = tagged("unknown-method")
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/likeness.gallery.v1.GalleryService/NoSuchMethod")(b"", timeout=10, metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert gateway_stack.logged_call(metadata[0][1])["upstream"] == gateway_stack.services["gallery"]
    # The channel is still usable afterwards.
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
