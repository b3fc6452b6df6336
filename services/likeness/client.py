"""A synchronous Python client for the Likeness services, over the generated stubs.

    from likeness.client import LikenessClient

    with LikenessClient("127.0.0.1:50051") as client:
        dataset = client.prepare_dataset(["me1.jpg", "me2.jpg"]).dataset
        job = client.create_training_job(spec).job
        for event in client.watch_training_job(job.job_id):   # reconnects on UNAVAILABLE, loses nothing
            ...
        for event in client.generate_images(prompt="a photo of {subject}", subject_model_id=model_id):
            if isinstance(event, GeneratedImage):
                Path(f"{event.index}.png").write_bytes(event.data)

Failed calls raise the `likeness.errors` class matching the status code (INVALID_ARGUMENT -> InvalidArgument, ...),
with the server's message and request id; the original `grpc.RpcError` is the exception's `__cause__`.
The generated stubs stay available as `client.trainer`, `client.inference` and `client.gallery`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness import __version__, errors
from likeness.api.status import ERRORS_BY_CODE, bad_request_field, retry_delay_seconds
from likeness.gallery.v1 import gallery_service_pb2 as gallery_pb
from likeness.gallery.v1 import gallery_service_pb2_grpc as gallery_grpc
from likeness.inference.v1 import inference_service_pb2 as inference_pb
from likeness.inference.v1 import inference_service_pb2_grpc as inference_grpc
from likeness.trainer.v1 import trainer_service_pb2 as trainer_pb
from likeness.trainer.v1 import trainer_service_pb2_grpc as trainer_grpc
from likeness.type.v1 import types_pb2

DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Matches the server's default `max_message_mb`; inline photos and generated images must fit in one message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Photo bytes per PrepareDataset message: small enough to keep memory flat, large enough to keep overhead low.
UPLOAD_CHUNK_BYTES = 1024 * 1024
REQUEST_ID_KEY = "x-request-id"

#: A photo to upload: a file path, raw bytes, a (file name, bytes) pair, or a `Photo` message (with caption).
PhotoSource = str | os.PathLike | bytes | tuple[str, bytes] | trainer_pb.Photo


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <API key>` to every call's metadata."""

    def __init__(self, api_key: str) -> None:
        self._header = ("authorization", f"Bearer {api_key}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """Channel options matching the server: its message-size limit, and keepalive pings every 30 s (the server
    accepts one every 10 s) so idle training watches survive proxies and load balancers."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.primary_user_agent", f"likeness-python/{__version__}"),
    ]


def translate_error(error: grpc.RpcError) -> errors.LikenessError:
    """The `likeness.errors` exception for a failed call, carrying the server's message and request id.

    The returned exception has `code` (the `grpc.StatusCode`) and `request_id` attributes.
    """
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    request_id = ""
    if isinstance(error, grpc.Call):
        request_id = dict(error.trailing_metadata() or ()).get(REQUEST_ID_KEY, "")
    message = f"{details} (request id {request_id})" if request_id else details
    cls = ERRORS_BY_CODE.get(code, errors.LikenessError)
    exc = cls(message if cls is not errors.LikenessError else f"{code.name}: {message}")
    exc.code = code  # type: ignore[attr-defined]
    exc.request_id = request_id  # type: ignore[attr-defined]
    if isinstance(exc, errors.ResourceExhausted) and isinstance(error, grpc.Call):
        exc.retry_after = retry_delay_seconds(error)  # the server's RetryInfo, seconds (None: none sent)
    if isinstance(exc, errors.InvalidArgument) and isinstance(error, grpc.Call):
        exc.field = bad_request_field(error)  # the server's BadRequest: the request field to fix
    return exc


def _is_unavailable(error: grpc.RpcError) -> bool:
    return isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class GeneratedImage:
    """One whole generated image, reassembled from its chunks."""

    index: int
    seed: int
    format: int  # types_pb2.ImageFormat value
    width: int
    height: int
    data: bytes
    gallery_prompt_id: str = ""  # the gallery entry it was recorded as, when the request recorded it

    @property
    def extension(self) -> str:
        """File extension of the encoding, for example "png"."""
        extensions: dict[int, str] = {types_pb2.IMAGE_FORMAT_JPEG: "jpg", types_pb2.IMAGE_FORMAT_WEBP: "webp"}
        return extensions.get(self.format, "png")


#: What `generate_images` yields: the stream's protocol messages, with image chunks replaced by whole images.
GenerationEvent = (
    inference_pb.Accepted | inference_pb.Progress | inference_pb.Warning | inference_pb.Summary | GeneratedImage
)


class ImageAssembler:
    """Joins the `ImageChunk`s of a GenerateImages stream into whole images.

    Chunks of different images may interleave; chunks of one image must arrive in order, which the server
    guarantees. A gap or a duplicate means a broken stream and raises `Unavailable` rather than returning a
    corrupt image.
    """

    def __init__(self) -> None:
        self._parts: dict[int, list[bytes]] = {}
        self._completed: set[int] = set()

    def add(self, chunk: inference_pb.ImageChunk) -> GeneratedImage | None:
        """Takes the next chunk; returns the whole image when this was its last chunk, else None."""
        index = chunk.image_index
        if index in self._completed:
            raise errors.Unavailable(f"stream sent chunk {chunk.chunk_index} of image {index} after its last chunk")
        parts = self._parts.setdefault(index, [])
        if chunk.chunk_index != len(parts):
            raise errors.Unavailable(
                f"stream sent chunk {chunk.chunk_index} of image {index}, expected chunk {len(parts)}"
            )
        parts.append(chunk.data)
        if not chunk.last:
            return None
        del self._parts[index]
        self._completed.add(index)
        return GeneratedImage(
            index=index,
            seed=chunk.seed,
            format=chunk.format,
            width=chunk.width,
            height=chunk.height,
            data=b"".join(parts),
            gallery_prompt_id=chunk.gallery_prompt_id,
        )

    def finish(self) -> None:
        """Raises when the stream ended with images still incomplete."""
        if self._parts:
            raise errors.Unavailable(f"stream ended before images {sorted(self._parts)} were complete")


@dataclass
class GenerationResult:
    """Everything a GenerateImages call returned, collected by `LikenessClient.generate`."""

    accepted: inference_pb.Accepted | None = None
    images: list[GeneratedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: inference_pb.Summary | None = None


def _photo_name(source: PhotoSource, position: int) -> str:
    if isinstance(source, trainer_pb.Photo):
        return source.file_name or f"photo-{position:03d}"
    if isinstance(source, tuple):
        return source[0]
    if isinstance(source, bytes):
        return f"photo-{position:03d}"
    return Path(source).name


def _photo_chunks(source: PhotoSource, name: str, chunk_bytes: int) -> Iterator[trainer_pb.PhotoChunk]:
    """Chunks of one photo; files are read lazily so a large upload never sits in memory whole."""
    caption = source.caption if isinstance(source, trainer_pb.Photo) else ""
    if isinstance(source, trainer_pb.Photo):
        data: bytes | None = source.data
    elif isinstance(source, tuple):
        data = source[1]
    elif isinstance(source, bytes):
        data = source
    else:
        data = None
    if data is not None:
        # An empty photo still sends one chunk, so it gets a report (rejected as empty) instead of vanishing.
        starts = range(0, len(data), chunk_bytes) or range(1)
        for position, start in enumerate(starts):
            piece = data[start : start + chunk_bytes]
            yield trainer_pb.PhotoChunk(file_name=name, data=piece, caption=caption if position == 0 else "")
        return
    with open(source, "rb") as handle:  # type: ignore[arg-type]
        yield from _file_chunks(handle, name, chunk_bytes)


def _file_chunks(handle: IO[bytes], name: str, chunk_bytes: int) -> Iterator[trainer_pb.PhotoChunk]:
    sent_any = False
    while piece := handle.read(chunk_bytes):
        sent_any = True
        yield trainer_pb.PhotoChunk(file_name=name, data=piece)
    if not sent_any:
        yield trainer_pb.PhotoChunk(file_name=name, data=b"")


def _inline_photo(source: PhotoSource, position: int) -> trainer_pb.Photo:
    if isinstance(source, trainer_pb.Photo):
        return source
    name = _photo_name(source, position)
    if isinstance(source, tuple):
        return trainer_pb.Photo(file_name=name, data=source[1])
    if isinstance(source, bytes):
        return trainer_pb.Photo(file_name=name, data=source)
    return trainer_pb.Photo(file_name=name, data=Path(source).read_bytes())


class LikenessClient:
    """Blocking client for the trainer, inference and gallery services behind one address.

    `address` defaults to $LIKENESS_ADDRESS, else 127.0.0.1:50051. `api_key` (default $LIKENESS_API_KEY) is sent
    as `authorization: Bearer <key>` on every call. `tls_ca_file` (default $LIKENESS_TLS_CA_FILE) connects with
    TLS, trusting that CA; `credentials` gives full control (client certificates for mutual TLS). Without
    either the channel is plaintext, as the embedded server listens by default. `timeout` is the deadline in seconds of unary calls; streams and uploads
    take their own `timeout` argument and default to none, since training and generation can run long.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        api_key: str | None = None,
        tls_ca_file: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 60.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_reconnects: int = 10,
        reconnect_backoff: float = 0.2,
    ) -> None:
        self.address = address or os.environ.get("LIKENESS_ADDRESS") or DEFAULT_ADDRESS
        options = channel_options(max_message_bytes)
        tls_ca_file = tls_ca_file if tls_ca_file is not None else os.environ.get("LIKENESS_TLS_CA_FILE", "")
        if credentials is None and tls_ca_file:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca_file).read_bytes())
        if credentials is None:
            self.channel = grpc.insecure_channel(self.address, options=options)
        else:
            self.channel = grpc.secure_channel(self.address, credentials, options=options)
        api_key = api_key if api_key is not None else os.environ.get("LIKENESS_API_KEY", "")
        if api_key:
            # Metadata rather than call credentials: gRPC refuses call credentials on plaintext channels, and
            # the embedded server and local tests listen in plaintext.
            self.channel = grpc.intercept_channel(self.channel, _BearerToken(api_key))
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.max_reconnects = max_reconnects
        self.reconnect_backoff = reconnect_backoff
        self.trainer = trainer_grpc.TrainerServiceStub(self.channel)
        self.inference = inference_grpc.InferenceServiceStub(self.channel)
        self.gallery = gallery_grpc.GalleryServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    # --- lifecycle ---

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self.channel.close()

    def __enter__(self) -> LikenessClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise translate_error(error) from error

    def is_serving(self, service: str = "", timeout: float = 5.0) -> bool:
        """True when the server's health check reports SERVING for `service` ("" for the whole server), for
        example "likeness.inference.v1.InferenceService". False while it loads models or drains."""
        try:
            response = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                return False
            raise translate_error(error) from error
        return response.status == health_pb2.HealthCheckResponse.SERVING

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
        per-photo report. Photos already in shared storage go in `options.photo_uris` instead."""
        names = [_photo_name(source, position) for position, source in enumerate(photos)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            # The server joins chunks by file name, so two photos with one name would be merged into garbage.
            raise errors.InvalidArgument(f"photo file names must be unique; repeated: {duplicates}", field="photos")
        if chunk_bytes <= 0 or chunk_bytes > self.max_message_bytes - 4096:
            raise errors.InvalidArgument("must be positive and below the message limit", field="chunk_bytes")

        def requests() -> Iterator[trainer_pb.PrepareDatasetRequest]:
            yield trainer_pb.PrepareDatasetRequest(options=options or trainer_pb.DatasetOptions())
            for source, name in zip(photos, names, strict=True):
                for chunk in _photo_chunks(source, name, chunk_bytes):
                    yield trainer_pb.PrepareDatasetRequest(photo_chunk=chunk)

        try:
            return self.trainer.PrepareDataset(requests(), timeout=timeout)
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
        timeout: float | None = None,
    ) -> trainer_pb.CreateTrainingJobResponse:
        """Queues a training job on `spec.dataset_id`, or on `photos` sent inline (prepared with
        `dataset_options`). Retries while the server is UNAVAILABLE; the idempotency key (a fresh one unless
        given) makes a retry return the first job instead of queueing a second."""
        inline = [_inline_photo(source, position) for position, source in enumerate(photos)]
        inline_bytes = sum(len(photo.data) for photo in inline)
        if inline_bytes > self.max_message_bytes - 1024 * 1024:
            raise errors.InvalidArgument(
                f"inline photos total {inline_bytes} bytes, over the message limit; upload them with "
                "prepare_dataset and pass spec.dataset_id",
                field="photos",
            )
        request = trainer_pb.CreateTrainingJobRequest(
            spec=spec,
            photos=inline,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            dataset_options=dataset_options,
            priority=priority,
        )
        # Preparing inline photos can take a while, so no default deadline when there are photos.
        deadline = timeout if timeout is not None else (None if inline else self.timeout)
        for attempt in range(self.max_reconnects + 1):
            try:
                return self.trainer.CreateTrainingJob(request, timeout=deadline)
            except grpc.RpcError as error:
                if not _is_unavailable(error) or attempt == self.max_reconnects:
                    raise translate_error(error) from error
                time.sleep(self._backoff(attempt))
        raise AssertionError("unreachable: the loop returns or raises")

    def get_training_job(self, job_id: str) -> trainer_pb.TrainingJob:
        """Returns one training job."""
        return self._unary(self.trainer.GetTrainingJob, trainer_pb.GetTrainingJobRequest(job_id=job_id)).job

    def list_training_jobs(
        self, states: Sequence[int] = (), page_size: int = 0, page_token: str = ""
    ) -> trainer_pb.ListTrainingJobsResponse:
        """Lists training jobs, newest first (one page; follow `next_page_token`)."""
        request = trainer_pb.ListTrainingJobsRequest(
            states=cast("Sequence[trainer_pb.JobState]", states), page_size=page_size, page_token=page_token
        )
        return self._unary(self.trainer.ListTrainingJobs, request)

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
                if not _is_unavailable(error) or failures >= self.max_reconnects:
                    raise translate_error(error) from error
                time.sleep(self._backoff(failures))
                failures += 1
            finally:
                call.cancel()

    def _backoff(self, attempt: int) -> float:
        return min(5.0, self.reconnect_backoff * (2**attempt))

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
        if request is None:
            request = inference_pb.GenerateImagesRequest(**fields)
        elif fields:
            raise TypeError("pass either a request or keyword fields, not both")
        call = self.inference.GenerateImages(request, timeout=timeout)
        assembler = ImageAssembler()
        try:
            for response in call:
                kind = response.WhichOneof("event")
                if kind == "image_chunk":
                    image = assembler.add(response.image_chunk)
                    if image is not None:
                        yield image
                elif kind is not None:
                    yield getattr(response, kind)
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
            if isinstance(event, GeneratedImage):
                result.images.append(event)
            elif isinstance(event, inference_pb.Accepted):
                result.accepted = event
            elif isinstance(event, inference_pb.Warning):
                result.warnings.append(event.message)
            elif isinstance(event, inference_pb.Summary):
                result.summary = event
        return result

    def list_subject_models(
        self, base_model: str = "", loaded_only: bool = False
    ) -> list[inference_pb.SubjectModelStatus]:
        """Subject models in shared storage with their load state, newest first."""
        request = inference_pb.ListSubjectModelsRequest(base_model=base_model, loaded_only=loaded_only)
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

    def get_server_status(self) -> inference_pb.GetServerStatusResponse:
        """Loaded models, cache memory and queue of the inference service."""
        return self._unary(self.inference.GetServerStatus, inference_pb.GetServerStatusRequest())

    # --- gallery ---

    def search_prompts(
        self,
        query: str = "",
        *,
        tags: Sequence[str] = (),
        base_model: str = "",
        page_size: int = 0,
        page_token: str = "",
        scope: int = gallery_pb.SEARCH_SCOPE_ALL,
        subject_model_id: str = "",
    ) -> gallery_pb.SearchPromptsResponse:
        """Searches recorded and shared prompts, best matches first (one page; follow `next_page_token`).

        Each result carries its WebP thumbnail (`prompt.thumbnail_webp`) when it has an image; the full image
        comes from `get_prompt_image`.
        """
        request = gallery_pb.SearchPromptsRequest(
            query=query,
            tags=tags,
            base_model=base_model,
            page_size=page_size,
            page_token=page_token,
            scope=cast("gallery_pb.SearchScope", scope),
            subject_model_id=subject_model_id,
        )
        return self._unary(self.gallery.SearchPrompts, request)

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

    def delete_prompt(self, prompt_id: str) -> gallery_pb.DeletePromptResponse:
        """Deletes one of the caller's prompts with its image; NotFound when it is not (or no longer) there."""
        return self._unary(self.gallery.DeletePrompt, gallery_pb.DeletePromptRequest(prompt_id=prompt_id))

    def get_prompt_image(self, prompt_id: str, *, timeout: float | None = None) -> tuple[bytes, str]:
        """The full image of a gallery entry and its media type ("image/png", ...), reassembled from chunks."""
        request = gallery_pb.GetPromptImageRequest(prompt_id=prompt_id)
        parts, media_type = [], ""
        try:
            for chunk in self.gallery.GetPromptImage(request, timeout=self.timeout if timeout is None else timeout):
                media_type = media_type or chunk.media_type
                parts.append(chunk.data)
        except grpc.RpcError as error:
            raise translate_error(error) from error
        return b"".join(parts), media_type

    def delete_dataset(self, dataset_id: str) -> trainer_pb.DeleteDatasetResponse:
        """Deletes a dataset and its photos; FailedPrecondition while a job that has not ended trains on it."""
        return self._unary(self.trainer.DeleteDataset, trainer_pb.DeleteDatasetRequest(dataset_id=dataset_id))

    def delete_training_job(self, job_id: str) -> trainer_pb.DeleteTrainingJobResponse:
        """Deletes an ended job with its events and files; FailedPrecondition while it runs (cancel it first)."""
        return self._unary(self.trainer.DeleteTrainingJob, trainer_pb.DeleteTrainingJobRequest(job_id=job_id))

    def delete_subject_model(self, model_id: str) -> inference_pb.DeleteSubjectModelResponse:
        """Deletes a subject model with its files, its gallery entries and every replica's cached copy."""
        return self._unary(self.inference.DeleteSubjectModel, inference_pb.DeleteSubjectModelRequest(model_id=model_id))

    def erase_subject(
        self, *, dataset_id: str = "", job_id: str = "", model_id: str = "", timeout: float | None = None
    ) -> trainer_pb.ErasureReceipt:
        """Erases everything derived from one subject's photos, named by exactly one id of its lineage (its
        dataset, a job trained on it, or a subject model); returns the receipt. Running jobs are cancelled first,
        which can take up to a minute, hence the longer default deadline."""
        named = {
            name: value
            for name, value in (("dataset_id", dataset_id), ("job_id", job_id), ("model_id", model_id))
            if value
        }
        if len(named) != 1:
            raise errors.InvalidArgument("name the subject by exactly one of dataset_id, job_id or model_id")
        request = trainer_pb.EraseSubjectRequest(**named)
        call_timeout = timeout if timeout is not None else max(self.timeout or 0.0, 120.0)
        return self._unary(self.trainer.EraseSubject, request, timeout=call_timeout).receipt

    def erase_tenant(self, tenant: str, *, timeout: float | None = None) -> trainer_pb.ErasureReceipt:
        """Erases every subject, gallery entry, file and API key of a tenant (admin keys only); the receipt."""
        call_timeout = timeout if timeout is not None else max(self.timeout or 0.0, 120.0)
        return self._unary(
            self.trainer.EraseTenant, trainer_pb.EraseTenantRequest(tenant=tenant), timeout=call_timeout
        ).receipt

    def get_prompt(self, prompt_id: str) -> gallery_pb.PromptRecord:
        """Returns one prompt record."""
        return self._unary(self.gallery.GetPrompt, gallery_pb.GetPromptRequest(prompt_id=prompt_id)).prompt

    def record_prompt(
        self,
        prompt: str,
        *,
        parameters: types_pb2.GenerationParameters | None = None,
        base_model: str = "",
        tags: Sequence[str] = (),
        subject_model_id: str = "",
        image: bytes = b"",
    ) -> gallery_pb.RecordPromptResponse:
        """Records a prompt with its parameters (and the image it produced); an identical prompt returns the
        existing record."""
        request = gallery_pb.RecordPromptRequest(
            prompt=prompt,
            parameters=parameters,
            base_model=base_model,
            tags=tags,
            subject_model_id=subject_model_id,
            image=image,
        )
        return self._unary(self.gallery.RecordPrompt, request)

    def list_templates(self, category: str = "") -> list[gallery_pb.Template]:
        """Prompt templates with a "{subject}" placeholder, optionally of one category."""
        response = self._unary(self.gallery.ListTemplates, gallery_pb.ListTemplatesRequest(category=category))
        return list(response.templates)
