"""Tenant isolation probes over every RPC, enumerated from the service descriptors (so a new RPC is covered
without editing them). Used by tests/e2e/test_cross_tenant.py and bench/bench_security.py."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from google.protobuf.message import Message

from likeness_client import LikenessClient
from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import gallery_service_pb2_grpc as gallery_grpc
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import inference_service_pb2_grpc as inference_grpc
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import trainer_service_pb2_grpc as trainer_grpc
from likeness_client.v1 import types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent / "trainer"))
from trainer_helpers import photos, wait_for

SERVICES = [
    (trainer_pb, trainer_grpc, "TrainerService"),
    (inference_pb, inference_grpc, "InferenceService"),
    (gallery_pb, gallery_grpc, "GalleryService"),
]
#: Request fields that name a resource, and the kind of resource they name.
ID_FIELDS = {
    "dataset_id": "dataset",
    "job_id": "job",
    "model_id": "model",
    "subject_model_id": "model",
    "prompt_id": "prompt",
    "remix_prompt_id": "prompt",
}
#: Client streams carry uploads, not ids (PrepareDataset, ImportLora): nothing of A's can be named there.
SKIPPED = {"PrepareDataset"}


def fill_ids(message: Message, ids: dict[str, str], depth: int = 0) -> list[str]:
    """Set every id field (also in nested messages) to A's id of that kind; returns the fields set."""
    filled = []
    for field in message.DESCRIPTOR.fields:
        if field.name in ID_FIELDS and field.type == field.TYPE_STRING and not field.is_repeated:
            setattr(message, field.name, ids[ID_FIELDS[field.name]])
            filled.append(field.name)
        elif field.type == field.TYPE_MESSAGE and not field.is_repeated and depth < 2:
            nested = getattr(message, field.name)
            inner = fill_ids(nested, ids, depth + 1)
            if not inner:
                message.ClearField(field.name)
            filled.extend(f"{field.name}.{name}" for name in inner)
    return filled


def call(channel: grpc.Channel, method, request: Message, key: str) -> tuple[grpc.StatusCode, bytes, str]:
    """(status, every response serialized, details) of one call made with `key`."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    output = method.output_type._concrete_class
    metadata = (("authorization", f"Bearer {key}"),)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path, request_serializer=type(request).SerializeToString, response_deserializer=output.FromString
            )
            payload = b"".join(
                message.SerializeToString() for message in stream(request, metadata=metadata, timeout=60)
            )
        else:
            unary = channel.unary_unary(
                path, request_serializer=type(request).SerializeToString, response_deserializer=output.FromString
            )
            payload = unary(request, metadata=metadata, timeout=60).SerializeToString()
        return grpc.StatusCode.OK, payload, ""
    except grpc.RpcError as error:
        return error.code(), b"", error.details() or ""


def probe_every_rpc(address: str, ids: dict[str, str], key_a: str, key_b: str) -> tuple[int, list[str]]:
    """Call every method of every service with B's key and A's ids; returns (pairs tried, leaks found).

    A leak is a lookup of A's id that does not answer NOT_FOUND, a list filtered by A's id that does not come
    back OK, or any response to B that carries one of A's ids. A's own key must find A's resources through the
    same `Get` calls (so NOT_FOUND is not a typo in the request)."""
    secrets = [value.encode() for value in ids.values()]
    pairs, leaks = 0, []
    with grpc.insecure_channel(address) as channel:
        for module, _, service_name in SERVICES:
            service = module.DESCRIPTOR.services_by_name[service_name]
            for method in service.methods:
                if method.name in SKIPPED or method.client_streaming:
                    continue
                request = method.input_type._concrete_class()
                filled = fill_ids(request, ids)
                # Valid apart from the ids, so only the id lookups can fail.
                if method.name == "GenerateImages":
                    request.prompt = "" if request.remix_prompt_id else "a photo of {subject}"
                if method.name == "RecordPrompt":
                    request.prompt = "a lighthouse at dusk"
                if method.name == "CreateTrainingJob":
                    request.spec.base_model, request.spec.class_noun = "toy-sd15", "dog"
                listing = method.name.startswith(("List", "Search"))
                code, payload, details = call(channel, method, request, key_b)
                pairs += max(1, len(filled))
                if any(secret in payload for secret in secrets):
                    leaks.append(f"{method.name}: the response carries one of tenant A's ids")
                # A filter naming A's resource lists nothing; a lookup of it is NOT_FOUND, as for an unknown id.
                expected = grpc.StatusCode.OK if listing else grpc.StatusCode.NOT_FOUND
                if filled and code != expected:
                    leaks.append(f"{method.name} ({', '.join(filled)}): {code.name} {details}")
                if filled and method.name.startswith("Get"):
                    own_code, _, own_details = call(channel, method, request, key_a)
                    if own_code != grpc.StatusCode.OK:
                        raise AssertionError(f"{method.name} as tenant A: {own_code.name} {own_details}")
    return pairs, leaks


def tenant_with_everything(client: LikenessClient) -> dict[str, str]:
    """Give the client's tenant a dataset, a trained job, its subject model and a gallery entry with an image."""
    dataset = client.prepare_dataset(photos(3), trainer_pb.DatasetOptions(base_model="toy-sd15")).dataset
    spec = trainer_pb.TrainingJobSpec(
        base_model="toy-sd15",
        class_noun="dog",
        method=types_pb2.TRAINING_METHOD_LORA,
        dataset_id=dataset.dataset_id,
        hyperparameters=trainer_pb.Hyperparameters(max_train_steps=2, seed=1),
        lora=trainer_pb.LoraConfig(rank=4),
    )
    job = client.create_training_job(spec).job
    done = wait_for(
        lambda: (j := client.get_training_job(job.job_id)).state == trainer_pb.JOB_STATE_SUCCEEDED and j,
        300,
        what="the tenant's training job",
    )
    prompt = client.record_prompt("a private lighthouse", subject_model_id=done.subject_model_id, image=photos(1)[0][1])
    return {
        "dataset": dataset.dataset_id,
        "job": job.job_id,
        "model": done.subject_model_id,
        "prompt": prompt.prompt.prompt_id,
    }
