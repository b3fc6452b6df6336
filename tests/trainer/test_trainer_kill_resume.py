"""Kill -9 the trainer process mid-job and start it again: the job resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from trainer_helpers import job_spec, photos, wait_for

from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb

CHECKPOINT_EVERY = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_trainer(root: Path, cache: Path, port: int, log_name: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "likeness.cli.main", "serve", "trainer",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
        "--storage-url", str(root / "storage"), "--cache-dir", str(cache), "--device", "cpu",
        "--trainer-progress-interval-seconds", "0", "--log-format", "text",
    ]  # fmt: skip
    log = open(root / log_name, "wb")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def training_processes_of(server_pid: int) -> list[psutil.Process]:
    """The training processes a trainer started (they name it with --parent-pid)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info.get("cmdline") or []
        if "likeness.trainer.worker" in command and str(server_pid) in command:
            found.append(process)
    return found


@pytest.mark.slow
def test_killed_trainer_resumes_the_job_from_its_last_checkpoint(tmp_path, trainer_cache):
    port = free_port()
    server = start_trainer(tmp_path, trainer_cache, port, "first.log")
    try:
        with LikenessClient(f"127.0.0.1:{port}", timeout=120) as client:
            client.wait_until_serving(timeout=120)
            dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
            spec = job_spec(
                steps=12,
                dataset_id=dataset.dataset_id,
                checkpointing=pb.CheckpointConfig(every_n_steps=CHECKPOINT_EVERY),
            )
            job = client.create_training_job(spec).job
            seen = []
            for event in client.watch_training_job(job.job_id, timeout=300):
                seen.append(event)
                if event.HasField("checkpoint_saved"):
                    break
            checkpoint_step = seen[-1].checkpoint_saved.step
            assert checkpoint_step == CHECKPOINT_EVERY
        assert training_processes_of(server.pid), "the trainer runs its job in a training process"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        # The training process notices its parent is gone and exits instead of training on as an orphan.
        wait_for(lambda: not training_processes_of(server.pid), 30, what="the orphaned training process to exit")

        server = start_trainer(tmp_path, trainer_cache, port, "second.log")
        with LikenessClient(f"127.0.0.1:{port}", timeout=120) as client:
            client.wait_until_serving(timeout=120)
            after = list(client.watch_training_job(job.job_id, after_sequence=seen[-1].sequence, timeout=300))
            final = client.get_training_job(job.job_id)
    finally:
        server.kill()
        server.wait(timeout=30)
    log = (tmp_path / "second.log").read_text(errors="replace")[-3000:]
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, log)
    assert final.resume_count == 1 and final.subject_model_id
    restarts = [e for e in after if e.HasField("state_changed") and e.state_changed.state == pb.JOB_STATE_RUNNING]
    assert restarts and "resum" in restarts[0].state_changed.message
    steps = [e.progress.step for e in after if e.HasField("progress")]
    # Steps continue after a checkpoint at or beyond the one seen before the kill, never from the start.
    assert steps[0] > checkpoint_step and (steps[0] - 1) % CHECKPOINT_EVERY == 0 and steps[-1] == 12
    assert after[-1].state_changed.state == pb.JOB_STATE_SUCCEEDED
