"""gRPC servicer of `likeness.inference.v1.InferenceService`: protobuf <-> domain only.

Domain errors propagate to the shared interceptor, which maps them to status codes. Blocking domain calls (storage
reads, model loads) run in worker threads so the event loop keeps serving other streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import grpc

from likeness.api.chunks import iter_chunk_fields
from likeness.api.convert import subject_kind_name, subject_model_to_pb
from likeness.api.generation import IMAGE_FORMAT_ENUMS, enum_names, image_format_name, scheduler_name
from likeness.errors import FailedPrecondition, InvalidArgument, LikenessError, Unavailable
from likeness.inference import artifacts, metrics
from likeness.inference.base_pool import BaseStatus
from likeness.inference.engine import InferenceEngine
from likeness.inference.gallery_link import GalleryLink
from likeness.inference.jobs import (
    AcceptedEvent,
    EventSink,
    FailedEvent,
    ImageEvent,
    ProgressEvent,
    SummaryEvent,
    WarningEvent,
)
from likeness.inference.loading import FAILED, LOADED, LOADING, NOT_LOADED
from likeness.inference.lora_import import LoraImportRequest
from likeness.inference.params import GenerationSpec
from likeness.inference.subject_files import stored_size
from likeness.inference.subject_index import SubjectStatus
from likeness.server.context import current_request_id, current_tenant
from likeness_client.v1 import inference_service_pb2 as pb
from likeness_client.v1 import inference_service_pb2_grpc as pb_grpc
from likeness_client.v1 import types_pb2

LOAD_STATES = {
    NOT_LOADED: pb.LOAD_STATE_NOT_LOADED,
    LOADING: pb.LOAD_STATE_LOADING,
    LOADED: pb.LOAD_STATE_LOADED,
    FAILED: pb.LOAD_STATE_FAILED,
}


def spec_from_request(request: pb.GenerateImagesRequest) -> GenerationSpec:
    """The domain view of a request; unset optional fields stay None."""
    p = request.parameters
    scheduler = scheduler_name(p.scheduler)
    output_format = image_format_name(request.output_format)
    return GenerationSpec(
        prompt=request.prompt,
        negative_prompt=p.negative_prompt,
        num_images=request.num_images,
        num_inference_steps=p.num_inference_steps if p.HasField("num_inference_steps") else None,
        guidance_scale=p.guidance_scale if p.HasField("guidance_scale") else None,
        width=p.width if p.HasField("width") else None,
        height=p.height if p.HasField("height") else None,
        scheduler=scheduler,
        seed=p.seed if p.HasField("seed") else None,
        lora_scale=p.lora_scale if p.HasField("lora_scale") else None,
        output_format=output_format,
        preview_every_n_steps=request.preview_every_n_steps,
        subject_model_id=request.subject_model_id,
        base_model=request.base_model,
        init_image=request.init_image,
        mask_image=request.mask_image,
        strength=request.strength if request.HasField("strength") else None,
        loras=tuple((lora.lora_id, lora.weight if lora.HasField("weight") else None) for lora in request.loras),
    )


def subject_status_proto(status: SubjectStatus, tenant: str, size_bytes: int | None = None) -> pb.SubjectModelStatus:
    """`size_bytes` overrides the status's (which is 0 until the subject is loaded here)."""
    size = status.size_bytes if size_bytes is None else size_bytes
    if status.manifest is not None:
        model = subject_model_to_pb(status.manifest, size_bytes=size)
    else:
        model = types_pb2.SubjectModel(model_id=status.model_id, size_bytes=size)
    return pb.SubjectModelStatus(
        model=model,
        state=LOAD_STATES[status.state],
        failure_reason=status.failure_reason,
        memory_bytes=status.memory_bytes,
    )


def base_status_proto(status: BaseStatus) -> pb.BaseModelStatus:
    return pb.BaseModelStatus(
        base_model=status.id,
        arch=status.arch,
        state=LOAD_STATES[status.state],
        default_resolution=status.default_resolution,
        memory_bytes=status.memory_bytes,
    )


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Translates RPCs to the engine returned by `engine_provider` (Unavailable until the service started)."""

    def __init__(
        self,
        engine_provider: Callable[[], InferenceEngine | None],
        chunk_bytes: int,
        gallery: GalleryLink | None = None,
    ) -> None:
        self._engine_provider = engine_provider
        self._chunk_bytes = chunk_bytes
        self._gallery = gallery

    def _engine(self) -> InferenceEngine:
        engine = self._engine_provider()
        if engine is None:
            raise Unavailable("the inference service is starting; retry in a moment")
        return engine

    def _subject_protos(self, statuses: list[SubjectStatus], tenant: str) -> list[pb.SubjectModelStatus]:
        """Statuses as messages, with the size of the published weights also for subjects not loaded (blocking)."""
        storage = self._engine().storage
        protos = []
        for status in statuses:
            size = status.size_bytes
            if not size and status.manifest is not None:
                with contextlib.suppress(LikenessError):  # a missing weight file is the load's to report
                    size = stored_size(storage, status.manifest)
            protos.append(subject_status_proto(status, tenant, size_bytes=size))
        return protos

    async def GenerateImages(
        self, request: pb.GenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateImagesResponse]:
        try:
            engine = self._engine()
            spec = spec_from_request(request)
            tenant = current_tenant()
            gallery = self._gallery
            requested = request.record_in_gallery if request.HasField("record_in_gallery") else None
            recording = gallery is not None and gallery.wants_recording(requested)
            tags = gallery.check_tags(request.gallery_tags) if gallery is not None else []
            if request.remix_prompt_id:
                if gallery is None:
                    raise FailedPrecondition("this server has no gallery to remix from", field="remix_prompt_id")
                spec = await asyncio.to_thread(gallery.remix, tenant, spec, request.remix_prompt_id)
        except LikenessError:
            # Refused before admission; engine.admit counts the refusals of its own checks.
            metrics.REQUESTS.labels("rejected").inc()
            raise
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        sink = EventSink(asyncio.get_running_loop())
        admission = asyncio.ensure_future(
            asyncio.to_thread(
                engine.admit,
                spec,
                tenant=tenant,
                request_id=current_request_id(),
                sink=sink,
                deadline=deadline,
            )
        )
        try:
            job = await asyncio.shield(admission)
        except asyncio.CancelledError:
            # The client left while admission ran in its thread: cancel the job as soon as it exists.
            admission.add_done_callback(lambda done: _cancel_admitted(engine, done))
            raise
        try:
            async for event in sink.events():
                if isinstance(event, FailedEvent):
                    raise event.error
                if isinstance(event, ImageEvent):
                    prompt_id = ""
                    if recording:
                        assert gallery is not None  # recording implies a gallery
                        try:
                            prompt_id = await asyncio.to_thread(gallery.record, job, spec, event, tags)
                        except LikenessError as error:  # the image is delivered even when its record fails
                            yield _event_response(WarningEvent(f"not recorded in the gallery: {error.message}"))
                    for response in self._image_chunks(event, prompt_id):
                        yield response
                else:
                    yield _event_response(event)
        finally:
            # Reached on normal end, on failure, and when the client cancels or disconnects (the task is
            # cancelled and the generator closed): the worker stops this request at its next step.
            engine.cancel(job)

    def _image_chunks(self, event: ImageEvent, gallery_prompt_id: str = "") -> list[pb.GenerateImagesResponse]:
        image_format = IMAGE_FORMAT_ENUMS[event.image_format]
        return [
            pb.GenerateImagesResponse(
                image_chunk=pb.ImageChunk(
                    image_index=event.index,
                    chunk_index=chunk_index,
                    last=last,
                    data=data,
                    seed=event.seed,
                    format=image_format,  # type: ignore[arg-type]  # enum values are ints
                    width=event.width,
                    height=event.height,
                    gallery_prompt_id=gallery_prompt_id if last else "",
                )
            )
            for chunk_index, last, data in iter_chunk_fields(event.data, self._chunk_bytes)
        ]

    async def ListSubjectModels(
        self, request: pb.ListSubjectModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSubjectModelsResponse:
        tenant = current_tenant()
        statuses = await asyncio.to_thread(
            self._engine().list_subjects,
            tenant,
            base_model=request.base_model,
            loaded_only=request.loaded_only,
            kind=subject_kind_name(request.kind),
        )
        return pb.ListSubjectModelsResponse(models=await asyncio.to_thread(self._subject_protos, statuses, tenant))

    async def GetSubjectModel(
        self, request: pb.GetSubjectModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubjectModelResponse:
        tenant = current_tenant()
        model_id = _required_id(request.model_id)
        status = await asyncio.to_thread(self._engine().get_subject, tenant, model_id)
        (model,) = await asyncio.to_thread(self._subject_protos, [status], tenant)
        return pb.GetSubjectModelResponse(model=model)

    async def LoadSubjectModel(
        self, request: pb.LoadSubjectModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadSubjectModelResponse:
        tenant = current_tenant()
        model_id = _required_id(request.model_id)
        status = await asyncio.to_thread(self._engine().load_subject, tenant, model_id)
        (model,) = await asyncio.to_thread(self._subject_protos, [status], tenant)
        return pb.LoadSubjectModelResponse(model=model)

    async def UnloadSubjectModel(
        self, request: pb.UnloadSubjectModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadSubjectModelResponse:
        tenant = current_tenant()
        model_id = _required_id(request.model_id)
        status = await asyncio.to_thread(self._engine().unload_subject, tenant, model_id)
        (model,) = await asyncio.to_thread(self._subject_protos, [status], tenant)
        return pb.UnloadSubjectModelResponse(model=model)

    async def DeleteSubjectModel(
        self, request: pb.DeleteSubjectModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSubjectModelResponse:
        tenant = current_tenant()
        model_id = _required_id(request.model_id)
        if self._gallery is None:
            raise FailedPrecondition("this server has no control-plane database to delete subject models from")
        deleted = await asyncio.to_thread(self._engine().delete_subject, self._gallery, tenant, model_id)
        return pb.DeleteSubjectModelResponse(
            model_id=deleted.model_id,
            files_removed=deleted.files_removed,
            gallery_entries_removed=deleted.gallery_entries_removed,
        )

    async def DownloadSubjectModel(
        self, request: pb.DownloadSubjectModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadSubjectModelResponse]:
        tenant = current_tenant()
        model_id = _required_id(request.model_id)
        kinds = frozenset(_artifact_kind(kind) for kind in request.kinds)
        files = await asyncio.to_thread(self._engine().subject_artifacts, tenant, model_id, kinds)
        for artifact in files:
            yield pb.DownloadSubjectModelResponse(
                file=pb.ArtifactFile(
                    path=artifact.path,
                    kind=ARTIFACT_KINDS[artifact.kind],
                    size_bytes=artifact.size_bytes,
                    sha256=artifact.sha256,
                )
            )
            chunks = artifacts.read_chunks(artifact)
            while (block := await asyncio.to_thread(next, chunks, None)) is not None:
                yield pb.DownloadSubjectModelResponse(data=block)

    async def ImportLora(
        self, request_iterator: AsyncIterator[pb.ImportLoraRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportLoraResponse:
        tenant = current_tenant()
        engine = self._engine()
        requests = request_iterator.__aiter__()
        first = await anext(requests, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first message must carry the import header", field="header")
        upload = await asyncio.to_thread(engine.lora_upload, lora_import_request(first.header))
        try:
            async for message in requests:
                if message.HasField("header"):
                    raise InvalidArgument("the header may be sent only once, in the first message", field="header")
                await asyncio.to_thread(upload.write, message.chunk)
            imported = await asyncio.to_thread(engine.import_lora, tenant, upload)
        finally:
            await asyncio.to_thread(upload.close)
        status = await asyncio.to_thread(engine.get_subject, tenant, imported.manifest.model_id)
        (model,) = await asyncio.to_thread(self._subject_protos, [status], tenant)
        return pb.ImportLoraResponse(
            model=model,
            source_format=LORA_FORMAT_ENUMS[imported.source_format],  # type: ignore[arg-type]  # enum values are ints
            layer_count=len(imported.layers.layers),
        )

    async def GetServerStatus(
        self, request: pb.GetServerStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerStatusResponse:
        tenant = current_tenant()
        status = await asyncio.to_thread(self._engine().status)
        return pb.GetServerStatusResponse(
            base_models=[base_status_proto(b) for b in status.base_models],
            loaded_subjects=[subject_status_proto(s, tenant) for s in status.loaded_subjects],
            subject_cache_budget_bytes=status.subject_cache_budget_bytes,
            subject_cache_used_bytes=status.subject_cache_used_bytes,
            queue_depth=status.queue_depth,
            queue_capacity=status.queue_capacity,
            device=status.device,
        )


def _cancel_admitted(engine: InferenceEngine, admission: asyncio.Future) -> None:
    if not admission.cancelled() and admission.exception() is None:
        engine.cancel(admission.result())


#: The wire name of each kind of subject-model file (likeness.inference.artifacts.KINDS).
ARTIFACT_KINDS: dict[str, pb.ArtifactKind] = {
    artifacts.WEIGHTS: pb.ARTIFACT_KIND_WEIGHTS,
    artifacts.KOHYA_LORA: pb.ARTIFACT_KIND_KOHYA_LORA,
    artifacts.MANIFEST: pb.ARTIFACT_KIND_MANIFEST,
    artifacts.SAMPLE_IMAGE: pb.ARTIFACT_KIND_SAMPLE_IMAGE,
}
_KIND_NAMES = {wire: name for name, wire in ARTIFACT_KINDS.items()}


def _artifact_kind(wire: int) -> str:
    if wire not in _KIND_NAMES:
        names = ", ".join(pb.ArtifactKind.Name(value) for value in ARTIFACT_KINDS.values())
        raise InvalidArgument(f"unknown artifact kind {wire}; use one of {names}", field="kinds")
    return _KIND_NAMES[wire]


#: The layout name of an imported file ("diffusers", "kohya") -> its LoraFormat value.
LORA_FORMAT_ENUMS: dict[str, int] = {
    name: value for value, name in enum_names(pb.LoraFormat.DESCRIPTOR, "LORA_FORMAT_").items()
}


def lora_import_request(header: pb.ImportLoraHeader) -> LoraImportRequest:
    """The domain view of an ImportLora header; an unspecified kind is a subject."""
    return LoraImportRequest(
        base_model=header.base_model,
        kind=subject_kind_name(header.kind, field="header.kind") or "subject",
        identifier=header.identifier,
        class_noun=header.class_noun,
        file_name=header.file_name,
        size_bytes=header.size_bytes,
    )


def _required_id(model_id: str) -> str:
    if not model_id:
        raise InvalidArgument("must name a subject model; ListSubjectModels shows them", field="model_id")
    return model_id


def _event_response(event: object) -> pb.GenerateImagesResponse:
    if isinstance(event, AcceptedEvent):
        return pb.GenerateImagesResponse(
            accepted=pb.Accepted(
                request_id=event.request_id,
                queue_position=event.queue_position,
                effective_prompt=event.effective_prompt,
            )
        )
    if isinstance(event, ProgressEvent):
        progress = pb.Progress(step=event.step, total_steps=event.total_steps)
        if event.preview is not None:
            progress.preview.CopyFrom(
                types_pb2.EncodedImage(
                    format=types_pb2.IMAGE_FORMAT_JPEG,
                    data=event.preview.data,
                    width=event.preview.width,
                    height=event.preview.height,
                    name="preview",
                )
            )
        return pb.GenerateImagesResponse(progress=progress)
    if isinstance(event, WarningEvent):
        return pb.GenerateImagesResponse(warning=pb.Warning(message=event.message))
    if isinstance(event, SummaryEvent):
        return pb.GenerateImagesResponse(
            summary=pb.Summary(
                num_images=event.num_images,
                seeds=event.seeds,
                queue_ms=event.queue_ms,
                load_ms=event.load_ms,
                denoise_ms=event.denoise_ms,
                decode_ms=event.decode_ms,
                total_ms=event.total_ms,
                batch_size=event.batch_size,
            )
        )
    raise TypeError(f"unexpected event {type(event).__name__}")
