"""The synchronous client: `LikenessClient`.

    from likeness_client import LikenessClient

    with LikenessClient("127.0.0.1:50051") as client:
        dataset = client.prepare_dataset(["me1.jpg", "me2.jpg"]).dataset
        job = client.create_training_job(spec).job
        for event in client.watch_training_job(job.job_id):   # reconnects on UNAVAILABLE, loses nothing
            ...
        for event in client.generate_images(prompt="a photo of {subject}", subject_model_id=model_id):
            if isinstance(event, GeneratedImage):
                Path(f"{event.index}.png").write_bytes(event.data)

Failed calls raise the `likeness_client.errors` class matching the status code (INVALID_ARGUMENT ->
InvalidArgument, ...), with the server's message, request id and details; the original `grpc.RpcError` is the
exception's `__cause__`. The generated stubs stay available as `client.trainer`, `client.inference` and
`client.gallery`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from likeness_client import errors
from likeness_client._wire import HEALTH_CHECK_METHOD, HEALTH_SERVING_STATUS, HealthCheckRequest, HealthCheckResponse
from likeness_client.channel import ClientBase, sync_channel
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
from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

#: The deadline of erasures, which cancel running jobs first (up to a minute).
ERASE_TIMEOUT_SECONDS = 120.0


class LikenessClient(ClientBase):
    """Blocking client for the trainer, inference and gallery services.

    `address` (default $LIKENESS_ADDRESS, else 127.0.0.1:50051) reaches all three services, as `likeness serve all`
    and a deployment's gateway do; `trainer_address`, `inference_address` and `gallery_address` override it per
    service. `api_key` (default $LIKENESS_API_KEY) is sent as `authorization: Bearer <key>` on every call.
    `tls_ca_file` (default $LIKENESS_TLS_CA_FILE) connects with TLS trusting that CA; `credentials` gives full
    control (client certificates for mutual TLS); with neither the channel is plaintext.

    gRPC retries UNAVAILABLE and RESOURCE_EXHAUSTED itself (the service config), and each call kind has a default
    deadline: 60 s for unary calls, 10 minutes for uploads, generation and downloads, none for watches.
    `timeout`, when given, is the deadline of unary calls instead; every method also takes its own `timeout`.
    """

    make_channel = staticmethod(sync_channel)

    # --- lifecycle ---

    def close(self) -> None:
        """Closes the channels; calls in flight are cancelled."""
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> LikenessClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as error:
            raise translate_error(error) from error

    def is_serving(self, service: str = "", timeout: float = 5.0) -> bool:
        """True when the health check reports SERVING for `service` ("" for the whole server), for example
        "likeness.inference.v1.InferenceService". False while it loads models, drains or cannot be reached."""
        check: Callable[..., Any] = self._channel_of(service).unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        try:
            response = check(HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                return False
            raise translate_error(error) from error
        return bool(response.status == HEALTH_SERVING_STATUS["SERVING"])

    def wait_until_serving(self, service: str = "", timeout: float = 60.0, poll_seconds: float = 0.2) -> None:
        """Blocks until the health check reports SERVING; raises `Unavailable` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if self.is_serving(service, timeout=max(0.1, min(5.0, remaining))):
                return
            if remaining <= 0:
                raise errors.Unavailable(f"{self.address} did not become SERVING within {timeout:g} s")
            time.sleep(min(poll_seconds, max(remaining, 0.0)))

    # --- trainer ---

    def prepare_dataset(
        self,
        photos: Sequence[PhotoSource],
        options: trainer_pb.DatasetOptions | None = None,
        *,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        timeout: float | None = None,
    ) -> trainer_pb.PrepareDatasetResponse:
        """Uploads photos (files, bytes or (name, bytes) pairs) in chunks and returns the prepared dataset with its
        per-photo report. Photos already in storage or at a URL go in `options.photo_uris` instead."""
        names = upload_names(photos, chunk_bytes, self.max_message_bytes)
        try:
            return self.trainer.PrepareDataset(upload_requests(photos, names, options, chunk_bytes), timeout=timeout)
        except grpc.RpcError as error:
            raise translate_error(error) from error

    def get_dataset(self, dataset_id: str) -> trainer_pb.Dataset:
        """Returns a prepared dataset with its per-photo report."""
        return self._unary(self.trainer.GetDataset, trainer_pb.GetDatasetRequest(dataset_id=dataset_id)).dataset

    def create_training_job(
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
        """Queues a training job on `spec.dataset_id`, or on `photos` sent inline (prepared with
        `dataset_options`); `webhook` receives its events. The idempotency key (a fresh one unless given) makes
        gRPC's retries return the first job instead of queueing a second."""
        request = create_job_request(
            spec,
            photos=photos,
            dataset_options=dataset_options,
            idempotency_key=idempotency_key,
            priority=priority,
            webhook=webhook,
            max_message_bytes=self.max_message_bytes,
        )
        return self._unary(self.trainer.CreateTrainingJob, request, timeout)

    def get_training_job(self, job_id: str) -> trainer_pb.TrainingJob:
        """Returns one training job, with its latest webhook deliveries."""
        return self._unary(self.trainer.GetTrainingJob, trainer_pb.GetTrainingJobRequest(job_id=job_id)).job

    def list_training_jobs(
        self, states: Sequence[int] = (), page_size: int = 0, page_token: str = ""
    ) -> trainer_pb.ListTrainingJobsResponse:
        """Lists training jobs, newest first (one page; follow `next_page_token`)."""
        return self._unary(self.trainer.ListTrainingJobs, list_jobs_request(states, page_size, page_token))

    def cancel_training_job(self, job_id: str) -> trainer_pb.TrainingJob:
        """Cancels a queued or running job and returns it."""
        return self._unary(self.trainer.CancelTrainingJob, trainer_pb.CancelTrainingJobRequest(job_id=job_id)).job

    def watch_training_job(
        self, job_id: str, after_sequence: int = 0, *, timeout: float | None = None
    ) -> Iterator[trainer_pb.WatchTrainingJobResponse]:
        """Yields a job's events after `after_sequence` until the job ends.

        When the connection drops (UNAVAILABLE: a restarting or draining server, a broken proxy) it reconnects
        with the last sequence it yielded, so no event is lost or repeated. Gives up with `Unavailable` after
        `max_reconnects` consecutive failures; any event received resets the count.
        """
        last = after_sequence
        failures = 0
        while True:
            call = self.trainer.WatchTrainingJob(
                trainer_pb.WatchTrainingJobRequest(job_id=job_id, after_sequence=last), timeout=timeout
            )
            try:
                for event in call:
                    failures = 0
                    if event.sequence <= last:
                        continue  # a replayed event already yielded before the reconnect
                    last = event.sequence
                    yield event
                return
            except grpc.RpcError as error:
                unavailable = isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE
                if not unavailable or failures >= self.max_reconnects:
                    raise translate_error(error) from error
                time.sleep(min(5.0, self.reconnect_backoff * (2**failures)))
                failures += 1
            finally:
                call.cancel()

    def delete_dataset(self, dataset_id: str) -> trainer_pb.DeleteDatasetResponse:
        """Deletes a dataset and its photos; FailedPrecondition while a job that has not ended trains on it."""
        return self._unary(self.trainer.DeleteDataset, trainer_pb.DeleteDatasetRequest(dataset_id=dataset_id))

    def delete_training_job(self, job_id: str) -> trainer_pb.DeleteTrainingJobResponse:
        """Deletes an ended job with its events and files; FailedPrecondition while it runs (cancel it first)."""
        return self._unary(self.trainer.DeleteTrainingJob, trainer_pb.DeleteTrainingJobRequest(job_id=job_id))

    def erase_subject(
        self, *, dataset_id: str = "", job_id: str = "", model_id: str = "", timeout: float | None = None
    ) -> trainer_pb.ErasureReceipt:
        """Erases everything derived from one subject's photos, named by exactly one id of its lineage (its
        dataset, a job trained on it, or a subject model); returns the receipt."""
        request = erase_subject_request(dataset_id, job_id, model_id)
        return self._unary(self.trainer.EraseSubject, request, timeout or ERASE_TIMEOUT_SECONDS).receipt

    def erase_tenant(self, tenant: str, *, timeout: float | None = None) -> trainer_pb.ErasureReceipt:
        """Erases every subject, gallery entry, file and API key of a tenant (admin keys only); the receipt."""
        request = trainer_pb.EraseTenantRequest(tenant=tenant)
        return self._unary(self.trainer.EraseTenant, request, timeout or ERASE_TIMEOUT_SECONDS).receipt

    # --- inference ---

    def generate_images(
        self,
        request: inference_pb.GenerateImagesRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> Iterator[GenerationEvent]:
        """Streams a generation: `Accepted`, `Progress`, `Warning` and `Summary` messages as they come, and a
        `GeneratedImage` for each image once all its chunks arrived.

        Pass a `GenerateImagesRequest`, or its fields as keywords (`prompt=...`, `subject_model_id=...`,
        `parameters=GenerationParameters(...)`). Leaving the loop early cancels the request on the server.
        """
        call = self.inference.GenerateImages(generate_request(request, fields), timeout=timeout)
        assembler = ImageAssembler()
        try:
            for response in call:
                event = assembler.event(response)
                if event is not None:
                    yield event
            assembler.finish()
        except grpc.RpcError as error:
            raise translate_error(error) from error
        finally:
            call.cancel()

    def generate(
        self,
        request: inference_pb.GenerateImagesRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Runs `generate_images` to the end and returns the images, warnings and summary together."""
        result = GenerationResult()
        for event in self.generate_images(request, timeout=timeout, **fields):
            result.add(event)
        return result

    def list_subject_models(
        self, base_model: str = "", loaded_only: bool = False, kind: str = ""
    ) -> list[inference_pb.SubjectModelStatus]:
        """Subject models in shared storage with their load state, newest first; only subjects or only styles
        when `kind` is "subject" or "style"."""
        request = inference_pb.ListSubjectModelsRequest(
            base_model=base_model,
            loaded_only=loaded_only,
            kind=subject_kind(kind),  # type: ignore[arg-type]  # enum values are ints
        )
        return list(self._unary(self.inference.ListSubjectModels, request).models)

    def get_subject_model(self, model_id: str) -> inference_pb.SubjectModelStatus:
        """One subject model with its load state on this replica (NotFound when it does not exist)."""
        request = inference_pb.GetSubjectModelRequest(model_id=model_id)
        return self._unary(self.inference.GetSubjectModel, request).model

    def load_subject_model(self, model_id: str, timeout: float | None = None) -> inference_pb.SubjectModelStatus:
        """Pre-warms a subject model on the replica that answers, so its first generation does not wait."""
        request = inference_pb.LoadSubjectModelRequest(model_id=model_id)
        return self._unary(self.inference.LoadSubjectModel, request, timeout).model

    def unload_subject_model(self, model_id: str) -> inference_pb.SubjectModelStatus:
        """Evicts a subject model from the replica that answers (it loads again on its next use)."""
        request = inference_pb.UnloadSubjectModelRequest(model_id=model_id)
        return self._unary(self.inference.UnloadSubjectModel, request).model

    def delete_subject_model(self, model_id: str) -> inference_pb.DeleteSubjectModelResponse:
        """Deletes a subject model with its files, its gallery entries and every replica's cached copy."""
        request = inference_pb.DeleteSubjectModelRequest(model_id=model_id)
        return self._unary(self.inference.DeleteSubjectModel, request)

    def download_subject_model(
        self,
        model_id: str,
        folder: str | os.PathLike[str],
        *,
        kinds: Sequence[int] = (),
        timeout: float | None = None,
    ) -> list[DownloadedFile]:
        """Downloads a subject model's files (weights, kohya export, manifest, sample images; only `kinds` when
        given) into `folder`, each checked against its SHA-256, and returns them."""
        request = inference_pb.DownloadSubjectModelRequest(model_id=model_id, kinds=kinds)  # type: ignore[arg-type]
        writer = ArtifactWriter(folder)
        call = self.inference.DownloadSubjectModel(request, timeout=timeout)
        try:
            for response in call:
                writer.add(response)
        except grpc.RpcError as error:
            raise translate_error(error) from error
        finally:
            call.cancel()
        return writer.finish()

    def import_lora(
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
            return self.inference.ImportLora(lora_import_requests(path, header, chunk_bytes), timeout=timeout)
        except grpc.RpcError as error:
            raise translate_error(error) from error

    def get_server_status(self) -> inference_pb.GetServerStatusResponse:
        """Loaded models, cache memory and queue of the inference service."""
        return self._unary(self.inference.GetServerStatus, inference_pb.GetServerStatusRequest())

    # --- gallery ---

    def search_prompts(self, query: str = "", **filters: Any) -> gallery_pb.SearchPromptsResponse:
        """Searches recorded and shared prompts, best matches first (one page; follow `next_page_token`).
        Filters: `tags`, `base_model`, `page_size`, `page_token`, `scope`, `subject_model_id`.

        Each result carries its WebP thumbnail (`prompt.thumbnail_webp`) when it has an image; the full image
        comes from `get_prompt_image`.
        """
        return self._unary(self.gallery.SearchPrompts, search_request(query, **filters))

    def iter_prompts(
        self, query: str = "", *, page_size: int = 100, **filters: Any
    ) -> Iterator[gallery_pb.SearchResult]:
        """Every result of a search, page after page (each entry exactly once)."""
        token = ""
        while True:
            page = self.search_prompts(query, page_size=page_size, page_token=token, **filters)
            yield from page.results
            token = page.next_page_token
            if not token:
                return

    def get_prompt(self, prompt_id: str) -> gallery_pb.PromptRecord:
        """Returns one prompt record."""
        return self._unary(self.gallery.GetPrompt, gallery_pb.GetPromptRequest(prompt_id=prompt_id)).prompt

    def get_prompt_image(self, prompt_id: str, *, timeout: float | None = None) -> tuple[bytes, str]:
        """The full image of a gallery entry and its media type ("image/png", ...), reassembled from chunks."""
        request = gallery_pb.GetPromptImageRequest(prompt_id=prompt_id)
        parts, media_type = [], ""
        try:
            for chunk in self.gallery.GetPromptImage(request, timeout=timeout):
                media_type = media_type or chunk.media_type
                parts.append(chunk.data)
        except grpc.RpcError as error:
            raise translate_error(error) from error
        return b"".join(parts), media_type

    def record_prompt(self, prompt: str, **fields: Any) -> gallery_pb.RecordPromptResponse:
        """Records a prompt with its `parameters`, `base_model`, `tags`, `subject_model_id` and the `image` it
        produced; an identical prompt returns the existing record."""
        return self._unary(self.gallery.RecordPrompt, record_request(prompt, **fields))

    def delete_prompt(self, prompt_id: str) -> gallery_pb.DeletePromptResponse:
        """Deletes one of the caller's prompts with its image; NotFound when it is not (or no longer) there."""
        return self._unary(self.gallery.DeletePrompt, gallery_pb.DeletePromptRequest(prompt_id=prompt_id))

    def list_templates(self, category: str = "") -> list[gallery_pb.Template]:
        """Prompt templates with a "{subject}" placeholder, optionally of one category."""
        response = self._unary(self.gallery.ListTemplates, gallery_pb.ListTemplatesRequest(category=category))
        return list(response.templates)


__all__ = ["LikenessClient", "types_pb2"]
