"""Benchmark: the trainer's control plane, deployed as separate `likeness serve trainer` processes.

API replicas (`--role api`) and workers (`--role worker`, one warm training process each, `--torch-threads 1`)
share one PostgreSQL 15 server (a private one, `tests/pg_server.py`), one storage folder and one cache, all on
127.0.0.1. Each configuration gets a fresh database and its own processes; every process is started, reported
SERVING and given a warm-up job (so its training process has imported torch and loaded the base model) before
anything is timed. Jobs train `toy-sd15` (32 px) LoRA r4 on one small synthetic dataset.

1. `trainer.workers_throughput_ratio`: the same 6 jobs of 50 steps (tiny-sd15, 64 px) through one API replica on
   a deployment with 1 worker and on one with 2 workers, both started and warm, in 3 alternating rounds; wall time
   from the first CreateTrainingJob to the last job's end (its `end_time`, database clock); the figure is the
   median wall(1 worker) / the median wall(2 workers).
2. `trainer.failover_seconds`: 2 workers, lease 5 s, heartbeat 1 s; a long job checkpointing every 25 steps.
   After its first checkpoint the worker holding it is SIGKILLed with its training process (both process
   groups); the figure is the time from the kill until a watcher on the API replica receives the `state_changed`
   RUNNING event "resuming on <the other worker>". The job must then end SUCCEEDED.
3. `trainer.watch_latency_ms_p95`: 2 API replicas + 1 worker reporting progress every step; the job is created
   through replica A and watched through replica B; latency = receive time at the watcher minus the event's
   `time` (database clock, same machine); p95 over the events written after the watch opened.
4. `trainer.job_overhead_seconds`: on the same (warm) deployment, a 300-step job created through replica A and
   watched there: wall time from CreateTrainingJob to the SUCCEEDED event at the watcher, minus 300 x the median
   step time (median of 1/steps_per_second over its per-step progress events).

Run: `python bench/bench_control_plane.py` (prints the figures; `--figure NAME` runs one part) or import `run()`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # pg_server
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "trainer"))  # trainer_helpers

import numpy as np
import psutil
import sqlalchemy as sa
from pg_server import PostgresServer
from trainer_helpers import job_spec, photos

from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb

BASE_MODEL = "toy-sd15"
#: The throughput jobs train the 64 px tiny SD 1.x: at the toy model's 32 px two concurrent runs slow each other's
#: steps by about a quarter on a 2-core VM (memory-bound), which measures the VM rather than the control plane.
THROUGHPUT_BASE_MODEL = "tiny-sd15"
THROUGHPUT_JOBS = 6
THROUGHPUT_STEPS = 50
THROUGHPUT_ROUNDS = 3
FAILOVER_STEPS = 400
FAILOVER_CHECKPOINT_EVERY = 25
LATENCY_STEPS = 200
MIN_LATENCY_EVENTS = 100
OVERHEAD_STEPS = 300
LEASE_SECONDS = 5
HEARTBEAT_SECONDS = 1
#: Progress reporting of the throughput/failover workers (the deployed default) and of the latency/overhead one.
DEFAULT_PROGRESS_SECONDS = 1.0
START_TIMEOUT_SECONDS = 240
JOB_TIMEOUT_SECONDS = 600
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
LOG_TAIL_CHARS = 1500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def event_seconds(event: pb.WatchTrainingJobResponse) -> float:
    """An event's `time` (written by the database's clock) as seconds since the epoch."""
    return event.time.seconds + event.time.nanos / 1e9


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Deployment:
    """Trainer processes sharing one database, one storage folder and one cache; each in its own process group.

    A context manager: leaving it stops every process it started (and their training processes); an exception
    leaving it is re-raised with the tail of every process's log.
    """

    def __init__(self, root: Path, cache: Path, database_url: str, *, progress_seconds: float) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache = cache
        self.database_url = database_url
        self.progress_seconds = progress_seconds
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.killed: set[str] = set()
        self.engine = sa.create_engine(database_url, pool_size=2, max_overflow=2)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        tails = self.log_tails() if error is not None else ""
        self.close()
        if error is not None and isinstance(error, Exception):
            raise RuntimeError(f"{type(error).__name__}: {error}\n{tails}") from error

    # ---- processes -----------------------------------------------------------------------------------------

    def start(self, name: str, role: str) -> None:
        port = free_port()
        command = [
            sys.executable, "-m", "likeness.cli.main", "serve", "trainer", "--role", role,
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
            "--storage-url", str(self.root / "storage"), "--cache-dir", str(self.cache), "--device", "cpu",
            "--database-url", self.database_url,
            "--lease-seconds", str(LEASE_SECONDS), "--heartbeat-seconds", str(HEARTBEAT_SECONDS),
            "--trainer-progress-interval-seconds", str(self.progress_seconds), "--torch-threads", "1",
            "--log-format", "text", "--grace-seconds", "5",
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.root / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.ports[name] = port

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if name not in self.killed and process.poll() is not None:
                raise RuntimeError(f"{name} exited unexpectedly with status {process.returncode}")

    def wait_serving(self, *names: str) -> None:
        for name in names:
            with LikenessClient(self.address(name), timeout=5) as client:

                def serving(client: LikenessClient = client) -> bool:
                    self.check_alive()
                    return client.is_serving(timeout=2)

                wait_until(serving, START_TIMEOUT_SECONDS, f"{name} to report SERVING", interval=0.3)

    def worker_of(self, owner: str) -> str:
        """The name of the process that a lease owner ("host/pid/device") names."""
        for name, process in self.processes.items():
            if f"/{process.pid}/" in owner:
                return name
        raise RuntimeError(f"no process of this deployment is lease owner {owner!r}")

    def kill(self, name: str) -> float:
        """SIGKILLs a process's group and its training processes' groups (they run in sessions of their own);
        returns when (time.time()) the kills were sent."""
        process = self.processes[name]
        groups = [process.pid]
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(ProcessLookupError):
                    groups.append(os.getpgid(child.pid))
        self.killed.add(name)
        killed_at = time.time()
        for group in dict.fromkeys(groups):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        process.wait(timeout=30)
        return killed_at

    def close(self) -> None:
        alive = [process for process in self.processes.values() if process.poll() is None]
        descendants: list[psutil.Process] = []
        for process in alive:
            with contextlib.suppress(psutil.Error):
                descendants += psutil.Process(process.pid).children(recursive=True)
        for process in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in alive:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for child in descendants:  # training processes exit with their parent; make sure of it
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()
        self.engine.dispose()

    def cpu_seconds(self, postgres: list[psutil.Process]) -> dict[str, float]:
        """CPU time (user + system) used so far by this deployment's processes, by kind: `training` (the training
        processes), `control` (serve processes: API replicas and worker supervisors), `postgres` (the server)."""
        used = {"training": 0.0, "control": 0.0, "postgres": 0.0}

        def add(kind: str, process: psutil.Process) -> None:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                used[kind] += times.user + times.system

        for name, popen in self.processes.items():
            if name in self.killed or popen.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                serve = psutil.Process(popen.pid)
                add("control", serve)
                for child in serve.children(recursive=True):
                    add("training", child)
        for process in postgres:
            add("postgres", process)
        return used

    def log_tails(self) -> str:
        parts = []
        for name in self.processes:
            path = self.root / f"{name}.log"
            text = path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else "(no log)"
            parts.append(f"--- {name} ({path}) ---\n{text}")
        return "\n".join(parts)

    # ---- the database, read directly ----------------------------------------------------------------------

    def _select(self, sql: str, job_ids: Iterable[str]) -> list[Any]:
        query = sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))
        with self.engine.connect() as connection:
            return connection.execute(query, {"ids": list(job_ids)}).all()

    def jobs(self, job_ids: Iterable[str]) -> list[Any]:
        return self._select(
            "SELECT job_id, state, end_time, lease_owner, error, resume_count FROM training_jobs WHERE job_id IN :ids",
            job_ids,
        )

    def lease_owners(self, job_ids: Iterable[str]) -> list[str]:
        """Every worker that held a lease on one of the jobs (one entry per lease)."""
        rows = self._select("SELECT worker_id FROM job_leases WHERE job_id IN :ids ORDER BY fence", job_ids)
        return [row.worker_id for row in rows]

    def median_step_seconds(self, job_ids: Iterable[str]) -> float:
        """Median of 1/steps_per_second over the jobs' stored progress events."""
        rows = self._select("SELECT payload FROM job_events WHERE job_id IN :ids AND type = 'progress'", job_ids)
        payloads = [row.payload if isinstance(row.payload, dict) else json.loads(row.payload) for row in rows]
        rates = [float(p["steps_per_second"]) for p in payloads if p.get("steps_per_second")]
        return statistics.median(1.0 / rate for rate in rates) if rates else float("nan")

    def wait_ended(self, job_ids: list[str], timeout: float = JOB_TIMEOUT_SECONDS) -> list[Any]:
        """Waits until every job is in a terminal state; raises unless all SUCCEEDED."""

        def ended() -> list[Any] | None:
            self.check_alive()
            rows = self.jobs(job_ids)
            return rows if len(rows) == len(job_ids) and all(row.state in TERMINAL for row in rows) else None

        rows = wait_until(ended, timeout, f"{len(job_ids)} job(s) to end", interval=0.2)
        failed = [f"{row.job_id}: {row.state} {row.error}" for row in rows if row.state != "SUCCEEDED"]
        if failed:
            raise RuntimeError("jobs did not succeed: " + "; ".join(failed))
        return rows


def postgres_processes(server: PostgresServer) -> list[psutil.Process]:
    """The PostgreSQL server's processes (postmaster and backends)."""
    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        assert server.data_dir is not None
        postmaster = psutil.Process(int((server.data_dir / "postmaster.pid").read_text().splitlines()[0]))
        return [postmaster, *postmaster.children(recursive=True)]
    return []


def machine_cpu_seconds() -> dict[str, float]:
    """CPU time of all cores so far, anyone's processes: `busy` (running something) and `steal` (the hypervisor
    ran someone else while this VM wanted the core)."""
    times = psutil.cpu_times()
    steal = getattr(times, "steal", 0.0)
    # Linux counts guest time inside user time already.
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0) - steal
    busy -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return {"busy": busy, "steal": steal}


def prepare_dataset(client: LikenessClient, base_model: str = BASE_MODEL) -> str:
    return client.prepare_dataset(photos(4), pb.DatasetOptions(base_model=base_model)).dataset.dataset_id


def warm_up(
    deployment: Deployment, client: LikenessClient, dataset_id: str, workers: list[str], base_model: str = BASE_MODEL
) -> None:
    """Runs 1-step jobs until every worker has trained one: its training process is then ready (a worker leases
    nothing before) and keeps the base model loaded."""
    pending = set(workers)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers {sorted(pending)} took no warm-up job in {START_TIMEOUT_SECONDS} s")
        spec = job_spec(base_model, steps=1, dataset_id=dataset_id)
        ids = [client.create_training_job(spec).job.job_id for _ in workers]
        deployment.wait_ended(ids)
        pending -= {deployment.worker_of(owner) for owner in deployment.lease_owners(ids)}


class Watcher:
    """Follows a job's events on a thread: `events` gets (receive time, event) as they arrive."""

    def __init__(self, address: str, job_id: str) -> None:
        self.events: list[tuple[float, pb.WatchTrainingJobResponse]] = []
        self.error: BaseException | None = None
        self.opened = time.time()
        self._client = LikenessClient(address, timeout=60)
        self._thread = threading.Thread(target=self._follow, args=(job_id,), daemon=True, name=f"watch-{job_id}")
        self._thread.start()

    def _follow(self, job_id: str) -> None:
        try:
            for event in self._client.watch_training_job(job_id, timeout=JOB_TIMEOUT_SECONDS):
                self.events.append((time.time(), event))
        except BaseException as error:
            self.error = error

    def first(self, predicate: Callable[[pb.WatchTrainingJobResponse], bool]) -> tuple[float, Any] | None:
        if self.error is not None:
            raise RuntimeError(f"the watch failed: {self.error}") from self.error
        return next(((at, event) for at, event in list(self.events) if predicate(event)), None)

    def join(self, timeout: float = JOB_TIMEOUT_SECONDS) -> list[tuple[float, pb.WatchTrainingJobResponse]]:
        self._thread.join(timeout)
        self._client.close()
        if self._thread.is_alive():
            raise TimeoutError("the watch did not end")
        if self.error is not None:
            raise RuntimeError(f"the watch failed: {self.error}") from self.error
        return self.events


def _state(event: pb.WatchTrainingJobResponse) -> int | None:
    return event.state_changed.state if event.HasField("state_changed") else None


# ---- the figures ---------------------------------------------------------------------------------------------


class Throughput(NamedTuple):
    wall: float
    spread: str
    median_step: float
    cpu: dict[str, float]


def start_workers(deployment: Deployment, workers: int) -> tuple[LikenessClient, str]:
    """Starts an API replica and `workers` workers and warms them; returns (a client of the API replica, the
    dataset). The caller closes the client."""
    names = [f"worker-{i + 1}" for i in range(workers)]
    deployment.start("api", "api")
    for name in names:
        deployment.start(name, "worker")
    deployment.wait_serving("api", *names)
    client = LikenessClient(deployment.address("api"), timeout=60)
    try:
        dataset_id = prepare_dataset(client, THROUGHPUT_BASE_MODEL)
        warm_up(deployment, client, dataset_id, names, THROUGHPUT_BASE_MODEL)
    except BaseException:
        client.close()
        raise
    return client, dataset_id


def throughput(
    deployment: Deployment, server: PostgresServer, client: LikenessClient, dataset_id: str, workers: int
) -> Throughput:
    """Runs the throughput jobs on a started deployment; returns what was measured."""
    names = [f"worker-{i + 1}" for i in range(workers)]
    spec = job_spec(THROUGHPUT_BASE_MODEL, steps=THROUGHPUT_STEPS, dataset_id=dataset_id)
    postgres = postgres_processes(server)
    machine_before, ours_before = machine_cpu_seconds(), deployment.cpu_seconds(postgres)
    started = time.time()
    ids = [client.create_training_job(spec).job.job_id for _ in range(THROUGHPUT_JOBS)]
    rows = deployment.wait_ended(ids)
    machine_after, ours_after = machine_cpu_seconds(), deployment.cpu_seconds(postgres)
    wall = max(row.end_time for row in rows) - started
    spread = collections.Counter(deployment.worker_of(owner) for owner in deployment.lease_owners(ids))
    cpu = {kind: ours_after[kind] - ours_before[kind] for kind in ours_after}
    cpu |= {kind: machine_after[kind] - machine_before[kind] for kind in machine_after}
    cpu["others"] = cpu["busy"] - sum(cpu[kind] for kind in ours_after)
    return Throughput(
        wall=wall,
        spread="+".join(str(spread[name]) for name in names),
        median_step=deployment.median_step_seconds(ids),
        cpu=cpu,
    )


def describe_cpu(measured: Throughput) -> str:
    cpu = measured.cpu
    return (
        f"{measured.wall:.1f} s, median step {measured.median_step * 1000:.0f} ms, CPU {cpu['busy']:.0f} core-s "
        f"busy (training {cpu['training']:.0f}, serve processes {cpu['control']:.1f}, PostgreSQL "
        f"{cpu['postgres']:.1f}, other processes {cpu['others']:.0f}; steal {cpu['steal']:.1f})"
    )


def failover(deployment: Deployment, client: LikenessClient, dataset_id: str) -> tuple[float, str]:
    """On a deployment with two warm workers: kills the worker of a running job; returns (seconds, note)."""
    spec = job_spec(
        BASE_MODEL,
        steps=FAILOVER_STEPS,
        dataset_id=dataset_id,
        checkpointing=pb.CheckpointConfig(every_n_steps=FAILOVER_CHECKPOINT_EVERY),
    )
    job_id = client.create_training_job(spec).job.job_id
    watcher = Watcher(deployment.address("api"), job_id)

    def checkpointed() -> pb.TrainingJob | None:
        deployment.check_alive()
        job = client.get_training_job(job_id)
        return job if job.state == pb.JOB_STATE_RUNNING and job.last_checkpoint_step >= 1 else None

    checkpoint_step = wait_until(checkpointed, 120, "the job's first checkpoint").last_checkpoint_step
    (row,) = deployment.jobs([job_id])
    victim = deployment.worker_of(row.lease_owner)
    killed_at = deployment.kill(victim)

    def resumed(event: pb.WatchTrainingJobResponse) -> bool:
        return _state(event) == pb.JOB_STATE_RUNNING and "resuming on" in event.state_changed.message

    received, event = wait_until(lambda: watcher.first(resumed), 60, "the job to resume on the other worker", 0.02)
    successor = deployment.worker_of(event.state_changed.message.split()[2])
    if successor == victim:
        raise RuntimeError(f"the job resumed on the killed worker {victim}")
    events = watcher.join()
    (final,) = deployment.wait_ended([job_id], timeout=60)
    if _state(events[-1][1]) != pb.JOB_STATE_SUCCEEDED or final.resume_count < 1:
        raise RuntimeError(f"the job ended {final.state} with resume_count {final.resume_count}")
    seconds = received - killed_at
    after = [e.progress.step for _, e in events if e.HasField("progress") and e.sequence > event.sequence]
    note = (
        f"lease {LEASE_SECONDS} s, heartbeat {HEARTBEAT_SECONDS} s; killed {victim} (serve process and training "
        f"process) after the checkpoint at step {checkpoint_step}; resume event written "
        f"{event_seconds(event) - killed_at:.2f} s after the kill (database clock), received {seconds:.2f} s; "
        f"resumed at step {after[0] if after else '?'}, job SUCCEEDED ({FAILOVER_STEPS} steps)"
    )
    return seconds, note


def watch_latency(deployment: Deployment, a: LikenessClient, dataset_id: str) -> tuple[float, str]:
    """Job created through replica A, watched through replica B; returns (p95 ms, note)."""
    job_id = a.create_training_job(job_spec(BASE_MODEL, steps=LATENCY_STEPS, dataset_id=dataset_id)).job.job_id
    watcher = Watcher(deployment.address("api-b"), job_id)
    events = watcher.join()
    if _state(events[-1][1]) != pb.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"the latency job did not succeed: {events[-1][1]}")
    # Events written before the watch opened were replayed, not delivered live.
    latencies = [(at - event_seconds(e)) * 1000 for at, e in events if event_seconds(e) >= watcher.opened]
    if len(latencies) < MIN_LATENCY_EVENTS:
        raise RuntimeError(f"only {len(latencies)} events were delivered live (want {MIN_LATENCY_EVENTS})")
    p95 = float(np.percentile(latencies, 95))
    note = (
        f"{len(latencies)} events (progress every step), created via replica A, watched via replica B; "
        f"median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms; --watch-poll-ms 100"
    )
    return p95, note


def job_overhead(deployment: Deployment, client: LikenessClient, dataset_id: str) -> tuple[float, str]:
    """A job on the warm worker, watched on the replica that created it; returns (overhead seconds, note)."""
    spec = job_spec(BASE_MODEL, steps=OVERHEAD_STEPS, dataset_id=dataset_id)
    started = time.time()
    job_id = client.create_training_job(spec).job.job_id
    watcher = Watcher(deployment.address("api-a"), job_id)
    events = watcher.join()
    ended_at, last = events[-1]
    if _state(last) != pb.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"the overhead job did not succeed: {last}")
    progress = [e for _, e in events if e.HasField("progress")]
    step_seconds = [1.0 / e.progress.steps_per_second for e in progress if e.progress.steps_per_second > 0]
    if len(step_seconds) < OVERHEAD_STEPS // 2:
        raise RuntimeError(f"only {len(step_seconds)} progress events for {OVERHEAD_STEPS} steps")
    median_step = statistics.median(step_seconds)
    wall = ended_at - started
    training = OVERHEAD_STEPS * median_step
    running = next(event_seconds(e) for _, e in events if _state(e) == pb.JOB_STATE_RUNNING)
    note = (
        f"wall {wall:.2f} s - {OVERHEAD_STEPS} x median step {median_step * 1000:.1f} ms ({training:.2f} s); "
        f"create to RUNNING {running - started:.2f} s, RUNNING to step 1 {event_seconds(progress[0]) - running:.2f} s, "
        f"step {OVERHEAD_STEPS} to SUCCEEDED at the watcher {ended_at - event_seconds(progress[-1]):.2f} s "
        f"(sum of all steps {sum(step_seconds):.2f} s); api + worker processes on PostgreSQL, warm worker"
    )
    return wall - training, note


# ---- running -------------------------------------------------------------------------------------------------

FIGURES = ("throughput", "failover", "latency", "overhead")


def run(only: Iterable[str] = FIGURES) -> list[dict]:
    only = set(only)
    work = Path(tempfile.mkdtemp(prefix="likeness-bench-control-plane-"))
    cache = work / "cache"
    server = PostgresServer()
    figures: list[dict] = []
    succeeded = False
    try:
        server.start()
        if "throughput" in only or "failover" in only:
            counts = (1, 2) if "throughput" in only else (2,)
            with contextlib.ExitStack() as stack:
                started: dict[int, tuple[Deployment, LikenessClient, str]] = {}
                for workers in counts:
                    d = stack.enter_context(
                        Deployment(
                            work / f"workers-{workers}",
                            cache,
                            server.fresh_database("bench"),
                            progress_seconds=DEFAULT_PROGRESS_SECONDS,
                        )
                    )
                    client, dataset_id = start_workers(d, workers)
                    stack.enter_context(client)
                    started[workers] = (d, client, dataset_id)
                if "throughput" in only:
                    # Rounds alternate the two deployments (the idle one waits, nearly without CPU), so a noisy
                    # minute on this VM hits both alike; the figure is the ratio of the median walls.
                    runs: dict[int, list[Throughput]] = {1: [], 2: []}
                    for _ in range(THROUGHPUT_ROUNDS):
                        for workers in counts:
                            d, client, dataset_id = started[workers]
                            runs[workers].append(throughput(d, server, client, dataset_id, workers))
                    one, two = (sorted(runs[w], key=lambda r: r.wall)[THROUGHPUT_ROUNDS // 2] for w in (1, 2))
                    walls = {w: ", ".join(f"{r.wall:.1f}" for r in runs[w]) for w in (1, 2)}
                    figures.append(
                        {
                            "name": "trainer.workers_throughput_ratio",
                            "value": round(one.wall / two.wall, 3),
                            "unit": "x",
                            "goal": ">= 1.7",
                            "note": f"{THROUGHPUT_JOBS} jobs x {THROUGHPUT_STEPS} steps ({THROUGHPUT_BASE_MODEL}) "
                            f"through one API replica on PostgreSQL, --torch-threads 1 per worker, {os.cpu_count()} "
                            f"cores, {THROUGHPUT_ROUNDS} alternating rounds (walls: 1 worker {walls[1]} s; 2 workers "
                            f"{walls[2]} s); median rounds: 1 worker {describe_cpu(one)}; 2 workers (jobs "
                            f"{two.spread}) {describe_cpu(two)}",
                        }
                    )
                if "failover" in only:
                    d, client, _ = started[2]
                    seconds, note = failover(d, client, prepare_dataset(client))
                    figures.append(
                        {"name": "trainer.failover_seconds", "value": round(seconds, 2), "unit": "s",
                         "goal": "<= 10", "note": note}
                    )  # fmt: skip
        if "latency" in only or "overhead" in only:
            url = server.fresh_database("bench")
            with Deployment(work / "replicas", cache, url, progress_seconds=0.0) as d:
                for name, role in (("api-a", "api"), ("api-b", "api"), ("worker", "worker")):
                    d.start(name, role)
                d.wait_serving("api-a", "api-b", "worker")
                with LikenessClient(d.address("api-a"), timeout=60) as a:
                    dataset_id = prepare_dataset(a)
                    warm_up(d, a, dataset_id, ["worker"])
                    if "latency" in only:
                        p95, note = watch_latency(d, a, dataset_id)
                        figures.append(
                            {"name": "trainer.watch_latency_ms_p95", "value": round(p95, 1), "unit": "ms",
                             "goal": "<= 250", "note": note}
                        )  # fmt: skip
                    if "overhead" in only:
                        overhead, note = job_overhead(d, a, dataset_id)
                        figures.append(
                            {"name": "trainer.job_overhead_seconds", "value": round(overhead, 2), "unit": "s",
                             "goal": "<= 1.5", "note": note}
                        )  # fmt: skip
        succeeded = True
    except Exception as error:
        raise RuntimeError(f"control-plane benchmark failed (logs kept in {work}): {error}") from error
    finally:
        server.close()
        if succeeded:
            shutil.rmtree(work, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--figure", action="append", choices=FIGURES, help="run only these parts")
    args = parser.parse_args()
    started = time.perf_counter()
    print(json.dumps(run(args.figure or FIGURES), indent=2))
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
