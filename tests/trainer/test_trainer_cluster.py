"""The trainer as a cluster on a real PostgreSQL: API replicas and worker processes as separate `likeness serve
trainer` processes, a worker SIGKILLed mid-job, watches across replicas, and the database going away and back."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from diffusers import StableDiffusionPipeline
from grpc_health.v1 import health_pb2, health_pb2_grpc
from safetensors.torch import load_file
from trainer_helpers import job_spec, photos, wait_for

from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb

LEASE_SECONDS = 5
TRAINER = pb.DESCRIPTOR.services_by_name["TrainerService"].full_name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """Trainer processes sharing one storage folder and one database; every process in its own process group."""

    def __init__(self, root: Path, cache: Path, database_url: str) -> None:
        self.root, self.cache, self.database_url = root, cache, database_url
        self.processes: dict[str, tuple[subprocess.Popen, int]] = {}

    def start(self, name: str, role: str, *extra: str) -> int:
        port = free_port()
        command = [
            sys.executable, "-m", "likeness.cli.main", "serve", "trainer", "--role", role,
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
            "--storage-url", str(self.root / "storage"), "--cache-dir", str(self.cache), "--device", "cpu",
            "--database-url", self.database_url, "--lease-seconds", str(LEASE_SECONDS), "--heartbeat-seconds", "1",
            "--trainer-progress-interval-seconds", "0", "--torch-threads", "1", "--log-format", "text",
            "--grace-seconds", "5", *extra,
        ]  # fmt: skip
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.processes[name] = (process, port)
        return port

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.processes[name][1]}"

    def wait_serving(self, *names: str) -> None:
        for name in names:
            with grpc.insecure_channel(self.address(name)) as channel:
                stub = health_pb2_grpc.HealthStub(channel)

                def serving(stub=stub) -> bool:
                    try:
                        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    except grpc.RpcError:
                        return False
                    return status == health_pb2.HealthCheckResponse.SERVING

                wait_for(serving, 180, 0.3, what=f"{name} to serve ({self.log_tail(name)})")

    def kill(self, name: str) -> None:
        process, _ = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def log_tail(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def close(self) -> None:
        for process, _ in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue


@pytest.mark.slow
def test_two_api_replicas_three_workers_and_a_worker_killed_mid_job(tmp_path, trainer_cache, postgres_url):
    cluster = Cluster(tmp_path, trainer_cache, postgres_url)
    try:
        for name in ("api-a", "api-b"):
            cluster.start(name, "api")
        for name in ("worker-1", "worker-2", "worker-3"):
            cluster.start(name, "worker")
        cluster.wait_serving("api-a", "api-b", "worker-1", "worker-2", "worker-3")
        with (
            LikenessClient(cluster.address("api-a"), timeout=60) as a,
            LikenessClient(cluster.address("api-b"), timeout=60) as b,
        ):
            dataset = a.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
            spec = job_spec(steps=16, dataset_id=dataset.dataset_id, checkpointing=pb.CheckpointConfig(every_n_steps=4))
            jobs = [(a if i % 2 == 0 else b).create_training_job(spec).job for i in range(6)]
            assert len({job.job_id for job in jobs}) == 6
            # Kill the worker of a job once it has checkpointed.
            victim_job = jobs[0].job_id
            wait_for(lambda: b.get_training_job(victim_job).last_checkpoint_step >= 4, 240, what="a checkpoint")
            owner = _lease_owner(postgres_url, victim_job)
            victim = next(name for name, (p, _) in cluster.processes.items() if f"/{p.pid}/" in owner)
            cluster.kill(victim)
            # A watch on replica B of a job created through replica A sees the whole log, then the end.
            watched = list(b.watch_training_job(victim_job, timeout=300))
            finals = [wait_for(lambda j=job: _ended(b, j.job_id), 300, 1.0, what="the jobs to end") for job in jobs]
    finally:
        cluster.close()
    logs = {name: cluster.log_tail(name) for name in cluster.processes}
    assert [job.state for job in finals] == [pb.JOB_STATE_SUCCEEDED] * 6, ([j.error for j in finals], logs)
    assert [e.sequence for e in watched] == list(range(1, len(watched) + 1))
    assert watched[-1].state_changed.state == pb.JOB_STATE_SUCCEEDED
    resumed = [e for e in watched if e.HasField("state_changed") and "resuming on" in e.state_changed.message]
    assert resumed, [e.state_changed.message for e in watched if e.HasField("state_changed")]
    steps = [e.progress.step for e in watched if e.HasField("progress")]
    assert steps[-1] == 16 and steps.count(1) == 1  # resumed from a checkpoint, never from the start
    victim_final = next(job for job in finals if job.job_id == victim_job)
    assert victim_final.resume_count >= 1
    for job in finals:
        weights = (
            tmp_path / "storage" / f"tenants/default/models/{job.subject_model_id}/pytorch_lora_weights.safetensors"
        )
        assert load_file(str(weights)), job.job_id  # a loadable subject model
    # The resumed job's model loads into a plain diffusers pipeline and generates.
    base_dir = next((trainer_cache / "base-models").glob("builtin-sd15-*"))
    pipeline = StableDiffusionPipeline.from_pretrained(base_dir, local_files_only=True)
    pipeline.load_lora_weights(str(tmp_path / "storage" / f"tenants/default/models/{victim_final.subject_model_id}"))
    image = pipeline("a photo of ohwx dog", num_inference_steps=2, output_type="np").images[0]
    assert np.isfinite(image).all()
    _assert_no_job_held_twice(postgres_url)


def _ended(client: LikenessClient, job_id: str):
    job = client.get_training_job(job_id)
    return job if job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED) else None


def _lease_owner(url: str, job_id: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT lease_owner FROM training_jobs WHERE job_id = :id"), {"id": job_id}
            ).scalar_one()
    finally:
        engine.dispose()


def _assert_no_job_held_twice(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            leases = connection.execute(
                sa.text(
                    "SELECT job_id, worker_id, fence, acquired_at, released_at FROM job_leases ORDER BY job_id, fence"
                )
            ).all()
            fences = connection.execute(sa.text("SELECT job_id, fence FROM job_events ORDER BY job_id, sequence")).all()
    finally:
        engine.dispose()
    by_job: dict[str, list] = {}
    for lease in leases:
        by_job.setdefault(lease.job_id, []).append(lease)
    assert len(by_job) == 6
    for job_id, held in by_job.items():
        for earlier, later in itertools.pairwise(held):
            assert earlier.released_at is not None and earlier.released_at <= later.acquired_at, (job_id, held)
    assert any(len(held) > 1 for held in by_job.values())  # the killed worker's job moved
    last: dict[str, int] = {}
    for job_id, fence in fences:
        assert fence >= last.get(job_id, 0), f"{job_id}: an event of an older lease was written after a newer one"
        last[job_id] = fence


@pytest.mark.slow
def test_database_lost_while_serving_is_unavailable_then_recovers_without_restart(
    tmp_path, trainer_cache, postgres_server
):
    url = postgres_server.fresh_database()
    cluster = Cluster(tmp_path, trainer_cache, url)
    try:
        cluster.start("all", "all")
        cluster.wait_serving("all")
        with LikenessClient(cluster.address("all"), timeout=30, max_reconnects=0) as client:
            dataset = client.prepare_dataset(photos(3), pb.DatasetOptions(base_model="tiny-sd15")).dataset
            job = client.create_training_job(job_spec(steps=40, dataset_id=dataset.dataset_id)).job
            wait_for(lambda: client.get_training_job(job.job_id).progress.step >= 1, 120, what="the first step")
            postgres_server.stop()
            try:
                with pytest.raises(grpc.RpcError) as caught:
                    client.trainer.GetTrainingJob(pb.GetTrainingJobRequest(job_id=job.job_id), timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert (
                    "unreachable" in caught.value.details() and postgres_server.password not in caught.value.details()
                )
                wait_for(lambda: not client.is_serving(TRAINER), 20, 0.3, what="health to report NOT_SERVING")
            finally:
                postgres_server.start()
            wait_for(lambda: client.is_serving(TRAINER), 30, 0.3, what="health to report SERVING again")
            final = wait_for(lambda: _ended(client, job.job_id), 300, 1.0, what="the job to end")
            events = list(client.watch_training_job(job.job_id, timeout=60))
    finally:
        cluster.close()
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, cluster.log_tail("all"))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    succeeded = [e for e in events if e.HasField("succeeded")]
    assert len(succeeded) == 1  # trained once, published once
