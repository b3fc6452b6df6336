"""The trainer through its gRPC service: jobs on the tiny SD 1.x and SDXL models that plain diffusers pipelines
load, bad input refused with the field named and nothing written, idempotency, the bounded queue, cancellation
and watchers that replay from a sequence number."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from trainer_helpers import job_spec, photo_bytes, photos, wait_for

from likeness import errors
from likeness.storage.factory import open_storage
from likeness.storage.manifest import SubjectModelManifest
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb
from likeness_client.v1 import types_pb2

PIPELINES = {"tiny-sd15": StableDiffusionPipeline, "tiny-sdxl": StableDiffusionXLPipeline}


def storage_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def events_of(client: LikenessClient, job_id: str, after: int = 0) -> list[pb.WatchTrainingJobResponse]:
    return list(client.watch_training_job(job_id, after_sequence=after, timeout=300))


@pytest.mark.parametrize("base_model", ["tiny-sd15", "tiny-sdxl"])
def test_lora_and_full_jobs_succeed_and_load_into_plain_pipelines(client, trainer, base_model):
    _, storage_root, cache = trainer
    dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model=base_model)).dataset
    assert dataset.image_count == 3 and dataset.resolution == 64
    assert client.get_dataset(dataset.dataset_id).reports[0].kept

    lora_spec = job_spec(
        base_model,
        steps=3,
        dataset_id=dataset.dataset_id,
        validation=pb.ValidationConfig(prompts=["a photo of {subject}"], every_n_steps=2, num_inference_steps=2),
        export_kohya=True,
    )
    lora_job = client.create_training_job(lora_spec).job
    # The queue holds one waiting job (capacity 1): queue the second once the first left the queue.
    wait_for(lambda: client.get_training_job(lora_job.job_id).state != pb.JOB_STATE_QUEUED, 60, what="a start")
    full_job = client.create_training_job(
        job_spec(base_model, method="full", steps=2, dataset_id=dataset.dataset_id)
    ).job
    assert lora_job.spec.identifier == "ohwx" and lora_job.spec.hyperparameters.learning_rate == pytest.approx(1e-4)

    lora_events = events_of(client, lora_job.job_id)
    kinds = [event.WhichOneof("event") for event in lora_events]
    assert [e.sequence for e in lora_events] == list(range(1, len(lora_events) + 1))
    assert kinds[0] == "state_changed" and kinds[-1] == "state_changed" and kinds[-2] == "succeeded"
    progress = [e.progress for e in lora_events if e.HasField("progress")]
    assert [p.step for p in progress] == [1, 2, 3] and progress[-1].total_steps == 3
    validation = [e.validation_images for e in lora_events if e.HasField("validation_images")]
    assert [v.step for v in validation] == [2, 3] and validation[0].images[0].data.startswith(b"\x89PNG")
    assert lora_events[-1].state_changed.state == pb.JOB_STATE_SUCCEEDED
    model = lora_events[-2].succeeded.subject_model
    assert model.method == types_pb2.TRAINING_METHOD_LORA and model.lora_rank == 4 and model.size_bytes > 0
    assert model.job_id == lora_job.job_id and model.sample_image_keys and "final_loss" in model.metrics

    full_events = events_of(client, full_job.job_id)
    assert full_events[-1].state_changed.state == pb.JOB_STATE_SUCCEEDED
    full_model = client.get_training_job(full_job.job_id)
    assert full_model.state == pb.JOB_STATE_SUCCEEDED and full_model.subject_model_id

    storage = open_storage(str(storage_root))
    base_dir = next((cache / "base-models").glob(f"builtin-{base_model.split('-')[1]}-*"))
    lora_dir = storage_root / f"tenants/default/models/{model.model_id}"
    manifest = SubjectModelManifest.from_json((lora_dir / "manifest.json").read_text())
    assert manifest.weights == ["pytorch_lora_weights.safetensors", "lora_kohya.safetensors"]
    assert manifest.training_config["job_id"] == lora_job.job_id
    plain = PIPELINES[base_model].from_pretrained(base_dir, local_files_only=True)
    plain.load_lora_weights(str(lora_dir))
    image = plain(
        "a photo of ohwx dog", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    )
    assert np.isfinite(image.images[0]).all()

    full_dir = storage_root / f"tenants/default/models/{full_model.subject_model_id}"
    unet = UNet2DConditionModel.from_pretrained(full_dir / "unet")
    full_pipeline = PIPELINES[base_model].from_pretrained(base_dir, unet=unet, local_files_only=True)
    assert full_pipeline("a photo", num_inference_steps=1, output_type="np").images[0].shape == (64, 64, 3)
    assert not storage.list(f"tenants/default/jobs/{full_job.job_id}/checkpoints")  # removed after success


def test_bad_input_is_invalid_argument_naming_the_field_and_writes_nothing(client, trainer):
    _, storage_root, _ = trainer
    dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
    before = storage_files(storage_root)
    truncated = photo_bytes(0, fmt="JPEG")[:300]
    bomb = _bomb_png()
    cases = [
        ({"photos": []}, "spec.dataset_id"),
        ({"photos": [("a.png", b"this is not an image")] * 1}, "photos"),
        ({"photos": [("a.jpg", truncated)]}, "photos"),
        ({"photos": [("bomb.png", bomb)]}, "photos"),
        ({"photos": [("tiny.png", photo_bytes(0, size=16))]}, "photos"),
        ({"photos": [(f"{i}.png", photo_bytes(i)) for i in range(101)]}, "photos"),
        ({"spec": job_spec(dataset_id=dataset.dataset_id, identifier="zwx")}, "spec.identifier"),
        ({"spec": job_spec(dataset_id=dataset.dataset_id, class_noun="")}, "spec.class_noun"),
        ({"spec": job_spec(dataset_id=dataset.dataset_id, steps=0)}, "spec.hyperparameters.max_train_steps"),
        (
            {"spec": job_spec(dataset_id=dataset.dataset_id, hyperparameters=pb.Hyperparameters(learning_rate=-1))},
            "spec.hyperparameters.learning_rate",
        ),
        ({"spec": job_spec(dataset_id=dataset.dataset_id, lora=pb.LoraConfig(rank=0))}, "spec.lora.rank"),
        (
            {"spec": job_spec(dataset_id=dataset.dataset_id, hyperparameters=pb.Hyperparameters(mixed_precision=2))},
            "spec.hyperparameters.mixed_precision",
        ),
    ]
    for case, field in cases:
        spec = case.get("spec", job_spec())
        with pytest.raises(errors.InvalidArgument) as caught:
            client.create_training_job(spec, photos=case.get("photos", ()))
        assert field in str(caught.value), (field, str(caught.value))
    with pytest.raises(errors.NotFound):
        client.create_training_job(job_spec(dataset_id="ds-missing"))
    with pytest.raises(errors.NotFound, match=r"spec\.base_model: unknown base model"):  # as GenerateImages
        client.create_training_job(job_spec("no-such-model", dataset_id=dataset.dataset_id))
    with pytest.raises(errors.InvalidArgument, match="photos"):
        client.prepare_dataset([("x.png", b"garbage")], pb.DatasetOptions(base_model="tiny-sd15"))
    assert storage_files(storage_root) == before  # nothing written
    assert client.get_dataset(dataset.dataset_id).image_count == 3  # still serving


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_idempotency_queue_limit_cancellation_and_watchers(client, trainer):
    dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
    long_spec = job_spec(steps=2000, dataset_id=dataset.dataset_id)
    running = client.create_training_job(long_spec, idempotency_key="long-job").job
    again = client.trainer.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=long_spec, idempotency_key="long-job"))
    assert again.existing and again.job.job_id == running.job_id
    # The same key with a different request is an error (AIP-155), not a silent return of the first job.
    with pytest.raises(errors.InvalidArgument, match=r"idempotency_key.*different request"):
        client.create_training_job(job_spec(steps=1999, dataset_id=dataset.dataset_id), idempotency_key="long-job")

    wait_for(lambda: client.get_training_job(running.job_id).progress.step >= 1, 120, what="the first step")
    queued = client.create_training_job(job_spec(steps=2, dataset_id=dataset.dataset_id)).job
    assert queued.state == pb.JOB_STATE_QUEUED and queued.queue_position == 1
    with pytest.raises(errors.ResourceExhausted):  # capacity 1: one job already waits
        client.create_training_job(job_spec(steps=2, dataset_id=dataset.dataset_id))

    # Two live watchers plus one that replays from the middle.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        watchers = [pool.submit(events_of, client, running.job_id) for _ in range(2)]
        wait_for(lambda: client.get_training_job(running.job_id).progress.step >= 3, 120, what="more steps")
        middle = client.get_training_job(running.job_id).last_sequence
        cancelled_queued = client.cancel_training_job(queued.job_id)
        assert cancelled_queued.state == pb.JOB_STATE_CANCELLED
        step_at_cancel = client.get_training_job(running.job_id).progress.step
        cancelled = client.cancel_training_job(running.job_id)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        assert cancelled.progress.step <= step_at_cancel + 2  # stopped within a step (plus one report in flight)
        first, second = (w.result(timeout=120) for w in watchers)
    assert [e.sequence for e in first] == [e.sequence for e in second]
    assert first[-1].state_changed.state == pb.JOB_STATE_CANCELLED
    replayed = events_of(client, running.job_id, after=middle)
    assert [e.sequence for e in replayed] == [e.sequence for e in first if e.sequence > middle]

    listed = client.list_training_jobs(states=[pb.JOB_STATE_CANCELLED], page_size=1)
    assert listed.jobs[0].job_id == queued.job_id and listed.next_page_token  # newest first
    following = client.list_training_jobs(
        states=[pb.JOB_STATE_CANCELLED], page_size=1, page_token=listed.next_page_token
    )
    assert following.jobs[0].job_id == running.job_id
    with pytest.raises(errors.NotFound):
        client.get_training_job("job-unknown")
    with pytest.raises(errors.NotFound):
        list(client.watch_training_job("job-unknown"))


def test_delete_a_dataset_and_a_job_only_once_nothing_uses_them(client, trainer):
    storage_root = trainer[1]
    dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
    dataset_dir = storage_root / "tenants" / "default" / "datasets" / dataset.dataset_id
    assert dataset_dir.is_dir()
    job = client.create_training_job(job_spec(steps=2000, dataset_id=dataset.dataset_id)).job
    with pytest.raises(errors.FailedPrecondition, match=job.job_id):
        client.delete_dataset(dataset.dataset_id)  # a job that has not ended trains on it
    with pytest.raises(errors.FailedPrecondition, match="cancel it"):
        client.delete_training_job(job.job_id)
    client.cancel_training_job(job.job_id)
    wait_for(lambda: client.get_training_job(job.job_id).state == pb.JOB_STATE_CANCELLED, 120, what="the cancel")

    deleted = client.delete_training_job(job.job_id)
    assert deleted.job_id == job.job_id and deleted.events_removed >= 2
    assert not (storage_root / "tenants" / "default" / "jobs" / job.job_id).exists()
    for call in (client.get_training_job, client.delete_training_job):
        with pytest.raises(errors.NotFound):
            call(job.job_id)
    assert job.job_id not in {j.job_id for j in client.list_training_jobs(page_size=100).jobs}

    removed = client.delete_dataset(dataset.dataset_id)
    assert removed.files_removed >= 4 and not dataset_dir.exists()
    for call in (client.get_dataset, client.delete_dataset):
        with pytest.raises(errors.NotFound):
            call(dataset.dataset_id)
