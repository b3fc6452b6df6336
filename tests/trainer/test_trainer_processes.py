"""Multi-device jobs: `--trainer-processes-per-job` groups a node's GPUs into worker slots, and a job's
`spec.processes` runs it data-parallel under accelerate through the real service (two CPU processes over gloo
here; GPUs on a node with them), or fails with a message when a slot has fewer devices than it asks for."""

from __future__ import annotations

import logging

import pytest
import torch
from trainer_helpers import BackgroundTrainer, job_spec, photos

from likeness import errors
from likeness.errors import FailedPrecondition
from likeness.server.settings import Settings
from likeness.trainer.devices import device_slots
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU {index}")


def test_gpus_are_grouped_into_slots_of_the_processes_per_job(monkeypatch, caplog) -> None:
    _gpus(monkeypatch, 4)
    slots = device_slots("cuda", 2)
    assert [(slot.name, slot.env["CUDA_VISIBLE_DEVICES"], slot.devices) for slot in slots] == [
        ("cuda:0-1", "0,1", 2),
        ("cuda:2-3", "2,3", 2),
    ]
    assert slots[1].environment_for(1)["CUDA_VISIBLE_DEVICES"] == "2"  # a job asking for one device of the slot
    assert [slot.name for slot in device_slots("auto", 1)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    _gpus(monkeypatch, 3)
    with caplog.at_level(logging.WARNING, logger="likeness.trainer"):
        assert [slot.name for slot in device_slots("cuda", 2)] == ["cuda:0-1"]
    assert "left unused" in caplog.text
    _gpus(monkeypatch, 1)
    with pytest.raises(FailedPrecondition, match="needs that many GPUs"):
        device_slots("cuda", 2)


@pytest.fixture(scope="module")
def two_process_trainer(tmp_path_factory, trainer_cache):
    root = tmp_path_factory.mktemp("trainer-processes")
    settings = Settings(
        storage_url=str(root / "storage"),
        cache_dir=str(trainer_cache),
        device="cpu",
        trainer_processes_per_job=2,
        trainer_progress_interval_seconds=0.0,
        torch_threads=1,
    )
    server = BackgroundTrainer(settings)
    with LikenessClient(server.address, timeout=120) as client:
        yield client
    server.close()


@pytest.mark.slow
def test_a_job_runs_data_parallel_through_the_service(two_process_trainer) -> None:
    client = two_process_trainer
    job = client.create_training_job(job_spec(steps=2, processes=2), photos=photos(3)).job
    events = list(client.watch_training_job(job.job_id))
    messages = [event.state_changed.message for event in events if event.WhichOneof("event") == "state_changed"]
    assert any("data-parallel on 2 processes" in message for message in messages), messages
    done = client.get_training_job(job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    assert done.spec.processes == 2 and done.subject_model_id

    too_many = client.create_training_job(job_spec(steps=2, processes=3), photos=photos(3)).job
    list(client.watch_training_job(too_many.job_id))
    failed = client.get_training_job(too_many.job_id)
    assert failed.state == pb.JOB_STATE_FAILED
    assert "asks for 3 processes" in failed.error and "--trainer-processes-per-job" in failed.error
    with pytest.raises(errors.InvalidArgument) as raised:
        client.create_training_job(job_spec(steps=2, processes=99), photos=photos(3))
    assert raised.value.field == "spec.processes"
