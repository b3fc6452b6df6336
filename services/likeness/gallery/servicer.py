"""GalleryService: translates protobuf to PromptStore and template calls, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api.chunks import iter_chunk_fields
from likeness.api.convert import params_from_dict, params_to_dict, timestamp
from likeness.errors import InvalidArgument
from likeness.gallery import templates
from likeness.gallery.records import PromptRecord
from likeness.gallery.store import PromptStore, Scope, SearchFilters, SearchHit
from likeness.server.context import current_tenant
from likeness_client.v1 import gallery_service_pb2 as pb
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc

SCOPES = {
    pb.SEARCH_SCOPE_UNSPECIFIED: Scope.ALL,
    pb.SEARCH_SCOPE_ALL: Scope.ALL,
    pb.SEARCH_SCOPE_OWN: Scope.OWN,
    pb.SEARCH_SCOPE_SHARED: Scope.SHARED,
}
IMAGE_CHUNK_BYTES = 1024 * 1024


def record_to_proto(record: PromptRecord, thumbnail: bytes | None = None) -> pb.PromptRecord:
    return pb.PromptRecord(
        prompt_id=record.prompt_id,
        prompt=record.prompt,
        parameters=params_from_dict(record.params, record.negative_prompt),
        base_model=record.base_model,
        tags=record.tags,
        subject_model_id=record.subject_model_id,
        create_time=timestamp(datetime.fromtimestamp(record.created_at, tz=timezone.utc)),
        use_count=record.uses,
        builtin=record.builtin,
        shared=record.shared,
        thumbnail_webp=thumbnail or b"",
        has_image=record.has_image,
        source=record.source.value,
    )


def hit_to_proto(hit: SearchHit) -> pb.SearchResult:
    return pb.SearchResult(prompt=record_to_proto(hit.record, hit.thumbnail), score=hit.score)


def template_to_proto(template: templates.Template) -> pb.Template:
    return pb.Template(
        template_id=template.template_id,
        name=template.name,
        category=template.category,
        template=template.template,
        parameters=params_from_dict(template.default_params, template.negative_prompt),
        tags=template.tags,
    )


def _seconds(request: pb.SearchPromptsRequest, field: str) -> float | None:
    if not request.HasField(field):
        return None
    value: Timestamp = getattr(request, field)
    return value.seconds + value.nanos / 1e9


def filters_from_request(request: pb.SearchPromptsRequest) -> SearchFilters:
    if request.scope not in SCOPES:
        raise InvalidArgument(f"unknown scope value {request.scope}", field="scope")
    return SearchFilters(
        tags=tuple(request.tags),
        base_model=request.base_model,
        scope=SCOPES[request.scope],
        subject_model_id=request.subject_model_id,
        created_after=_seconds(request, "create_time_after"),
        created_before=_seconds(request, "create_time_before"),
    )


class GalleryServicer(pb_grpc.GalleryServiceServicer):
    """Store calls touch the database and shared storage, so they run in a worker thread."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store

    async def SearchPrompts(self, request: pb.SearchPromptsRequest, context: grpc.aio.ServicerContext):
        page = await asyncio.to_thread(
            self.store.search,
            current_tenant(),
            request.query,
            filters=filters_from_request(request),
            page_size=request.page_size or None,
            page_token=request.page_token or None,
            with_thumbnails=True,
        )
        return pb.SearchPromptsResponse(
            results=[hit_to_proto(hit) for hit in page.results], next_page_token=page.next_page_token
        )

    async def GetPrompt(self, request: pb.GetPromptRequest, context: grpc.aio.ServicerContext):
        record, thumbnail = await asyncio.to_thread(self.store.get_with_thumbnail, current_tenant(), request.prompt_id)
        return pb.GetPromptResponse(prompt=record_to_proto(record, thumbnail))

    async def RecordPrompt(self, request: pb.RecordPromptRequest, context: grpc.aio.ServicerContext):
        outcome = await asyncio.to_thread(
            self.store.record,
            current_tenant(),
            request.prompt,
            negative_prompt=request.parameters.negative_prompt,
            base_model=request.base_model,
            params=params_to_dict(request.parameters),
            tags=list(request.tags),
            subject_model_id=request.subject_model_id,
            image=request.image or None,
        )
        return pb.RecordPromptResponse(prompt=record_to_proto(outcome.record), existing=outcome.existing)

    async def ListTemplates(self, request: pb.ListTemplatesRequest, context: grpc.aio.ServicerContext):
        found = templates.list_templates(request.category or None)
        return pb.ListTemplatesResponse(templates=[template_to_proto(t) for t in found])

    async def DeletePrompt(self, request: pb.DeletePromptRequest, context: grpc.aio.ServicerContext):
        outcome = await asyncio.to_thread(self.store.delete, current_tenant(), request.prompt_id)
        return pb.DeletePromptResponse(prompt_id=outcome.prompt_id, files_removed=outcome.files_removed)

    async def GetPromptImage(
        self, request: pb.GetPromptImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetPromptImageResponse]:
        data, media_type = await asyncio.to_thread(self.store.read_image, current_tenant(), request.prompt_id)
        for index, last, chunk in iter_chunk_fields(data, IMAGE_CHUNK_BYTES):
            yield pb.GetPromptImageResponse(data=chunk, media_type=media_type if index == 0 else "", last=last)
