"""The asyncio client: `AsyncLikenessClient`, the same methods as `LikenessClient` as coroutines and async
iterators, over grpc.aio. One client multiplexes any number of concurrent calls on its channel.

    async with AsyncLikenessClient("127.0.0.1:50051") as client:
        results = await asyncio.gather(*(client.generate(prompt=p, subject_model_id=m) for p in prompts))
        async for event in client.watch_training_job(job_id):
            ...
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from likeness_client import errors
from likeness_client._wire import HEALTH_CHECK_METHOD, HEALTH_SERVING_STATUS, HealthCheckRequest, HealthCheckResponse
from likeness_client.channel import ClientBase, aio_channel
from likeness_client.messages import (
    UPLOAD_CHUNK_BYTES,
    ArtifactWriter,
    DownloadedFile,
    GenerationEvent,
    GenerationResult,
    ImageAssembler,
    PhotoSource,
    create_job_request,
    erase_subject_request,
    generate_request,
    list_jobs_request,
    lora_import_header,
    lora_import_requests,
    record_request,
    search_request,
    subject_kind,
    upload_names,
    upload_requests,
)
from likeness_client.status import translate_error
from likeness_client.sync import ERASE_TIMEOUT_SECONDS
from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb


class AsyncLikenessClient(ClientBase):
    """Asyncio client for the trainer, inference and gallery services; the arguments are `LikenessClient`'s.

    Create it inside a running event loop (grpc.aio channels belong to the loop that made them).
    """

    make_channel = staticmethod(aio_channel)

    # --- lifecycle ---

    async def close(self) -> None:
        """Closes the channels; calls in flight are cancelled."""
        for channel in self._channels.values():
            await channel.close()

    async def __aenter__(self) -> AsyncLikenessClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return await method(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as error:
            raise translate_error(error) from error

    async def is_serving(self, service: str = "", timeout: float = 5.0) -> bool:
        """True when the health check reports SERVING for `service` ("" for the whole server)."""
        check = self._channel_of(service).unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        try:
            response = await check(HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            raise translate_error(error) from error
        return bool(response.status == HEALTH_SERVING_STATUS["SERVING"])

    async def wait_until_serving(self, service: str = "", timeout: float = 60.0, poll_seconds: float = 0.2) -> None:
        """Waits until the health check reports SERVING; raises `Unavailable` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if await self.is_serving(service, timeout=max(0.1, min(5.0, remaining))):
                return
            if remaining <= 0:
                raise errors.Unavailable(f"{self.address} did not become SERVING within {timeout:g} s")
            await asyncio.sleep(min(poll_seconds, max(remaining, 0.0)))

    # --- trainer ---

    async def prepare_dataset(
        self,
        photos: Sequence[PhotoSource],
        options: trainer_pb.DatasetOptions | None = None,
        *,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        timeout: float | None = None,
    ) -> trainer_pb.PrepareDatasetResponse:
        """Uploads photos in chunks and returns the prepared dataset with its per-photo report."""
        names = upload_names(photos, chunk_bytes, self.max_message_bytes)
        try:
            return await self.trainer.PrepareDataset(
                upload_requests(photos, names, options, chunk_bytes), timeout=timeout
            )
        except grpc.RpcError as error:
            raise translate_error(error) from error

    async def get_dataset(self, dataset_id: str) -> trainer_pb.Dataset:
        """Returns a prepared dataset with its per-photo report."""
        response = await self._unary(self.trainer.GetDataset, trainer_pb.GetDatasetRequest(dataset_id=dataset_id))
        return response.dataset

    async def create_training_job(
        self,
        spec: trainer_pb.TrainingJobSpec,
        *,
        photos: Sequence[PhotoSource] = (),
        dataset_options: trainer_pb.DatasetOptions | None = None,
        idempotency_key: str = "",
        priority: int = 0,
        webhook: trainer_pb.Webhook | None = None,
        timeout: float | None = None,
    ) -> trainer_pb.CreateTrainingJobResponse:
        """Queues a training job (see `LikenessClient.create_training_job`)."""
        request = create_job_request(
            spec,
            photos=photos,
            dataset_options=dataset_options,
            idempotency_key=idempotency_key,
            priority=priority,
            webhook=webhook,
            max_message_bytes=self.max_message_bytes,
        )
        return await self._unary(self.trainer.CreateTrainingJob, request, timeout)

    async def get_training_job(self, job_id: str) -> trainer_pb.TrainingJob:
        """Returns one training job, with its latest webhook deliveries."""
        response = await self._unary(self.trainer.GetTrainingJob, trainer_pb.GetTrainingJobRequest(job_id=job_id))
        return response.job

    async def list_training_jobs(
        self, states: Sequence[int] = (), page_size: int = 0, page_token: str = ""
    ) -> trainer_pb.ListTrainingJobsResponse:
        """Lists training jobs, newest first (one page; follow `next_page_token`)."""
        request = list_jobs_request(states, page_size, page_token)
        return await self._unary(self.trainer.ListTrainingJobs, request)

    async def cancel_training_job(self, job_id: str) -> trainer_pb.TrainingJob:
        """Cancels a queued or running job and returns it."""
        request = trainer_pb.CancelTrainingJobRequest(job_id=job_id)
        return (await self._unary(self.trainer.CancelTrainingJob, request)).job

    async def watch_training_job(
        self, job_id: str, after_sequence: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[trainer_pb.WatchTrainingJobResponse]:
        """Yields a job's events after `after_sequence` until the job ends, reconnecting after UNAVAILABLE from
        the last sequence yielded (see `LikenessClient.watch_training_job`)."""
        last = after_sequence
        failures = 0
        while True:
            call = self.trainer.WatchTrainingJob(
                trainer_pb.WatchTrainingJobRequest(job_id=job_id, after_sequence=last), timeout=timeout
            )
            try:
                async for event in call:
                    failures = 0
                    if event.sequence <= last:
                        continue
                    last = event.sequence
                    yield event
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= self.max_reconnects:
                    raise translate_error(error) from error
                await asyncio.sleep(min(5.0, self.reconnect_backoff * (2**failures)))
                failures += 1
            finally:
                call.cancel()

    async def delete_dataset(self, dataset_id: str) -> trainer_pb.DeleteDatasetResponse:
        """Deletes a dataset and its photos."""
        request = trainer_pb.DeleteDatasetRequest(dataset_id=dataset_id)
        return await self._unary(self.trainer.DeleteDataset, request)

    async def delete_training_job(self, job_id: str) -> trainer_pb.DeleteTrainingJobResponse:
        """Deletes an ended job with its events and files."""
        request = trainer_pb.DeleteTrainingJobRequest(job_id=job_id)
        return await self._unary(self.trainer.DeleteTrainingJob, request)

    async def erase_subject(
        self, *, dataset_id: str = "", job_id: str = "", model_id: str = "", timeout: float | None = None
    ) -> trainer_pb.ErasureReceipt:
        """Erases everything derived from one subject's photos; returns the receipt."""
        request = erase_subject_request(dataset_id, job_id, model_id)
        response = await self._unary(self.trainer.EraseSubject, request, timeout or ERASE_TIMEOUT_SECONDS)
        return response.receipt

    async def erase_tenant(self, tenant: str, *, timeout: float | None = None) -> trainer_pb.ErasureReceipt:
        """Erases everything of a tenant (admin keys only); returns the receipt."""
        request = trainer_pb.EraseTenantRequest(tenant=tenant)
        response = await self._unary(self.trainer.EraseTenant, request, timeout or ERASE_TIMEOUT_SECONDS)
        return response.receipt

    # --- inference ---

    async def generate_images(
        self,
        request: inference_pb.GenerateImagesRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> AsyncIterator[GenerationEvent]:
        """Streams a generation (see `LikenessClient.generate_images`); leaving the loop cancels it."""
        call = self.inference.GenerateImages(generate_request(request, fields), timeout=timeout)
        assembler = ImageAssembler()
        try:
            async for response in call:
                event = assembler.event(response)
                if event is not None:
                    yield event
            assembler.finish()
        except grpc.aio.AioRpcError as error:
            raise translate_error(error) from error
        finally:
            call.cancel()

    async def generate(
        self,
        request: inference_pb.GenerateImagesRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Runs a generation to the end and returns the images, warnings and summary together."""
        result = GenerationResult()
        async for event in self.generate_images(request, timeout=timeout, **fields):
            result.add(event)
        return result

    async def list_subject_models(
        self, base_model: str = "", loaded_only: bool = False, kind: str = ""
    ) -> list[inference_pb.SubjectModelStatus]:
        """Subject models in shared storage with their load state, newest first; only subjects or only styles
        when `kind` is "subject" or "style"."""
        request = inference_pb.ListSubjectModelsRequest(
            base_model=base_model,
            loaded_only=loaded_only,
            kind=subject_kind(kind),  # type: ignore[arg-type]  # enum values are ints
        )
        return list((await self._unary(self.inference.ListSubjectModels, request)).models)

    async def get_subject_model(self, model_id: str) -> inference_pb.SubjectModelStatus:
        """One subject model with its load state on this replica."""
        request = inference_pb.GetSubjectModelRequest(model_id=model_id)
        return (await self._unary(self.inference.GetSubjectModel, request)).model

    async def load_subject_model(self, model_id: str, timeout: float | None = None) -> inference_pb.SubjectModelStatus:
        """Pre-warms a subject model on the replica that answers."""
        request = inference_pb.LoadSubjectModelRequest(model_id=model_id)
        return (await self._unary(self.inference.LoadSubjectModel, request, timeout)).model

    async def unload_subject_model(self, model_id: str) -> inference_pb.SubjectModelStatus:
        """Evicts a subject model from the replica that answers."""
        request = inference_pb.UnloadSubjectModelRequest(model_id=model_id)
        return (await self._unary(self.inference.UnloadSubjectModel, request)).model

    async def delete_subject_model(self, model_id: str) -> inference_pb.DeleteSubjectModelResponse:
        """Deletes a subject model with its files, gallery entries and every replica's cached copy."""
        request = inference_pb.DeleteSubjectModelRequest(model_id=model_id)
        return await self._unary(self.inference.DeleteSubjectModel, request)

    async def download_subject_model(
        self,
        model_id: str,
        folder: str | os.PathLike[str],
        *,
        kinds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> list[DownloadedFile]:
        """Downloads a subject model's files into `folder`, each checked against its SHA-256."""
        request = inference_pb.DownloadSubjectModelRequest(model_id=model_id, kinds=kinds)  # type: ignore[arg-type]
        writer = ArtifactWriter(folder)
        call = self.inference.DownloadSubjectModel(request, timeout=timeout)
        try:
            async for response in call:
                # Files are small next to the network; writing them here keeps the writer one simple class.
                writer.add(response)
        except grpc.aio.AioRpcError as error:
            raise translate_error(error) from error
        finally:
            call.cancel()
        return writer.finish()

    async def import_lora(
        self,
        path: str | os.PathLike[str],
        *,
        base_model: str,
        kind: str = "subject",
        identifier: str = "",
        class_noun: str = "",
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        timeout: float | None = None,
    ) -> inference_pb.ImportLoraResponse:
        """Imports a LoRA file made with another tool (kohya / A1111 / civitai or diffusers, safetensors only) as a
        subject (`identifier` and `class_noun` required) or a `kind="style"` model for `base_model`, uploaded in
        chunks; returns the new model."""
        header = lora_import_header(
            path,
            base_model=base_model,
            kind=kind,
            identifier=identifier,
            class_noun=class_noun,
            chunk_bytes=chunk_bytes,
            max_message_bytes=self.max_message_bytes,
        )
        try:
            return await self.inference.ImportLora(lora_import_requests(path, header, chunk_bytes), timeout=timeout)
        except grpc.RpcError as error:
            raise translate_error(error) from error

    async def get_server_status(self) -> inference_pb.GetServerStatusResponse:
        """Loaded models, cache memory and queue of the inference service."""
        request = inference_pb.GetServerStatusRequest()
        return await self._unary(self.inference.GetServerStatus, request)

    # --- gallery ---

    async def search_prompts(self, query: str = "", **filters: Any) -> gallery_pb.SearchPromptsResponse:
        """Searches recorded and shared prompts (one page; see `LikenessClient.search_prompts`)."""
        return await self._unary(self.gallery.SearchPrompts, search_request(query, **filters))

    async def iter_prompts(
        self, query: str = "", *, page_size: int = 100, **filters: Any
    ) -> AsyncIterator[gallery_pb.SearchResult]:
        """Every result of a search, page after page."""
        token = ""
        while True:
            page = await self.search_prompts(query, page_size=page_size, page_token=token, **filters)
            for result in page.results:
                yield result
            token = page.next_page_token
            if not token:
                return

    async def get_prompt(self, prompt_id: str) -> gallery_pb.PromptRecord:
        """Returns one prompt record."""
        request = gallery_pb.GetPromptRequest(prompt_id=prompt_id)
        return (await self._unary(self.gallery.GetPrompt, request)).prompt

    async def get_prompt_image(self, prompt_id: str, *, timeout: float | None = None) -> tuple[bytes, str]:
        """The full image of a gallery entry and its media type, reassembled from chunks."""
        request = gallery_pb.GetPromptImageRequest(prompt_id=prompt_id)
        parts, media_type = [], ""
        try:
            async for chunk in self.gallery.GetPromptImage(request, timeout=timeout):
                media_type = media_type or chunk.media_type
                parts.append(chunk.data)
        except grpc.aio.AioRpcError as error:
            raise translate_error(error) from error
        return b"".join(parts), media_type

    async def record_prompt(self, prompt: str, **fields: Any) -> gallery_pb.RecordPromptResponse:
        """Records a prompt with its parameters (see `LikenessClient.record_prompt`)."""
        return await self._unary(self.gallery.RecordPrompt, record_request(prompt, **fields))

    async def delete_prompt(self, prompt_id: str) -> gallery_pb.DeletePromptResponse:
        """Deletes one of the caller's prompts with its image."""
        request = gallery_pb.DeletePromptRequest(prompt_id=prompt_id)
        return await self._unary(self.gallery.DeletePrompt, request)

    async def list_templates(self, category: str = "") -> list[gallery_pb.Template]:
        """Prompt templates with a "{subject}" placeholder, optionally of one category."""
        request = gallery_pb.ListTemplatesRequest(category=category)
        return list((await self._unary(self.gallery.ListTemplates, request)).templates)
