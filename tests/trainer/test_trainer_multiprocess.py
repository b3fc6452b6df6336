"""Data-parallel training: the job worker under `accelerate launch` with two CPU processes talking over gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from trainer_helpers import photos

from likeness.dataset.options import PhotoInput, PrepareOptions
from likeness.dataset.prepare import prepare_photos
from likeness.dataset.publish import publish_dataset
from likeness.storage.local import LocalStorage
from likeness.trainer.config import TrainingConfig
from likeness.trainer.protocol import JobControl, parse_event_line


@pytest.mark.slow
def test_two_processes_both_train_and_the_model_is_published_once(tmp_path, trainer_cache):
    storage = LocalStorage(tmp_path / "storage")
    spec = {
        "base_model": "tiny-sd15",
        "class_noun": "dog",
        "hyperparameters": {"max_train_steps": 4, "seed": 3},
        "lora": {"rank": 4},
        "checkpointing": {"every_n_steps": 2},
    }
    options = PrepareOptions(resolution=64, min_side=64)
    prepared = prepare_photos([PhotoInput(name, data) for name, data in photos(4)], options)
    dataset = publish_dataset(storage, "default", prepared, options)
    config = TrainingConfig.from_spec({**spec, "dataset_id": dataset.dataset_id}, identifier="ohwx")
    config.resolution = 64
    job = {"tenant": "default", "job_id": "job-multi", "model_id": "sm-multi", "config": config.to_dict()}
    control = JobControl(tmp_path / "control.json")
    control.write(stop=None, lease_valid_until=time.time() + 3600)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"job": job, "control_file": str(control.path)}))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "likeness.trainer.worker", "--job-file", str(job_file), "--storage-url", str(tmp_path / "storage"),
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
    assert models == ["sm-multi"] and storage.is_published("tenants/default/models/sm-multi")
    assert storage.exists("tenants/default/models/sm-multi/pytorch_lora_weights.safetensors")
