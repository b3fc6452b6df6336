"""`likeness train PHOTOS_DIR --class-noun NOUN`: train a subject and follow it with a live progress bar.

Ctrl-C detaches: the job keeps training on the server; `likeness train --watch JOB` reattaches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

from likeness.cli.common import add_address_argument, connect, photo_files
from likeness.errors import InvalidArgument
from likeness_client.v1 import trainer_service_pb2 as pb
from likeness_client.v1 import types_pb2

METHODS = {"lora": types_pb2.TRAINING_METHOD_LORA, "full": types_pb2.TRAINING_METHOD_FULL}
PRECISIONS = {
    "auto": pb.MIXED_PRECISION_UNSPECIFIED,
    "no": pb.MIXED_PRECISION_NO,
    "fp16": pb.MIXED_PRECISION_FP16,
    "bf16": pb.MIXED_PRECISION_BF16,
}
OPTIMIZERS = {"auto": pb.OPTIMIZER_UNSPECIFIED, "adamw": pb.OPTIMIZER_ADAMW, "adamw-8bit": pb.OPTIMIZER_ADAMW_8BIT,
              "adafactor": pb.OPTIMIZER_ADAFACTOR}  # fmt: skip
STATE_NAMES = {value: name.removeprefix("JOB_STATE_") for name, value in pb.JobState.items()}
BAR_WIDTH = 24


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a subject model from a folder of photos and watch it",
        description="Upload photos (or use a prepared dataset), queue a DreamBooth job and show its progress. "
        "Ctrl-C detaches; the job keeps running. Reattach with `likeness train --watch JOB`.",
    )
    parser.add_argument("photos", nargs="?", help="folder of photos of the subject")
    parser.add_argument("--watch", metavar="JOB", help="reattach to a running job instead of starting one")
    parser.add_argument("--dataset", default="", help="train on a dataset prepared with `likeness prepare`")
    parser.add_argument("--class-noun", default="", help="class of the subject: person, dog, backpack, ...")
    parser.add_argument("--identifier", default="", help="rare token naming the subject (default: chosen for you)")
    parser.add_argument("--base-model", default="", help="base model id (default: the server's)")
    parser.add_argument("--method", choices=METHODS, default="lora")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 400 LoRA, 800 full)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default 16)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--resolution", type=int, default=0, help="training resolution (default: the dataset's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--train-text-encoder", action="store_true")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="on even where the memory plan needs it not"
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="auto", help="default: the memory plan's choice")
    parser.add_argument(
        "--no-memory-plan", action="store_true", help="train exactly as asked, without fitting the job to the device"
    )
    parser.add_argument("--memory-budget-mib", type=int, default=None, help="plan for this much device memory")
    parser.add_argument("--prior", action="store_true", help="prior preservation with generated class images")
    parser.add_argument("--num-class-images", type=int, default=None)
    parser.add_argument("--validation-prompt", action="append", default=[], help="rendered during training")
    parser.add_argument("--validate-every", type=int, default=0, help="validation every N steps (0: at the end)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (default 100)")
    parser.add_argument("--export-kohya", action="store_true", help="also write the LoRA in kohya/A1111 format")
    parser.add_argument("--name", default="", help="display name of the job")
    parser.add_argument("--priority", type=int, default=0, help="-100 to 100: workers take higher priorities first")
    parser.add_argument(
        "--photo-uri",
        action="append",
        default=[],
        help="a photo the server fetches instead of one from the folder: https:// URL, storage key or s3:// object "
        "of the deployment (repeatable)",
    )
    parser.add_argument("--webhook-url", default="", help="POST the job's state changes to this https:// URL")
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("LIKENESS_WEBHOOK_SECRET", ""),
        help="secret (16+ characters) that signs every webhook POST (env LIKENESS_WEBHOOK_SECRET)",
    )
    parser.add_argument("--webhook-progress", action="store_true", help="also POST progress to the webhook")
    parser.add_argument(
        "--webhook-progress-interval", type=int, default=0, help="least seconds between progress POSTs (default 30)"
    )
    add_address_argument(parser)
    parser.set_defaults(func=run)


def build_spec(args: argparse.Namespace, dataset_id: str) -> pb.TrainingJobSpec:
    hyperparameters = pb.Hyperparameters(
        resolution=args.resolution,
        mixed_precision=PRECISIONS[args.mixed_precision],
        train_text_encoder=args.train_text_encoder,
        gradient_checkpointing=args.gradient_checkpointing,
        optimizer=OPTIMIZERS[args.optimizer],
        memory_plan=pb.MEMORY_PLAN_OFF if args.no_memory_plan else pb.MEMORY_PLAN_AUTO,
    )
    optional = {
        "max_train_steps": args.steps,
        "learning_rate": args.learning_rate,
        "train_batch_size": args.batch_size,
        "seed": args.seed,
        "memory_budget_mib": args.memory_budget_mib,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(hyperparameters, name, value)
    spec = pb.TrainingJobSpec(
        base_model=args.base_model,
        identifier=args.identifier,
        class_noun=args.class_noun,
        method=METHODS[args.method],
        dataset_id=dataset_id,
        hyperparameters=hyperparameters,
        prior_preservation=pb.PriorPreservation(enabled=args.prior),
        validation=pb.ValidationConfig(prompts=args.validation_prompt, every_n_steps=args.validate_every),
        export_kohya=args.export_kohya,
        display_name=args.name,
    )
    if args.rank is not None:
        spec.lora.rank = args.rank
    if args.num_class_images is not None:
        spec.prior_preservation.num_class_images = args.num_class_images
    if args.checkpoint_every is not None:
        spec.checkpointing.every_n_steps = args.checkpoint_every
    return spec


def build_webhook(args: argparse.Namespace) -> pb.Webhook | None:
    """The job's webhook from --webhook-url and --webhook-secret; None without a URL."""
    if not args.webhook_url:
        return None
    if not args.webhook_secret:
        raise InvalidArgument(
            "a webhook needs a signing secret: set --webhook-secret or LIKENESS_WEBHOOK_SECRET", field="webhook_secret"
        )
    return pb.Webhook(
        url=args.webhook_url,
        secret=args.webhook_secret,
        send_progress=args.webhook_progress,
        progress_interval_seconds=args.webhook_progress_interval,
    )


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def progress_line(progress: pb.TrainingProgress) -> str:
    """`[#####-------] 120/400  loss 0.1234  3.2 it/s  ETA 1m27s`."""
    total = max(progress.total_steps, 1)
    filled = int(BAR_WIDTH * min(progress.step, total) / total)
    parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {progress.step}/{progress.total_steps}"]
    parts.append(f"loss {progress.loss:.4f}")
    if progress.steps_per_second:
        parts.append(f"{progress.steps_per_second:.2f} it/s")
    if progress.step < progress.total_steps:
        parts.append(f"ETA {format_duration(progress.eta_seconds)}")
    return "  ".join(parts)


class ProgressPrinter:
    """One line updated in place on a terminal; one line per update (at most every few seconds) otherwise."""

    def __init__(self, stream: TextIO, min_interval_seconds: float = 5.0) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.min_interval = 0.0 if self.interactive else min_interval_seconds
        self._last = 0.0
        self._width = 0

    def update(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self.interactive:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.interactive and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()


def follow(client, job_id: str, out: TextIO | None = None) -> int:
    """Prints a job's progress until it ends; 0 when it succeeded, 1 otherwise."""
    printer = ProgressPrinter(out or sys.stdout)
    final_state = pb.JOB_STATE_UNSPECIFIED
    for event in client.watch_training_job(job_id):
        kind = event.WhichOneof("event")
        if kind == "progress":
            printer.update(progress_line(event.progress), force=event.progress.step == event.progress.total_steps)
        elif kind == "state_changed":
            final_state = event.state_changed.state
            note = f": {event.state_changed.message}" if event.state_changed.message else ""
            printer.message(f"job {job_id} {STATE_NAMES.get(final_state, '?').lower()}{note}")
        elif kind == "checkpoint_saved":
            printer.message(f"checkpoint saved at step {event.checkpoint_saved.step}")
        elif kind == "validation_images":
            printer.message(f"validation images at step {event.validation_images.step}")
        elif kind == "succeeded":
            model = event.succeeded.subject_model
            printer.message(
                f"subject model {model.model_id} ready: prompt with '{model.identifier} {model.class_noun}' "
                f"on {model.base_model}"
            )
    if final_state == pb.JOB_STATE_SUCCEEDED:
        return 0
    job = client.get_training_job(job_id)
    if job.state == pb.JOB_STATE_FAILED:
        print(f"likeness: job {job_id} failed: {job.error}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        job_id = args.watch
        if not job_id:
            if not args.class_noun:
                raise InvalidArgument(
                    "give the subject's class with --class-noun (person, dog, ...)", field="class_noun"
                )
            dataset_id = args.dataset
            webhook = build_webhook(args)
            if not dataset_id:
                if not args.photos and not args.photo_uri:
                    raise InvalidArgument(
                        "give a folder of photos, --photo-uri URL, --dataset ID, or --watch JOB", field="photos"
                    )
                options = pb.DatasetOptions(
                    base_model=args.base_model,
                    display_name=Path(args.photos).name if args.photos else "",
                    photo_uris=args.photo_uri,
                )
                files = photo_files(args.photos) if args.photos else []
                dataset = client.prepare_dataset(files, options).dataset
                rejected = sum(1 for report in dataset.reports if not report.kept)
                print(f"dataset {dataset.dataset_id}: {dataset.image_count} photos ({rejected} rejected)")
                dataset_id = dataset.dataset_id
            job = client.create_training_job(
                build_spec(args, dataset_id), idempotency_key=uuid.uuid4().hex, priority=args.priority, webhook=webhook
            ).job
            job_id = job.job_id
            print(f"job {job_id} queued: '{job.spec.identifier} {job.spec.class_noun}' on {job.spec.base_model}")
        try:
            return follow(client, job_id)
        except KeyboardInterrupt:
            print(f"\ndetached; job {job_id} keeps running. Reattach with: likeness train --watch {job_id}")
            return 0
