"""Generations fill the gallery: recorded images with the parameters that reproduce them, and remix."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from inference_helpers import TINY_CATALOG, read_stream, request
from PIL import Image

from likeness.controlplane.database import Database
from likeness.gallery.store import PromptStore, Scope, SearchFilters
from likeness.inference.testing import BackgroundInferenceServer, publish_lora_subject
from likeness.storage.local import LocalStorage
from likeness_client.v1 import inference_service_pb2 as pb


@pytest.fixture(scope="module")
def server(catalog, tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery-inference")
    storage = LocalStorage(root / "storage")
    running = BackgroundInferenceServer(
        storage, catalog, base_models=TINY_CATALOG, database_url=f"sqlite:///{root / 'likeness.db'}"
    ).start()
    running.gallery = PromptStore(Database(f"sqlite:///{root / 'likeness.db'}"), storage)
    yield running
    running.stop()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_recorded_generation_reproduces_and_remixes_with_a_subject(server) -> None:
    subject = publish_lora_subject(server.storage, seed=1, identifier="ohwx", class_noun="toy").model_id
    first = read_stream(
        server.stub.GenerateImages(
            request("a {subject} on a beach", subject=subject, seed=11, record_in_gallery=True, gallery_tags=["beach"]),
            timeout=120,
        )
    )
    (chunk,) = [c for c in first.chunks if c.last]
    assert chunk.gallery_prompt_id
    entry = server.gallery.get("default", chunk.gallery_prompt_id)
    assert entry.source.value == "generation" and entry.subject_model_id == subject and entry.has_image
    assert entry.params["seed"] == 11 and entry.params["steps"] == 2 and entry.params["width"] == 64
    found = server.gallery.search("default", "beach", filters=SearchFilters(scope=Scope.OWN, tags=["beach"]))
    assert [hit.record.prompt_id for hit in found.results] == [entry.prompt_id]
    stored, _ = server.gallery.read_image("default", entry.prompt_id)
    assert stored == first.images[0]

    # A remix with the same subject is the same recipe: same pixels, and the entry counts one more use.
    remix = read_stream(
        server.stub.GenerateImages(
            pb.GenerateImagesRequest(
                subject_model_id=subject, remix_prompt_id=entry.prompt_id, record_in_gallery=True, num_images=1
            ),
            timeout=120,
        )
    )
    assert np.array_equal(pixels(remix.images[0]), pixels(first.images[0]))
    assert server.gallery.get("default", entry.prompt_id).uses == 2


def test_not_recorded_unless_asked_and_bad_tags_fail_before_generating(server) -> None:
    plain = read_stream(server.stub.GenerateImages(request("a plain toy"), timeout=120))
    assert all(not c.gallery_prompt_id for c in plain.chunks)
    with pytest.raises(grpc.RpcError) as caught:
        read_stream(server.stub.GenerateImages(request("x", record_in_gallery=True, gallery_tags=["bad/tag"])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "gallery_tags[0]" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        read_stream(server.stub.GenerateImages(request("", remix_prompt_id="pr-missing")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_subject_model_removes_files_gallery_entries_and_cached_copies(server) -> None:
    doomed = publish_lora_subject(server.storage, seed=3, identifier="zwx", class_noun="cat").model_id
    kept = publish_lora_subject(server.storage, seed=4, identifier="qrt", class_noun="cat").model_id
    first = read_stream(
        server.stub.GenerateImages(
            request("a {subject} on a sofa", subject=doomed, record_in_gallery=True), timeout=120
        )
    )
    assert first.images
    repository = server.component.engine.repository
    assert doomed in {s.model_id for s in repository.list_subjects("default", loaded_only=True)}

    deleted = server.stub.DeleteSubjectModel(pb.DeleteSubjectModelRequest(model_id=doomed), timeout=60)
    assert deleted.model_id == doomed and deleted.files_removed > 2 and deleted.gallery_entries_removed == 1
    assert not (Path(server.storage.root) / "tenants" / "default" / "models" / doomed).exists()
    assert doomed not in {s.model_id for s in repository.list_subjects("default")}
    assert server.gallery.search("default", "", filters=SearchFilters(subject_model_id=doomed)).results == []
    for call in (
        lambda: server.stub.GetSubjectModel(pb.GetSubjectModelRequest(model_id=doomed), timeout=30),
        lambda: server.stub.DeleteSubjectModel(pb.DeleteSubjectModelRequest(model_id=doomed), timeout=30),
        lambda: read_stream(server.stub.GenerateImages(request("a {subject}", subject=doomed), timeout=60)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Another subject of the same tenant is untouched.
    assert read_stream(server.stub.GenerateImages(request("a {subject}", subject=kept), timeout=120)).images


def test_a_replica_forgets_a_subject_deleted_elsewhere_at_its_next_sweep(server) -> None:
    subject = publish_lora_subject(server.storage, seed=5, identifier="vbn", class_noun="toy").model_id
    assert read_stream(server.stub.GenerateImages(request("a {subject}", subject=subject), timeout=120)).images
    repository = server.component.engine.repository
    server.storage.delete_prefix(f"tenants/default/models/{subject}")  # as another replica's delete does
    assert repository.sweep_deleted() == [("default", subject)]
    assert subject not in {s.model_id for s in repository.list_subjects("default", loaded_only=True)}
