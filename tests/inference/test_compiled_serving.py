"""Compiled serving: after warm-up, switching and mixing subjects never recompiles the UNet.

The `aot_eager` backend keeps the test short: it traces and guards exactly as inductor does (recompilations are
decided by dynamo's guards, before any backend runs) but generates no code. `make bench` measures inductor.
"""

from __future__ import annotations

import numpy as np
import pytest
from inference_helpers import TINY_CATALOG, request
from prometheus_client import REGISTRY
from test_mixed_batches import generate, generate_together, pixels, with_loras

from likeness.inference.testing import BackgroundInferenceServer, publish_lora_subject
from likeness.storage.local import LocalStorage
from likeness_client.v1 import inference_service_pb2 as pb


def recompilations() -> float:
    return REGISTRY.get_sample_value("likeness_inference_recompilations_total") or 0.0


@pytest.fixture(scope="module")
def compiled_server(catalog, tmp_path_factory):
    storage = LocalStorage(tmp_path_factory.mktemp("compiled-storage"))
    with BackgroundInferenceServer(
        storage,
        catalog,
        base_models=TINY_CATALOG,
        batch_window_ms=500,
        compile_unet=True,
        compile_backend="aot_eager",
        compile_buckets="1,2",
        compile_lora_rank=16,
        preload_base_models="tiny-sd15",
    ) as running:
        yield running


def test_subject_switches_and_mixed_batches_do_not_recompile(compiled_server, server) -> None:
    subjects = [publish_lora_subject(compiled_server.storage, seed=60 + index).model_id for index in range(5)]
    for subject in subjects:  # loaded first, so that requests meet in the batch window
        compiled_server.stub.LoadSubjectModel(pb.LoadSubjectModelRequest(model_id=subject))
    before = recompilations()
    singles = [generate(compiled_server, request(subject=subject, seed=index, steps=2)) for index, subject in
               enumerate(subjects)]  # fmt: skip
    mixed = generate_together(
        compiled_server,
        [
            with_loras(request(subject=subjects[0], seed=1, steps=2), (subjects[1], 0.5)),
            request(prompt="a car", seed=2),
        ],
    )
    mixed += generate_together(
        compiled_server, [request(subject=subjects[2], seed=3, steps=2), request(subject=subjects[3], seed=4, steps=2)]
    )
    assert [stream.summary.batch_size for stream in mixed] == [2, 2, 2, 2]
    assert recompilations() - before == 0
    # A padded bucket: one image of a batch of one still runs as the compiled batch of one; the compiled UNet
    # gives what the eager server gives for the same published subject.
    for index in (0, 4):
        expected = generate(server, request(subject=_republish(server, compiled_server, subjects[index]), seed=index))
        assert np.abs(pixels(singles[index].images[0]) - pixels(expected.images[0])).max() <= 2


def _republish(server, compiled_server, model_id: str) -> str:
    """Copy a subject model's files from the compiled server's storage to the eager server's."""
    prefix = f"tenants/default/models/{model_id}"
    for key in compiled_server.storage.list(prefix):
        server.storage.write_bytes(key, compiled_server.storage.read_bytes(key))
    return model_id
