"""Errors carry details a client can act on: INVALID_ARGUMENT names the field as google.rpc.BadRequest, and the
Python client surfaces it as `error.field` (RESOURCE_EXHAUSTED's RetryInfo is tested in test_quotas.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from likeness import errors
from likeness.api.status import STATUS_DETAILS_KEY
from likeness.gallery.service import GalleryComponent
from likeness.server.settings import Settings
from likeness.server.testing import serve_components
from likeness_client import LikenessClient
from likeness_client.v1 import gallery_service_pb2 as pb
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc
from likeness_client.v1 import types_pb2


def test_invalid_argument_names_the_field_as_bad_request(tmp_path) -> None:
    settings = Settings(storage_url=str(tmp_path / "storage"), cache_dir=str(tmp_path / "cache"))
    bad = pb.RecordPromptRequest(
        prompt="a lighthouse", parameters=types_pb2.GenerationParameters(num_inference_steps=100_000)
    )

    def calls(address: str) -> None:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
            pb_grpc.GalleryServiceStub(channel).RecordPrompt(bad, timeout=30)
        error = raised.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        (details,) = [value for key, value in error.trailing_metadata() if key == STATUS_DETAILS_KEY]
        status = status_pb2.Status.FromString(details)
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        (violation,) = bad_request.field_violations
        assert violation.field == "parameters.num_inference_steps" and violation.description
        with LikenessClient(address) as client:
            with pytest.raises(errors.InvalidArgument) as caught:
                client.record_prompt("a lighthouse", parameters=bad.parameters)
            assert caught.value.field == "parameters.num_inference_steps"
            with pytest.raises(errors.NotFound) as missing:  # no field detail where none applies
                client.get_prompt("pr-does-not-exist")
            assert missing.value.field is None

    async def main() -> None:
        async with serve_components([GalleryComponent(settings)], settings) as running:
            await asyncio.to_thread(calls, running.address)

    asyncio.run(main())
