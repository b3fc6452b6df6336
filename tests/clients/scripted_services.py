"""Scripted trainer and inference servicers that drive every path of the client SDKs' stream helpers.

The clients are what these tests exercise, so the streaming services answer from a script instead of training
or generating: images of known bytes split into interleaved chunks, a training watch whose first call per job
drops with UNAVAILABLE part-way, a create call that is UNAVAILABLE once. They run on the real server bootstrap
(interceptors, health, error mapping) next to the real gallery service.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import grpc

from likeness import errors
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import inference_service_pb2_grpc as inference_grpc
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import trainer_service_pb2_grpc as trainer_grpc
from likeness_client.v1 import types_pb2

IMAGE_CHUNK_BYTES = 1000
#: Above 2**53, so a client that squeezes int64 seeds into doubles gets them wrong.
DEFAULT_SEED = 2**62 + 12345
WATCH_EVENTS = 6
#: The first watch of each job drops with UNAVAILABLE after this sequence.
DROP_AFTER_SEQUENCE = 3


def scripted_image(index: int, seed: int) -> bytes:
    """Bytes of image `index`: 2.5 chunks and a bit, different per image and seed."""
    size = int(IMAGE_CHUNK_BYTES * 2.5) + 37 * index
    block = hashlib.sha256(f"{index}:{seed}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def image_sha256(index: int, seed: int) -> str:
    return hashlib.sha256(scripted_image(index, seed)).hexdigest()


def watch_event(sequence: int) -> trainer_pb.WatchTrainingJobResponse:
    event = trainer_pb.WatchTrainingJobResponse(sequence=sequence)
    event.time.FromSeconds(1_750_000_000 + sequence)
    if sequence == 1:
        event.state_changed.state = trainer_pb.JOB_STATE_RUNNING
    elif sequence < WATCH_EVENTS:
        event.progress.step = sequence - 1
        event.progress.total_steps = WATCH_EVENTS - 2
    else:
        event.succeeded.subject_model.model_id = "subject-scripted"
    return event


class ScriptedInference(inference_grpc.InferenceServiceServicer):
    async def GenerateImages(
        self, request: inference_pb.GenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb.GenerateImagesResponse]:
        count = request.num_images or 1
        steps = request.parameters.num_inference_steps or 2
        seed = request.parameters.seed if request.parameters.HasField("seed") else DEFAULT_SEED
        image_format = request.output_format or types_pb2.IMAGE_FORMAT_PNG
        yield inference_pb.GenerateImagesResponse(
            accepted=inference_pb.Accepted(request_id="scripted", effective_prompt=request.prompt)
        )
        if len(request.prompt) > 20:
            yield inference_pb.GenerateImagesResponse(warning=inference_pb.Warning(message="prompt truncated"))
        for step in range(1, steps + 1):
            yield inference_pb.GenerateImagesResponse(progress=inference_pb.Progress(step=step, total_steps=steps))
        chunks = {i: self._chunks(i, seed + i, image_format) for i in range(count)}
        sent = 0
        # Round-robin over images, so chunks of different images interleave as they may from a real server.
        while any(chunks.values()):
            for index in range(count):
                if chunks[index]:
                    yield inference_pb.GenerateImagesResponse(image_chunk=chunks[index].pop(0))
                    sent += 1
                    if request.prompt == "fail midway" and sent == 2:
                        raise errors.ResourceExhausted("out of GPU memory; retry with fewer images")
        yield inference_pb.GenerateImagesResponse(
            summary=inference_pb.Summary(num_images=count, seeds=[seed + i for i in range(count)], total_ms=1.5)
        )

    @staticmethod
    def _chunks(index: int, seed: int, image_format: int) -> list[inference_pb.ImageChunk]:
        data = scripted_image(index, seed)
        starts = list(range(0, len(data), IMAGE_CHUNK_BYTES))
        return [
            inference_pb.ImageChunk(
                image_index=index,
                chunk_index=position,
                last=position == len(starts) - 1,
                data=data[start : start + IMAGE_CHUNK_BYTES],
                seed=seed,
                format=image_format,
                width=64,
                height=64,
            )
            for position, start in enumerate(starts)
        ]


class ScriptedTrainer(trainer_grpc.TrainerServiceServicer):
    def __init__(self) -> None:
        #: (job id, after_sequence) of every watch call, in order.
        self.watch_calls: list[tuple[str, int]] = []
        #: file name -> uploaded bytes, and the sizes of the chunks they came in, of the last upload.
        self.uploads: dict[str, bytes] = {}
        self.chunk_sizes: list[int] = []
        self.upload_options: trainer_pb.DatasetOptions | None = None
        self.create_calls: list[str] = []
        self._jobs: dict[str, trainer_pb.TrainingJob] = {}

    async def PrepareDataset(
        self, request_iterator: AsyncIterator[trainer_pb.PrepareDatasetRequest], context: grpc.aio.ServicerContext
    ) -> trainer_pb.PrepareDatasetResponse:
        self.uploads, self.chunk_sizes, self.upload_options = {}, [], None
        async for message in request_iterator:
            if message.HasField("options"):
                if self.upload_options is not None or self.uploads:
                    raise errors.InvalidArgument("options must come once, first", field="options")
                self.upload_options = message.options
                continue
            if self.upload_options is None:
                raise errors.InvalidArgument("the first message must carry the options", field="options")
            chunk = message.photo_chunk
            self.uploads[chunk.file_name] = self.uploads.get(chunk.file_name, b"") + chunk.data
            self.chunk_sizes.append(len(chunk.data))
        reports = [
            trainer_pb.PhotoReport(file_name=name, kept=bool(data), reason_code="" if data else "empty")
            for name, data in self.uploads.items()
        ]
        dataset = trainer_pb.Dataset(
            dataset_id="dataset-scripted",
            image_count=sum(report.kept for report in reports),
            display_name=self.upload_options.display_name if self.upload_options else "",
            reports=reports,
        )
        return trainer_pb.PrepareDatasetResponse(dataset=dataset)

    async def CreateTrainingJob(
        self, request: trainer_pb.CreateTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb.CreateTrainingJobResponse:
        key = request.idempotency_key
        self.create_calls.append(key)
        if key.startswith("flaky") and self.create_calls.count(key) == 1:
            raise errors.Unavailable("trainer is restarting; retry")
        if key in self._jobs:
            return trainer_pb.CreateTrainingJobResponse(job=self._jobs[key], existing=True)
        job = trainer_pb.TrainingJob(
            job_id=f"job-{len(self._jobs) + 1}",
            state=trainer_pb.JOB_STATE_QUEUED,
            spec=request.spec,
            idempotency_key=key,
            queue_position=1,
        )
        self._jobs[key] = job
        return trainer_pb.CreateTrainingJobResponse(job=job)

    async def WatchTrainingJob(
        self, request: trainer_pb.WatchTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb.WatchTrainingJobResponse]:
        if request.job_id == "missing":
            raise errors.NotFound("training job 'missing' does not exist")
        first_call = all(job_id != request.job_id for job_id, _ in self.watch_calls)
        self.watch_calls.append((request.job_id, request.after_sequence))
        for sequence in range(request.after_sequence + 1, WATCH_EVENTS + 1):
            yield watch_event(sequence)
            await asyncio.sleep(0)
            if first_call and sequence == DROP_AFTER_SEQUENCE:
                raise errors.Unavailable("trainer is restarting")


class ScriptedComponent:
    """Trainer and inference servicers as one bootstrap component."""

    name = "scripted"
    service_names = ("likeness.trainer.v1.TrainerService", "likeness.inference.v1.InferenceService")

    def __init__(self) -> None:
        self.trainer = ScriptedTrainer()
        self.inference = ScriptedInference()

    def register(self, server: grpc.aio.Server) -> None:
        trainer_grpc.add_TrainerServiceServicer_to_server(self.trainer, server)
        inference_grpc.add_InferenceServiceServicer_to_server(self.inference, server)

    async def start(self) -> None:
        return None

    async def stop(self, grace_seconds: float) -> None:
        return None
