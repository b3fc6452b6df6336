"""Warm workers: one training process serves job after job with its imports and base model loaded, and a training
process that dies is replaced while its job resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
from trainer_helpers import BackgroundTrainer, job_spec, photos, wait_for

from likeness.server.settings import Settings
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb


@pytest.mark.slow
def test_one_warm_process_runs_consecutive_jobs_and_a_dead_one_is_replaced(tmp_path, trainer_cache):
    settings = Settings(
        storage_url=str(tmp_path / "storage"),
        cache_dir=str(trainer_cache),
        device="cpu",
        trainer_progress_interval_seconds=0.0,
    )
    server = BackgroundTrainer(settings)
    supervisor = server.component.supervisors[0]
    try:
        with LikenessClient(server.address, timeout=120) as client:
            dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
            first = client.create_training_job(job_spec(steps=2, dataset_id=dataset.dataset_id)).job
            assert list(client.watch_training_job(first.job_id, timeout=300))[-1].state_changed.state == (
                pb.JOB_STATE_SUCCEEDED
            )
            warm_pid = supervisor.warm_process.pid
            spec = job_spec(steps=12, dataset_id=dataset.dataset_id, checkpointing=pb.CheckpointConfig(every_n_steps=3))
            second = client.create_training_job(spec).job
            wait_for(lambda: client.get_training_job(second.job_id).last_checkpoint_step >= 3, 120, what="a checkpoint")
            assert supervisor.warm_process.pid == warm_pid  # the same process took the next job
            os.kill(warm_pid, signal.SIGKILL)
            events = list(client.watch_training_job(second.job_id, timeout=300))
            final = client.get_training_job(second.job_id)
    finally:
        server.close()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    messages = [e.state_changed.message for e in events if e.HasField("state_changed")]
    assert any("resuming after the training process stopped unexpectedly" in m for m in messages), messages
    steps = [e.progress.step for e in events if e.HasField("progress")]
    assert steps[-1] == 12 and steps.count(1) == 1  # resumed from a checkpoint, not from the start
