"""The gallery through its real gRPC service: record, search, get, templates, and bad input."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from likeness.gallery.service import GalleryComponent
from likeness.server.settings import Settings
from likeness.server.testing import serve_components
from likeness_client.v1 import gallery_service_pb2 as pb
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc
from likeness_client.v1 import types_pb2


def run_with_stub(tmp_path, scenario):
    async def main():
        component = GalleryComponent(Settings(storage_url=str(tmp_path / "storage"), cache_dir=str(tmp_path / "c")))
        async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as channel:
            await scenario(pb_grpc.GalleryServiceStub(channel))

    asyncio.run(main())


def test_record_then_search_get_and_reuse_parameters(tmp_path):
    async def scenario(stub):
        params = types_pb2.GenerationParameters(
            negative_prompt="blurry",
            num_inference_steps=30,
            guidance_scale=6.5,
            seed=7,
            scheduler=types_pb2.SCHEDULER_EULER,
        )
        recorded = await stub.RecordPrompt(
            pb.RecordPromptRequest(
                prompt="a watercolor painting of {subject} at a lighthouse", parameters=params, tags=["style"]
            )
        )
        assert not recorded.existing and recorded.prompt.prompt_id
        again = await stub.RecordPrompt(
            pb.RecordPromptRequest(prompt="a watercolor painting of {subject} at a lighthouse", parameters=params)
        )
        assert again.existing and again.prompt.prompt_id == recorded.prompt.prompt_id
        assert again.prompt.use_count == 2

        found = await stub.SearchPrompts(pb.SearchPromptsRequest(query="lighthouse watercolor"))
        assert found.results[0].prompt.prompt_id == recorded.prompt.prompt_id
        got = await stub.GetPrompt(pb.GetPromptRequest(prompt_id=recorded.prompt.prompt_id))
        # The parameters come back exactly as recorded, ready to drop into a GenerateImagesRequest.
        assert got.prompt.parameters == params
        assert got.prompt.create_time.seconds > 0

    run_with_stub(tmp_path, scenario)


def test_templates_and_pagination(tmp_path):
    async def scenario(stub):
        templates = await stub.ListTemplates(pb.ListTemplatesRequest())
        assert len(templates.templates) >= 20
        assert all("{subject}" in t.template for t in templates.templates)
        first = await stub.SearchPrompts(pb.SearchPromptsRequest(page_size=5))
        assert len(first.results) == 5 and first.next_page_token
        second = await stub.SearchPrompts(pb.SearchPromptsRequest(page_size=5, page_token=first.next_page_token))
        ids = {r.prompt.prompt_id for r in first.results}
        assert not ids & {r.prompt.prompt_id for r in second.results}

    run_with_stub(tmp_path, scenario)


@pytest.mark.parametrize(
    ("call", "code", "field"),
    [
        (lambda s: s.RecordPrompt(pb.RecordPromptRequest(prompt="")), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        (
            lambda s: s.RecordPrompt(
                pb.RecordPromptRequest(prompt="x", parameters=types_pb2.GenerationParameters(num_inference_steps=0))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "steps",
        ),
        (lambda s: s.GetPrompt(pb.GetPromptRequest(prompt_id="pr-nope")), grpc.StatusCode.NOT_FOUND, "pr-nope"),
        (
            lambda s: s.SearchPrompts(pb.SearchPromptsRequest(page_token="garbage")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        ),
        (
            lambda s: s.ListTemplates(pb.ListTemplatesRequest(category="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "category",
        ),
    ],
)
def test_bad_input_gets_a_clear_status(tmp_path, call, code, field):
    async def scenario(stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(stub)
        assert info.value.code() == code
        assert field in info.value.details()
        # The service keeps serving.
        assert (await stub.ListTemplates(pb.ListTemplatesRequest())).templates

    run_with_stub(tmp_path, scenario)


def test_images_thumbnails_and_scopes_through_grpc(tmp_path):
    import io

    from PIL import Image

    async def scenario(stub):
        out = io.BytesIO()
        Image.new("RGB", (600, 400), "blue").save(out, format="JPEG")
        recorded = await stub.RecordPrompt(
            pb.RecordPromptRequest(prompt="a blue wall, minimalist", image=out.getvalue())
        )
        assert recorded.prompt.has_image and recorded.prompt.source == "record"
        found = await stub.SearchPrompts(pb.SearchPromptsRequest(query="blue wall", scope=pb.SEARCH_SCOPE_OWN))
        (result,) = found.results
        assert Image.open(io.BytesIO(result.prompt.thumbnail_webp)).format == "WEBP"
        chunks = [c async for c in stub.GetPromptImage(pb.GetPromptImageRequest(prompt_id=recorded.prompt.prompt_id))]
        assert chunks[0].media_type == "image/jpeg" and chunks[-1].last
        assert b"".join(c.data for c in chunks) == out.getvalue()
        shared = await stub.SearchPrompts(pb.SearchPromptsRequest(query="beach", scope=pb.SEARCH_SCOPE_SHARED))
        assert shared.results and all(r.prompt.builtin for r in shared.results)
        for query in ['AND OR NOT "', "*"]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SearchPrompts(pb.SearchPromptsRequest(query=query))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "query" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RecordPrompt(pb.RecordPromptRequest(prompt="x", image=b"GIF89a not really"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in info.value.details()

    run_with_stub(tmp_path, scenario)


def test_delete_prompt_through_grpc(tmp_path):
    async def scenario(stub):
        recorded = await stub.RecordPrompt(pb.RecordPromptRequest(prompt="a paper boat on a pond"))
        prompt_id = recorded.prompt.prompt_id
        deleted = await stub.DeletePrompt(pb.DeletePromptRequest(prompt_id=prompt_id))
        assert deleted.prompt_id == prompt_id and deleted.files_removed == 0
        for call in (
            stub.DeletePrompt(pb.DeletePromptRequest(prompt_id=prompt_id)),
            stub.GetPrompt(pb.GetPromptRequest(prompt_id=prompt_id)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.DeletePrompt(pb.DeletePromptRequest(prompt_id="seed-context-tropical-beach"))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    run_with_stub(tmp_path, scenario)


def test_record_prompt_errors_name_the_wire_fields_and_templates_carry_no_size(tmp_path):
    # A client fixes what the error names: the GenerationParameters path of RecordPromptRequest, as GenerateImages
    # names it, not the gallery's internal keys ("params.steps").
    bad = {
        "parameters.num_inference_steps": types_pb2.GenerationParameters(num_inference_steps=151),
        "parameters.guidance_scale": types_pb2.GenerationParameters(guidance_scale=31.0),
        "parameters.seed": types_pb2.GenerationParameters(seed=-1),
        "parameters.lora_scale": types_pb2.GenerationParameters(lora_scale=2.5),
        "parameters.width": types_pb2.GenerationParameters(width=60),
        "parameters.scheduler": types_pb2.GenerationParameters(scheduler=99),  # a value this server does not know
    }

    async def scenario(stub):
        for field, parameters in bad.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RecordPrompt(pb.RecordPromptRequest(prompt="a lighthouse", parameters=parameters))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert info.value.details().startswith(f"{field}:"), info.value.details()
        # Templates leave the size to the base model, whose bounds differ (32 px toy model, 1024 px SDXL).
        for template in (await stub.ListTemplates(pb.ListTemplatesRequest())).templates:
            assert not template.parameters.HasField("width") and not template.parameters.HasField("height")
            assert 1 <= template.parameters.num_inference_steps <= 150

    run_with_stub(tmp_path, scenario)
