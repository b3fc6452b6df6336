"""The evaluation backend that goes through the real services: the trainer and inference gRPC APIs.

`ServiceBackend` uploads a subject's photos with a training job, follows the job to its end, and generates
with the published subject model, exactly as a user of `likeness train` / `likeness generate` would.
`local_services` starts both services in this process on a free port (real grpc.aio server, full interceptor
chain), with the toy base model in the catalog, for `likeness eval` and its CI test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from likeness.errors import FailedPrecondition, Unavailable

# The scheduler vocabulary of likeness.api.generation (derived from the Scheduler enum), via the inference layer.
from likeness.inference.params import generation
from likeness.world.base_model import TOY_BUILTIN_NAME, TOY_MODEL_ID
from likeness.world.evaluation import EvalSettings, Variant
from likeness.world.subjects import Subject, subject_photo_files

if TYPE_CHECKING:
    from likeness.server.component import ServiceComponent

MAX_IMAGES_PER_REQUEST = 8
SERVER_START_TIMEOUT_S = 300.0
TOY_CATALOG_SPEC = f"{TOY_MODEL_ID}=builtin:{TOY_BUILTIN_NAME}"


def _spec_message(spec: dict[str, Any]):
    """The plain-dict job spec of `EvalSettings.job_spec` as a `TrainingJobSpec` message."""
    from likeness_client.v1 import trainer_service_pb2 as pb
    from likeness_client.v1 import types_pb2

    hyper = spec["hyperparameters"]
    prior = spec["prior_preservation"]
    return pb.TrainingJobSpec(
        base_model=spec["base_model"],
        identifier=spec["identifier"],
        class_noun=spec["class_noun"],
        # "lora" -> TRAINING_METHOD_LORA: the enum is the one list of methods.
        method=cast(
            "types_pb2.TrainingMethod", types_pb2.TrainingMethod.Value(f"TRAINING_METHOD_{spec['method'].upper()}")
        ),
        display_name=spec["display_name"],
        hyperparameters=pb.Hyperparameters(
            max_train_steps=hyper["max_train_steps"],
            learning_rate=hyper["learning_rate"],
            train_batch_size=hyper["train_batch_size"],
            seed=hyper["seed"],
            mixed_precision=pb.MIXED_PRECISION_NO,
        ),
        lora=pb.LoraConfig(rank=spec["lora"]["rank"]),
        prior_preservation=pb.PriorPreservation(
            enabled=prior["enabled"],
            num_class_images=prior["num_class_images"],
            prior_loss_weight=prior["prior_loss_weight"],
        ),
        checkpointing=pb.CheckpointConfig(every_n_steps=spec["checkpointing"]["every_n_steps"]),
    )


class ServiceBackend:
    """Trains and generates through a Likeness server at `client.address` (trainer and inference services)."""

    def __init__(self, client) -> None:
        self.client = client

    def train(self, subject: Subject, variant: Variant, settings: EvalSettings) -> str:
        from likeness_client.v1 import trainer_service_pb2 as pb

        options = pb.DatasetOptions(
            base_model=settings.base_model,
            subject_type=pb.SUBJECT_TYPE_OBJECT,
            # Photos of one object in similar rooms look alike to a perceptual hash: keep them all.
            dedupe_threshold=0,
            display_name=subject.name,
            resolution=settings.resolution,
        )
        response = self.client.create_training_job(
            _spec_message(settings.job_spec(subject, variant)),
            photos=subject_photo_files(subject),
            dataset_options=options,
        )
        job_id = response.job.job_id
        for _event in self.client.watch_training_job(job_id):
            continue  # the stream ends when the job does
        job = self.client.get_training_job(job_id)
        if job.state != pb.JOB_STATE_SUCCEEDED or not job.subject_model_id:
            state = pb.JobState.Name(job.state)
            raise FailedPrecondition(f"training {subject.name} as {variant.name} ended {state}: {job.error}")
        return job.subject_model_id

    def generate(
        self, model: str | None, prompt: str, seeds: Sequence[int], settings: EvalSettings
    ) -> list[Image.Image]:
        from likeness_client.v1 import types_pb2

        pictures: list[Image.Image] = []
        seeds = list(seeds)
        scheduler = generation.check_scheduler(settings.scheduler, field="scheduler")
        for start in range(0, len(seeds), MAX_IMAGES_PER_REQUEST):
            block = seeds[start : start + MAX_IMAGES_PER_REQUEST]
            if block != list(range(block[0], block[0] + len(block))):
                raise ValueError("the inference service seeds image i with seed + i: pass consecutive seeds")
            result = self.client.generate(
                prompt=prompt,
                subject_model_id=model or "",
                base_model=settings.base_model,
                num_images=len(block),
                output_format=types_pb2.IMAGE_FORMAT_PNG,
                parameters=types_pb2.GenerationParameters(
                    num_inference_steps=settings.inference_steps,
                    guidance_scale=settings.guidance_scale,
                    seed=block[0],
                    width=settings.resolution,
                    height=settings.resolution,
                    scheduler=cast(
                        "types_pb2.Scheduler",
                        generation.SCHEDULER_ENUMS.get(scheduler, types_pb2.SCHEDULER_UNSPECIFIED),
                    ),
                ),
            )
            ordered = sorted(result.images, key=lambda image: image.index)
            pictures.extend(Image.open(io.BytesIO(image.data)).convert("RGB") for image in ordered)
        return pictures


def eval_server_settings(work_dir: str | Path, **overrides: Any):
    """Server settings for an evaluation: private storage and cache under `work_dir`, the toy base model."""
    from likeness.server.settings import Settings

    work_dir = Path(work_dir)
    values: dict[str, Any] = {
        "storage_url": str(work_dir / "storage"),
        "cache_dir": str(work_dir / "cache"),
        "base_models": TOY_CATALOG_SPEC,
        "default_base_model": TOY_MODEL_ID,
        "device": "cpu",
        "log_level": "WARNING",
        "log_format": "text",
        "trainer_progress_interval_seconds": 5.0,
    }
    values.update(overrides)
    return dataclasses.replace(Settings(), **values)


@contextmanager
def local_services(settings) -> Iterator[str]:
    """Runs the trainer and inference services on a loopback port in a background thread; yields the address."""
    from likeness.inference.service import InferenceComponent
    from likeness.server.testing import serve_components
    from likeness.trainer.service import TrainerComponent

    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        try:
            components: list[ServiceComponent] = [TrainerComponent(settings), InferenceComponent(settings)]
            async with serve_components(components, settings) as running:
                state["address"] = running.address
                ready.set()
                await stop.wait()
        except BaseException as error:  # reported to the caller's thread below
            state["error"] = error
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="likeness-eval-server", daemon=True)
    thread.start()
    if not ready.wait(SERVER_START_TIMEOUT_S) or "error" in state:
        raise Unavailable(f"the evaluation services did not start: {state.get('error', 'timed out')}")
    try:
        yield state["address"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(timeout=60)
