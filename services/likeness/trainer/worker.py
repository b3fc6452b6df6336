"""The job worker process: `python -m likeness.trainer.worker --storage-url URL --job-id JOB [...]`.

The trainer service runs every job in one of these, one per device, so a crash, an out-of-memory kill or a leak
in one job never takes the service down, and the device's memory is returned when the job ends. The same entry
point runs a data-parallel job on several devices under accelerate:

    accelerate launch --num_processes 2 --cpu -m likeness.trainer.worker --storage-url var/storage --job-id JOB

Protocol with the parent: events are single stdout lines `@@likeness-event {json}` (main process only, plus one
`rank_done` line per process); everything else on stdout/stderr is log output. The run stops when the stop file
(`--stop-file`) appears: its content "cancel" or "preempt" says why (a preempted run checkpoints first). The
process exits by itself when the parent (`--parent-pid`) dies, so a killed trainer leaves no orphan training.
Exit status: 0 when the run succeeded, was cancelled or preempted (the last event says which), 1 on failure
(the last event is `failed` with the error).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

EVENT_PREFIX = "@@likeness-event "
STOP_REASONS = ("cancel", "preempt")
PARENT_POLL_SECONDS = 0.5

_emit_lock = threading.Lock()


def emit(event: dict[str, Any]) -> None:
    """Writes one event line to stdout (flushed: the parent reads it as it comes)."""
    line = EVENT_PREFIX + json.dumps(event, allow_nan=True) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def parse_event_line(line: str) -> dict[str, Any] | None:
    """The event of a worker stdout line, or None for a log line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def read_stop_file(path: Path | None) -> str | None:
    """The stop reason written to `path`, or None while it does not exist (one stat per call)."""
    if path is None or not path.exists():
        return None
    try:
        reason = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return reason if reason in STOP_REASONS else "cancel"


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
    parser = argparse.ArgumentParser(prog="likeness.trainer.worker", description="Run one training job.")
    parser.add_argument("--storage-url", required=True, help="shared storage holding the job record")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--base-models", default=None, help="base model catalog spec (default: the built-ins)")
    parser.add_argument("--cache-dir", default=None, help="local cache (base models)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: what accelerate picks)")
    parser.add_argument("--work-dir", default=None, help="local scratch folder, the same for every process")
    parser.add_argument("--stop-file", default=None, help="file whose appearance stops the run")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    parser.add_argument("--progress-interval", type=float, default=1.0, help="least seconds between progress events")
    parser.add_argument("--metric-hook", action="append", default=[], help="package.module:function (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True, name="parent-watch").start()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported after the watchdog starts: importing torch and diffusers takes seconds.
    from accelerate import PartialState

    state = PartialState(cpu=args.device == "cpu")
    main_process = state.is_main_process
    try:
        return _run(args, main_process)
    finally:
        if state.use_distributed:
            # Without this, torchrun-launched processes abort at exit ("terminate called without an active
            # exception") and the launcher reports a failure.
            state.destroy_process_group()


def _run(args: argparse.Namespace, main_process: bool) -> int:
    import torch

    from likeness.errors import Cancelled, LikenessError
    from likeness.models.catalog import DEFAULT_CATALOG_SPEC, BaseModelCatalog
    from likeness.storage.base import open_storage
    from likeness.trainer.execution import StopSignal, execute_job

    stop_file = Path(args.stop_file) if args.stop_file else None
    stop = StopSignal(lambda: read_stop_file(stop_file))
    try:
        storage = open_storage(args.storage_url)
        catalog = BaseModelCatalog(args.base_models or DEFAULT_CATALOG_SPEC, args.cache_dir)
        outcome = execute_job(
            storage,
            catalog,
            tenant=args.tenant,
            job_id=args.job_id,
            emit=emit,
            stop=stop,
            device=torch.device(args.device) if args.device else None,
            work_dir=Path(args.work_dir) if args.work_dir else None,
            metric_hooks=args.metric_hook,
            progress_interval_seconds=args.progress_interval,
        )
    except LikenessError as error:
        if isinstance(error, Cancelled) and stop.reason:
            if main_process:
                emit({"type": "preempted" if stop.reason == "preempt" else "cancelled"})
            return 0
        if main_process:
            emit({"type": "failed", "error": error.message, "code": type(error).__name__})
        return 1
    except Exception as error:
        logging.getLogger("likeness.trainer.worker").error("training failed\n%s", traceback.format_exc())
        if main_process:
            emit({"type": "failed", "error": f"{type(error).__name__}: {error}", "code": "Internal"})
        return 1
    if main_process and outcome in ("cancelled", "preempted"):
        emit({"type": outcome})
    return 0


if __name__ == "__main__":
    sys.exit(main())
