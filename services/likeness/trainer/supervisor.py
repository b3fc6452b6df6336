"""Worker supervisors: one per device, each leasing jobs from the database and running them in a training process.

A supervisor keeps one warm training process (`likeness.trainer.worker --serve`) and, in a loop, claims the next
job (`LeaseQueue.claim`), hands it to the process, heartbeats the lease while it trains, and relays the process's
events into the job's record and event log with writes fenced by the lease. When the process dies, the supervisor
starts a new one and the job resumes from its last checkpoint (once; a second crash fails the job with the
process's last output). Jobs with several processes per job run one-shot under `accelerate launch` instead.

Stopping the supervisor preempts its job: the process checkpoints, and the job goes back to the queue for any
worker to resume. A supervisor that cannot reach the database stops training once its lease may have run out;
another worker then resumes the job from its checkpoint.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.errors import Unavailable
from likeness.trainer import metrics
from likeness.trainer.leases import Lease, LeaseQueue
from likeness.trainer.protocol import (
    OUTCOMES,
    JobControl,
    StopReason,
    WorkerEventType,
    encode_exit_command,
    encode_run_command,
    parse_event_line,
)
from likeness.trainer.signals import Wakeup
from likeness.trainer.states import JobEventType, JobState, StopRequest
from likeness.trainer.store import LeaseLost

log = logging.getLogger("likeness.trainer.supervisor")

ERROR_TAIL_LINES = 20
#: How long a training process may take to import torch and diffusers and say `ready`.
READY_TIMEOUT_SECONDS = 300.0
#: Attempts per lease: a job whose process dies twice in a row fails instead of crash-looping.
MAX_ATTEMPTS = 2
#: How long a stopped process may take to checkpoint and report before it is killed.
STOP_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class DeviceSlot:
    """One device a supervisor trains on: its name, the process's `--device`, and extra environment."""

    name: str
    worker_device: str
    env: Mapping[str, str] = field(default_factory=dict)
    #: Devices a job may span here: GPUs of the slot, or processes sharing the CPU.
    devices: int = 1

    def environment_for(self, processes: int) -> Mapping[str, str]:
        """The slot's environment for a job on `processes` of its devices (the first ones)."""
        visible = self.env.get("CUDA_VISIBLE_DEVICES")
        if visible is None or processes >= self.devices:
            return self.env
        return {**self.env, "CUDA_VISIBLE_DEVICES": ",".join(visible.split(",")[:processes])}


@dataclass
class WorkerOptions:
    """How supervisors start training processes and pace their database traffic."""

    storage_url: str
    base_models: str
    cache_dir: str
    work_root: Path
    progress_interval_seconds: float = 1.0
    metric_hooks: Sequence[str] = ()
    #: Processes per job (data-parallel over that many devices via `accelerate launch`); 1 runs a warm process.
    processes_per_job: int = 1
    heartbeat_seconds: float = 2.0
    #: Base model a warm process loads before it reports ready, so even its first job finds it loaded.
    preload_base_model: str = ""
    #: How often an idle supervisor looks for work. A job created in this process, or announced by PostgreSQL
    #: (LISTEN/NOTIFY), wakes it at once; the poll is the fallback (SQLite shared by several processes).
    idle_poll_seconds: float = 0.5
    torch_threads: int = 0


class ProcessExited(Exception):
    """The training process ended (its stdout closed)."""


class TrainingProcess:
    """A training process with its stdout read into a queue of events and its stderr into a tail."""

    def __init__(self, command: list[str], env: Mapping[str, str], name: str) -> None:
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, daemon=True, name=f"{name}-stdout").start()
        threading.Thread(target=self._read_stderr, daemon=True, name=f"{name}-stderr").start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = parse_event_line(line)
            if event is None:
                log.debug("worker: %s", line.rstrip(), extra={"worker": self.name})
            else:
                self.events.put(event)
        self.events.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.tail.append(line)
            log.debug("worker: %s", line.rstrip(), extra={"worker": self.name})

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            self.process.stdin.write(line)
            self.process.stdin.flush()

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, None after `timeout`; ProcessExited once the process has closed its stdout."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is None:
            self.events.put(None)  # stays exited for later calls
            raise ProcessExited(self.name)
        return event

    def exit_detail(self) -> str:
        code = self.process.wait(timeout=10)
        detail = " | ".join(line.strip() for line in self.tail if line.strip())[-2000:]
        reason = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return f"the training process stopped unexpectedly ({reason}): {detail or 'no output'}"

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def close(self, timeout: float = 5.0) -> None:
        """Asks a warm process to exit, then kills it if it does not."""
        self.send(encode_exit_command())
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_identity(slot: DeviceSlot) -> str:
    """Names a worker in leases and logs: the host (the pod's name on Kubernetes), the process and the device."""
    return f"{socket.gethostname()}/{os.getpid()}/{slot.name}"


class WorkerSupervisor:
    """Leases jobs for one device and runs them; `start()` starts its thread, `stop()` preempts and joins it."""

    def __init__(
        self,
        leases: LeaseQueue,
        slot: DeviceSlot,
        options: WorkerOptions,
        *,
        work_available: Wakeup,
        heartbeat_now: Wakeup,
        on_event_written: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self.leases = leases
        self.slot = slot
        self.options = options
        self.worker_id = worker_identity(slot)
        self.work_available = work_available
        self.heartbeat_now = heartbeat_now
        self.on_event_written = on_event_written
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: TrainingProcess | None = None
        self._process_is_warm = False
        self._control: JobControl | None = None
        self._current: Lease | None = None
        self.jobs_run = 0

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"supervisor-{self.slot.name}", daemon=True)
        self._thread.start()

    def stop(self, grace_seconds: float) -> None:
        """Preempts the running job (it checkpoints and goes back to the queue) and stops the training process."""
        self.stopping.set()
        self.work_available.set()
        control, lease = self._control, self._current
        if control is not None and lease is not None:
            with contextlib.suppress(OSError):
                control.write(stop=StopReason.PREEMPT, lease_valid_until=time.time() + grace_seconds)
        if self._thread is not None:
            self._thread.join(timeout=max(grace_seconds, 0.0) + 15.0)
        if self._process is not None:
            self._process.close()

    @property
    def busy(self) -> bool:
        return self._current is not None

    # ---- the loop ----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.options.processes_per_job <= 1:
                    self.ensure_warm_process()
                claimed_at = time.time()  # the lease runs from the claim's commit, which is after this
                token = self.work_available.token()
                lease = self.leases.claim(self.worker_id)
            except Unavailable:
                self.stopping.wait(max(self.options.idle_poll_seconds, 1.0))
                continue
            except Exception:
                log.exception("worker supervisor failed; retrying", extra={"worker": self.worker_id})
                self.stopping.wait(2.0)
                continue
            if lease is None:
                self.work_available.wait(self.options.idle_poll_seconds, since=token)
                continue
            self.on_event_written(lease.job_id)
            self._run(lease, claimed_at)

    def ensure_warm_process(self) -> None:
        if self._process is not None and self._process.alive() and self._process_is_warm:
            return
        if self._process is not None and self._process_is_warm:
            log.warning("training process died; starting a new one", extra={"worker": self.worker_id})
        self._process_is_warm = True
        self._process = TrainingProcess(self.command(["--serve"]), self.environment(), self.worker_id)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                event = self._process.next_event(timeout=0.5)
            except ProcessExited:
                detail = self._process.exit_detail()
                self._process = None
                raise RuntimeError(detail) from None
            if event is not None and event["type"] == WorkerEventType.READY:
                return
        if not self.stopping.is_set():
            raise RuntimeError("the training process did not become ready in time")

    @property
    def warm_process(self) -> TrainingProcess:
        assert self._process is not None, "ensure_warm_process() first"
        return self._process

    def start_one_shot_process(self, job_file: Path, processes: int) -> TrainingProcess:
        """A process for one data-parallel job (`accelerate launch ... --job-file`); it exits when the job ends."""
        if self._process is not None and self._process_is_warm:
            self._process.close()  # its base model must not hold the devices the job's processes need
        command = self.command(["--job-file", str(job_file)], processes)
        self._process_is_warm = False
        self._process = TrainingProcess(command, self.environment(processes), self.worker_id)
        return self._process

    def command(self, mode: list[str], processes: int = 1) -> list[str]:
        args = [
            "-m", "likeness.trainer.worker", *mode,
            "--storage-url", self.options.storage_url,
            "--base-models", self.options.base_models,
            "--cache-dir", self.options.cache_dir,
            "--device", self.slot.worker_device,
            "--work-dir", str(self.options.work_root / "scratch"),
            "--parent-pid", str(os.getpid()),
            "--progress-interval", str(self.options.progress_interval_seconds),
        ]  # fmt: skip
        for hook in self.options.metric_hooks:
            args += ["--metric-hook", hook]
        if self.options.preload_base_model and "--serve" in mode:
            args += ["--preload-base-model", self.options.preload_base_model]
        if processes <= 1:
            return [sys.executable, *args]
        # torchrun-style launch; on CPUs the processes talk over gloo (Accelerator(cpu=True) picks MULTI_CPU).
        return [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
            *args,
        ]  # fmt: skip

    def environment(self, processes: int = 1) -> dict[str, str]:
        env = {**os.environ, **self.slot.environment_for(processes), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.options.torch_threads:
            env["OMP_NUM_THREADS"] = str(self.options.torch_threads)
            env["LIKENESS_TORCH_THREADS"] = str(self.options.torch_threads)
        return env

    # ---- one job -----------------------------------------------------------------------------------------

    def _run(self, lease: Lease, claimed_at: float) -> None:
        work_dir = self.options.work_root / lease.job_id
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        control = JobControl(work_dir / "control.json")
        valid_until = claimed_at + self.leases.lease_seconds
        control.write(stop=None, lease_valid_until=valid_until)
        self._control, self._current = control, lease
        job = _JobRun(self, lease, control, valid_until)
        heartbeat = threading.Thread(target=job.heartbeat_loop, name=f"heartbeat-{lease.job_id}", daemon=True)
        metrics.RUNNING_JOBS.labels(self.slot.name).set(1)
        heartbeat.start()
        try:
            job.run(work_dir)
        except Exception:
            log.exception("job supervision failed", extra={"job_id": lease.job_id})
            job.finish(JobState.FAILED, "internal error while supervising the job")
        finally:
            job.done.set()
            self.heartbeat_now.set()  # wakes the heartbeat thread now instead of at its next beat
            heartbeat.join(timeout=10)
            self._control = self._current = None
            self.jobs_run += 1
            metrics.RUNNING_JOBS.labels(self.slot.name).set(0)
            shutil.rmtree(work_dir, ignore_errors=True)


class _JobRun:
    """One leased job on a supervisor: the process conversation, the heartbeat and the fenced writes."""

    def __init__(self, supervisor: WorkerSupervisor, lease: Lease, control: JobControl, valid_until: float) -> None:
        self.supervisor = supervisor
        self.lease = lease
        self.control = control
        self.leases = supervisor.leases
        self.done = threading.Event()
        self.lost = threading.Event()
        self.stop_reason: StopReason | None = None
        self.lease_valid_until = valid_until
        self.subject_model: dict[str, Any] | None = None
        self.previous_step = lease.last_checkpoint_step
        self.ended = False

    # ---- heartbeat ---------------------------------------------------------------------------------------

    def heartbeat_loop(self) -> None:
        interval = self.supervisor.options.heartbeat_seconds
        while not self.done.is_set():
            self.supervisor.heartbeat_now.wait(interval)
            if self.done.is_set():
                return
            started = time.time()
            try:
                request = self.leases.heartbeat(self.lease)
            except LeaseLost:
                self._lose("another worker holds the lease now")
                return
            except Unavailable:
                if time.time() >= self.lease_valid_until:
                    self._lose("the database stayed unreachable past the lease")
                    return
                continue
            self.lease_valid_until = started + self.leases.lease_seconds
            if request is not None and self.stop_reason is None:
                self.stop_reason = StopReason.CANCEL if request == StopRequest.CANCEL else StopReason.PREEMPT
            self._write_control()

    def _write_control(self) -> None:
        valid_until = 0.0 if self.lost.is_set() else self.lease_valid_until
        stop = StopReason.LEASE_LOST if self.lost.is_set() else self.stop_reason
        with contextlib.suppress(OSError):
            self.control.write(stop=stop, lease_valid_until=valid_until)

    def _lose(self, why: str) -> None:
        log.warning("lease lost; stopping the job", extra={"job_id": self.lease.job_id, "why": why})
        self.lost.set()
        self._write_control()

    # ---- running -----------------------------------------------------------------------------------------

    def run(self, work_dir: Path) -> None:
        supervisor = self.supervisor
        processes = int(self.lease.config.get("processes") or 0) or supervisor.options.processes_per_job
        if processes > supervisor.slot.devices:
            self.finish(
                JobState.FAILED,
                f"the job asks for {processes} processes (spec.processes), but this worker's slots span "
                f"{supervisor.slot.devices} device(s); ask for fewer, or run workers with "
                f"--trainer-processes-per-job {processes} on nodes with that many GPUs",
            )
            return
        if processes > 1:
            self._event(
                JobEventType.STATE_CHANGED,
                {"state": "RUNNING", "message": f"data-parallel on {processes} processes ({supervisor.slot.name})"},
            )
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if processes > 1:
                job_file = work_dir / "job.json"
                job_file.write_text(
                    json.dumps({"job": self.lease.job_message(), "control_file": str(self.control.path)}),
                    encoding="utf-8",
                )
                process = supervisor.start_one_shot_process(job_file, processes)
            else:
                supervisor.ensure_warm_process()  # at once while alive; a new one after a crash or a one-shot job
                process = supervisor.warm_process
                process.send(encode_run_command(self.lease.job_message(), self.control.path))
            outcome, crash = self._relay(process)
            if outcome is not None:
                self._conclude(outcome)
                return
            stopped = self._stopped_outcome()
            if stopped is not None:
                # The process was asked to stop and died (or was killed) before it reported: honour the request.
                self._conclude({"type": stopped})
                return
            if attempt < MAX_ATTEMPTS:
                log.warning("training process died; resuming the job in a new one", extra={"job_id": self.lease.job_id})
                self._event(JobEventType.STATE_CHANGED, {"state": "RUNNING", "message": f"resuming after {crash}"})
                continue
            self.finish(JobState.FAILED, crash)

    def _stopped_outcome(self) -> WorkerEventType | None:
        if self.lost.is_set():
            return WorkerEventType.LEASE_LOST
        if self.stop_reason == StopReason.CANCEL:
            return WorkerEventType.CANCELLED
        if self.stop_reason == StopReason.PREEMPT or self.supervisor.stopping.is_set():
            return WorkerEventType.PREEMPTED
        return None

    def _relay(self, process: TrainingProcess) -> tuple[dict[str, Any] | None, str]:
        """Relays events until the job's outcome; returns (outcome event, "") or (None, why the process died)."""
        stopping = self.supervisor.stopping
        kill_at: float | None = None
        while True:
            if (stopping.is_set() or self.lost.is_set() or self.stop_reason) and kill_at is None:
                if stopping.is_set() and self.stop_reason is None:
                    self.stop_reason = StopReason.PREEMPT
                self._write_control()
                kill_at = time.monotonic() + STOP_GRACE_SECONDS
            if kill_at is not None and time.monotonic() > kill_at:
                log.warning("training process did not stop in time; killing it", extra={"job_id": self.lease.job_id})
                process.kill()
            try:
                event = process.next_event(timeout=0.25)
            except ProcessExited:
                return None, process.exit_detail()
            if event is None:
                continue
            kind = event["type"]
            if kind in OUTCOMES:
                return event, ""
            self._handle(event)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.pop("type")
        if kind == WorkerEventType.PROGRESS:
            step = int(event.get("step") or 0)
            if self._write(lambda: self.leases.record_progress(self.lease, event), important=False):
                steps = max(0, step - self.previous_step)
                metrics.STEPS.labels(self.supervisor.slot.name).inc(steps)
                rate = float(event.get("steps_per_second") or 0.0)
                if rate > 0:
                    for _ in range(min(steps, 1000)):
                        metrics.STEP_SECONDS.labels(self.supervisor.slot.name).observe(1.0 / rate)
                metrics.LOSS.labels(self.supervisor.slot.name).set(float(event.get("loss") or 0.0))
                metrics.IMAGES_PER_SECOND.labels(self.supervisor.slot.name).set(
                    float(event.get("images_per_second") or 0.0)
                )
            self.previous_step = step
        elif kind == WorkerEventType.CHECKPOINT_SAVED:
            step = int(event["step"])
            self._event(JobEventType.CHECKPOINT_SAVED, event, last_checkpoint_step=step)
            metrics.CHECKPOINT_SECONDS.observe(float(event.get("write_seconds", 0.0)))
        elif kind == WorkerEventType.VALIDATION_IMAGES:
            self._event(JobEventType.VALIDATION_IMAGES, event)
        elif kind == WorkerEventType.RESUMING:
            # The newest checkpoint in storage may be newer than the record says (the previous worker died right
            # after writing it).
            step = int(event["step"])
            self.previous_step = step
            self._write(
                lambda: self.leases.update(self.lease, last_checkpoint_step=step, progress={"step": step}),
                important=True,
            )
            log.info("resuming from checkpoint", extra={"job_id": self.lease.job_id, "step": step})

    def _conclude(self, outcome: dict[str, Any]) -> None:
        kind = outcome["type"]
        if kind == WorkerEventType.SUCCEEDED:
            self.finish(
                JobState.SUCCEEDED, "", subject_model={**outcome["manifest"], "size_bytes": int(outcome["size_bytes"])}
            )
        elif kind == WorkerEventType.FAILED:
            self.finish(JobState.FAILED, str(outcome.get("error") or "the training process failed without a reason"))
        elif kind == WorkerEventType.CANCELLED:
            self.finish(JobState.CANCELLED, "cancelled by a caller")
        elif kind == WorkerEventType.PREEMPTED:
            message = "preempted: its worker is shutting down; it resumes from its checkpoint on the next worker"
            self._write(lambda: self.leases.requeue(self.lease, message), important=True)
            self.supervisor.work_available.set()
        else:
            with contextlib.suppress(Unavailable):
                self.leases.mark_lost(self.lease)
            log.warning("job given up: lease lost", extra={"job_id": self.lease.job_id})

    def finish(self, state: JobState, message: str, *, subject_model: dict[str, Any] | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self._write(
            lambda: self.leases.finish(self.lease, state, message, subject_model=subject_model), important=True
        ):
            metrics.JOBS_FINISHED.labels(state.value).inc()
            log.info("job ended", extra={"job_id": self.lease.job_id, "state": state.value})

    def _event(self, event_type: JobEventType, payload: Mapping[str, Any], **updates: Any) -> None:
        self._write(lambda: self.leases.append(self.lease, event_type, payload, **updates), important=True)

    def _write(self, write: Callable[[], object], *, important: bool) -> bool:
        """Runs a fenced write. Progress is dropped while the database is down; other writes retry while the
        lease can still be ours. A lost lease stops the job. Returns whether the write went through."""
        while True:
            if self.lost.is_set():
                return False
            try:
                write()
            except LeaseLost:
                self._lose("a write found the lease taken over")
                return False
            except Unavailable:
                if not important or time.time() >= self.lease_valid_until:
                    return False
                time.sleep(0.5)
                continue
            self.supervisor.on_event_written(self.lease.job_id)
            return True
