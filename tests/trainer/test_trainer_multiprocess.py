"""Data-parallel training: the job worker under `accelerate launch` with two CPU processes talking over gloo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from trainer_helpers import photos

from likeness.dataset.options import PhotoInput, PrepareOptions
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.local import LocalStorage
from likeness.trainer.jobs import DeviceSlot, JobManager, WorkerOptions
from likeness.trainer.worker import parse_event_line


@pytest.mark.slow
def test_two_processes_both_train_and_the_model_is_published_once(tmp_path, trainer_cache):
    storage = LocalStorage(tmp_path / "storage")
    catalog = BaseModelCatalog(cache_dir=trainer_cache / "base-models")
    manager = JobManager(
        storage,
        catalog,
        WorkerOptions(str(tmp_path / "storage"), "", str(trainer_cache / "base-models")),
        slots=[DeviceSlot("cpu", "cpu")],
    )
    spec = {
        "base_model": "tiny-sd15",
        "class_noun": "dog",
        "hyperparameters": {"max_train_steps": 4, "seed": 3},
        "lora": {"rank": 4},
        "checkpointing": {"every_n_steps": 2},
    }
    inputs = [PhotoInput(name, data) for name, data in photos(4)]
    record, _ = manager.create_job(
        "default", spec, photos=inputs, dataset_options=PrepareOptions(resolution=64, min_side=64)
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "likeness.trainer.worker", "--storage-url", str(tmp_path / "storage"), "--job-id", record.job_id,
        "--cache-dir", str(trainer_cache / "base-models"), "--device", "cpu", "--work-dir", str(tmp_path / "work"),
        "--progress-interval", "0",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    events = [event for line in done.stdout.splitlines() if (event := parse_event_line(line))]
    ranks = {event["rank"]: event["steps"] for event in events if event["type"] == "rank_done"}
    assert ranks == {0: 4, 1: 4}  # both processes stepped every step
    assert [event["step"] for event in events if event["type"] == "progress"] == [1, 2, 3, 4]  # main process only
    assert [event["step"] for event in events if event["type"] == "checkpoint_saved"] == [2]
    succeeded = [event for event in events if event["type"] == "succeeded"]
    assert len(succeeded) == 1
    models = storage.list_dirs("tenants/default/models")
    assert models == [record.model_id] and storage.is_published(f"tenants/default/models/{record.model_id}")
    assert storage.exists(f"tenants/default/models/{record.model_id}/pytorch_lora_weights.safetensors")
