"""GalleryService: translates protobuf to PromptStore and template calls, nothing more."""

from __future__ import annotations

import asyncio

import grpc

from likeness.api.convert import params_from_dict, params_to_dict, timestamp
from likeness.gallery import templates
from likeness.gallery.records import PromptRecord
from likeness.gallery.store import PromptStore
from likeness.gallery.v1 import gallery_service_pb2 as pb
from likeness.gallery.v1 import gallery_service_pb2_grpc as pb_grpc
from likeness.server.context import current_tenant


def record_to_proto(record: PromptRecord) -> pb.PromptRecord:
    return pb.PromptRecord(
        prompt_id=record.prompt_id,
        prompt=record.prompt,
        parameters=params_from_dict(record.params, record.negative_prompt),
        base_model=record.base_model,
        tags=record.tags,
        subject_model_id=record.subject_model_id,
        create_time=timestamp(record.created_at),
        use_count=record.uses,
        builtin=record.builtin,
    )


def template_to_proto(template: templates.Template) -> pb.Template:
    return pb.Template(
        template_id=template.template_id,
        name=template.name,
        category=template.category,
        template=template.template,
        parameters=params_from_dict(template.default_params, template.negative_prompt),
        tags=template.tags,
    )


class GalleryServicer(pb_grpc.GalleryServiceServicer):
    """Store calls touch shared storage, so they run in a worker thread to keep the event loop free."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store

    async def SearchPrompts(self, request: pb.SearchPromptsRequest, context: grpc.aio.ServicerContext):
        page = await asyncio.to_thread(
            self.store.search,
            current_tenant(),
            request.query,
            tags=list(request.tags),
            base_model=request.base_model or None,
            page_size=request.page_size or None,
            page_token=request.page_token or None,
        )
        return pb.SearchPromptsResponse(
            results=[pb.SearchResult(prompt=record_to_proto(hit.record), score=hit.score) for hit in page.results],
            next_page_token=page.next_page_token,
        )

    async def GetPrompt(self, request: pb.GetPromptRequest, context: grpc.aio.ServicerContext):
        record = await asyncio.to_thread(self.store.get, current_tenant(), request.prompt_id)
        return pb.GetPromptResponse(prompt=record_to_proto(record))

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
        )
        return pb.RecordPromptResponse(prompt=record_to_proto(outcome.record), existing=outcome.existing)

    async def ListTemplates(self, request: pb.ListTemplatesRequest, context: grpc.aio.ServicerContext):
        found = templates.list_templates(request.category or None)
        return pb.ListTemplatesResponse(templates=[template_to_proto(t) for t in found])
