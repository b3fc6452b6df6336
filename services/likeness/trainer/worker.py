"""The training process: `python -m likeness.trainer.worker --serve [...]` or `--job-file JOB.json`.

A worker supervisor (`likeness.trainer.supervisor`) runs one of these per device, so a crash, an out-of-memory
kill or a leak in one job never takes the service down, and a process that dies is replaced. With `--serve` the
process is *warm*: it imports torch and diffusers once, keeps the base model it last trained loaded, and takes
job after job from stdin (`likeness.trainer.protocol`). With `--job-file` it runs one job and exits; that is how
a data-parallel job runs on several devices under accelerate:

    accelerate launch --num_processes 2 --cpu -m likeness.trainer.worker --job-file job.json --storage-url ...

The process exits by itself when its parent (`--parent-pid`) dies, so a killed supervisor leaves no orphan training.
Exit status: 0 after `exit`, end of input, or a one-shot job that succeeded, was cancelled or preempted; 1 when a
one-shot job failed (its outcome event says why).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from likeness.trainer.protocol import (
    LEASE_WRITE_MARGIN_SECONDS,
    JobControl,
    StopReason,
    WorkerEventType,
    encode_event,
    parse_command,
)

PARENT_POLL_SECONDS = 0.5

_emit_lock = threading.Lock()
log = logging.getLogger("likeness.trainer.worker")


def emit(event_type: WorkerEventType, **payload: Any) -> None:
    """Writes one event line to stdout (flushed: the supervisor reads it as it comes)."""
    line = encode_event(event_type, **payload)
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def _exit_with_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(3)
        except PermissionError:
            continue  # alive, owned by someone else


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="likeness.trainer.worker", description="Run training jobs.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--serve", action="store_true", help="take jobs from stdin until `exit` (a warm worker)")
    mode.add_argument("--job-file", help="run the one job in this JSON file ({job, control_file}) and exit")
    parser.add_argument("--storage-url", required=True, help="shared storage with the job's dataset")
    parser.add_argument("--base-models", default=None, help="base model catalog spec (default: the built-ins)")
    parser.add_argument("--cache-dir", default=None, help="local cache (base models)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: what accelerate picks)")
    parser.add_argument("--work-dir", default=None, help="local scratch folder, the same for every process")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    parser.add_argument("--progress-interval", type=float, default=1.0, help="least seconds between progress events")
    parser.add_argument("--metric-hook", action="append", default=[], help="package.module:function (repeatable)")
    parser.add_argument("--preload-base-model", default="", help="with --serve: base model to load before `ready`")
    return parser


class WarmPipelines:
    """Keeps the base model of the last job loaded and hands each run its own copy (runs modify the pipeline)."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self._base_id: str | None = None
        self._template: Any = None

    def warm(self, base_model_id: str) -> None:
        """Loads `base_model_id` (dropping the one kept before) unless it is the one kept."""
        import torch

        if self._base_id != base_model_id:
            self._template = None
            gc.collect()
            self._template = self.catalog.load(base_model_id, device="cpu", dtype=torch.float32)
            self._base_id = base_model_id

    def load(self, base_model_id: str) -> Any:
        self.warm(base_model_id)
        if not self._room_for_a_copy():
            # A model too big to hold twice on this host (SD 1.5 in float32 is 4.3 GB, SDXL 14 GB): the run gets
            # the kept one itself, and the next job loads the model again.
            log.info("%s is too large to keep a warm copy on this host: the next job reloads it", base_model_id)
            template, self._template, self._base_id = self._template, None, None
            return template
        # Tokenizers are read-only in training and slow to copy: the copy shares them (deepcopy's memo).
        shared = [getattr(self._template, name, None) for name in ("tokenizer", "tokenizer_2")]
        return copy.deepcopy(self._template, memo={id(part): part for part in shared if part is not None})

    def _room_for_a_copy(self) -> bool:
        from likeness.trainer.training.memory import keeps_warm_copy

        size = sum(
            parameter.numel() * parameter.element_size()
            for name in ("unet", "vae", "text_encoder", "text_encoder_2")
            if (module := getattr(self._template, name, None)) is not None
            for parameter in module.parameters()
        )
        return keeps_warm_copy(size)


class Runner:
    """Runs jobs in this process with the storage, catalog and (warm) base model it keeps between them."""

    def __init__(self, args: argparse.Namespace, main_process: bool) -> None:
        from likeness.models.catalog import DEFAULT_CATALOG_SPEC, BaseModelCatalog
        from likeness.storage.factory import open_storage

        self.args = args
        self.main_process = main_process
        self.storage = open_storage(args.storage_url)
        self.catalog = BaseModelCatalog(args.base_models or DEFAULT_CATALOG_SPEC, args.cache_dir)
        self.pipelines = WarmPipelines(self.catalog)

    def run(self, job: dict[str, Any], control_file: Path, *, warm: bool) -> WorkerEventType:
        """Runs one job and emits its outcome event; returns the outcome."""
        import torch

        from likeness.errors import Cancelled, LikenessError
        from likeness.trainer.execution import LeaseNotHeld, StopSignal, execute_job

        control = JobControl(control_file)

        def read_stop() -> StopReason | None:
            state = control.read()
            return state.stop or (None if state.lease_held() else StopReason.LEASE_LOST)

        def lease_guard() -> None:
            if not control.read().lease_held(LEASE_WRITE_MARGIN_SECONDS):
                raise LeaseNotHeld("the worker cannot confirm its lease on the job; it stops without writing")

        stop = StopSignal(read_stop)
        if warm:
            _reset_accelerate()
        try:
            outcome = execute_job(
                self.storage,
                self.catalog,
                job,
                emit=emit,
                stop=stop,
                lease_guard=lease_guard,
                load_pipeline=self.pipelines.load if warm else None,
                device=torch.device(self.args.device) if self.args.device else None,
                work_dir=Path(self.args.work_dir) / job["job_id"] if self.args.work_dir else None,
                metric_hooks=self.args.metric_hook,
                progress_interval_seconds=self.args.progress_interval,
            )
        except LeaseNotHeld as error:
            outcome, payload = WorkerEventType.LEASE_LOST, {"error": error.message}
        except LikenessError as error:
            if isinstance(error, Cancelled) and stop.reason:
                outcome = _stopped_outcome(stop.reason)
                payload = {}
            else:
                outcome, payload = WorkerEventType.FAILED, {"error": error.message, "code": type(error).__name__}
        except Exception as error:
            log.error("training failed\n%s", traceback.format_exc())
            outcome, payload = WorkerEventType.FAILED, {"error": f"{type(error).__name__}: {error}", "code": "Internal"}
        else:
            payload = {}
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self.main_process and outcome != WorkerEventType.SUCCEEDED:
            emit(outcome, **payload)  # a success was reported with its model by execute_job
        return outcome


def _stopped_outcome(reason: StopReason) -> WorkerEventType:
    return {
        StopReason.PREEMPT: WorkerEventType.PREEMPTED,
        StopReason.LEASE_LOST: WorkerEventType.LEASE_LOST,
    }.get(reason, WorkerEventType.CANCELLED)


def _reset_accelerate() -> None:
    # accelerate keeps process-wide state; each job of a warm worker may ask for other precision or accumulation.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True, name="parent-watch").start()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported after the watchdog starts: importing torch and diffusers takes seconds.
    from accelerate import PartialState

    state = PartialState(cpu=args.device == "cpu")
    try:
        runner = Runner(args, state.is_main_process)
        if args.job_file:
            spec = json.loads(Path(args.job_file).read_text(encoding="utf-8"))
            outcome = runner.run(spec["job"], Path(spec["control_file"]), warm=False)
            return 1 if outcome == WorkerEventType.FAILED else 0
        return _serve(runner)
    finally:
        if state.use_distributed:
            # Without this, torchrun-launched processes abort at exit ("terminate called without an active
            # exception") and the launcher reports a failure.
            state.destroy_process_group()


def _serve(runner: Runner) -> int:
    # The heavy imports happen before `ready`, so the first job pays none of them.
    import likeness.trainer.execution  # noqa: F401

    if runner.args.preload_base_model:
        try:
            runner.pipelines.warm(runner.args.preload_base_model)
        except Exception:
            log.warning("could not preload base model %s; jobs load it", runner.args.preload_base_model, exc_info=True)
    emit(WorkerEventType.READY, pid=os.getpid())
    for line in sys.stdin:
        if not line.strip():
            continue
        command = parse_command(line)
        if command["command"] == "exit":
            break
        runner.run(command["job"], Path(command["control_file"]), warm=True)
        emit(WorkerEventType.READY, pid=os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
