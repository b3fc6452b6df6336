"""`likeness_client.LikenessClient` against a real server: the gallery service, and scripted trainer and inference
streams for chunked uploads, image reassembly, watch resumption and retries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from scripted_services import DEFAULT_SEED, DROP_AFTER_SEQUENCE, WATCH_EVENTS, image_sha256

from likeness import errors
from likeness_client import GeneratedImage, ImageAssembler, LikenessClient
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2


@pytest.fixture
def client(live_server):
    with LikenessClient(live_server.address, timeout=10, reconnect_backoff=0.01) as client:
        yield client


def test_health_reports_every_service_serving(client):
    client.wait_until_serving(timeout=10)
    assert client.is_serving("likeness.gallery.v1.GalleryService")
    assert client.is_serving("likeness.trainer.v1.TrainerService")


def test_gallery_templates_and_search_round_trip(client):
    templates = client.list_templates()
    assert templates, "the gallery ships built-in templates"
    assert all("{subject}" in template.template for template in templates)
    category = templates[0].category
    assert {t.template_id for t in client.list_templates(category)} <= {t.template_id for t in templates}
    assert all(t.category == category for t in client.list_templates(category))

    recorded = client.record_prompt(
        "a watercolor painting of {subject} on a sailboat",
        parameters=types_pb2.GenerationParameters(num_inference_steps=30, guidance_scale=6.5),
        base_model="tiny-sd15",
        tags=["watercolor", "client-test"],
    )
    assert recorded.prompt.prompt_id
    hits = client.search_prompts("watercolor sailboat", tags=["client-test"]).results
    assert hits[0].prompt.prompt_id == recorded.prompt.prompt_id
    assert hits[0].prompt.parameters.num_inference_steps == 30
    assert client.get_prompt(recorded.prompt.prompt_id).prompt == recorded.prompt.prompt


def test_errors_become_domain_exceptions_with_the_request_id(client):
    with pytest.raises(errors.NotFound) as caught:
        client.get_prompt("does-not-exist")
    assert caught.value.request_id and caught.value.request_id in str(caught.value)
    with pytest.raises(errors.InvalidArgument):
        client.search_prompts(page_size=1000)


def test_prepare_dataset_streams_files_and_bytes_in_chunks(client, live_server, tmp_path: Path):
    big = bytes(range(256)) * (5 * 1024)  # 1.25 MiB: two chunks
    (tmp_path / "big.jpg").write_bytes(big)
    (tmp_path / "empty.jpg").write_bytes(b"")
    options = trainer_pb.DatasetOptions(display_name="client test", subject_type=trainer_pb.SUBJECT_TYPE_FACE)

    response = client.prepare_dataset(
        [tmp_path / "big.jpg", str(tmp_path / "empty.jpg"), b"raw-bytes", ("named.png", b"pair")],
        options,
        chunk_bytes=1024 * 1024,
    )

    scripted = live_server.scripted.trainer
    assert scripted.upload_options.display_name == "client test"
    assert scripted.uploads == {"big.jpg": big, "empty.jpg": b"", "photo-002": b"raw-bytes", "named.png": b"pair"}
    assert max(scripted.chunk_sizes) == 1024 * 1024
    assert response.dataset.image_count == 3
    assert [r.file_name for r in response.dataset.reports if not r.kept] == ["empty.jpg"]


def test_prepare_dataset_refuses_duplicate_file_names(client):
    with pytest.raises(errors.InvalidArgument, match="unique"):
        client.prepare_dataset([("a.jpg", b"1"), ("a.jpg", b"2")])


def test_create_training_job_retries_unavailable_with_the_same_idempotency_key(client, live_server):
    spec = trainer_pb.TrainingJobSpec(base_model="tiny-sd15", class_noun="dog", dataset_id="dataset-scripted")
    first = client.create_training_job(spec, idempotency_key="flaky-create")
    assert first.job.spec.class_noun == "dog" and not first.existing
    assert live_server.scripted.trainer.create_calls.count("flaky-create") == 2
    again = client.create_training_job(spec, idempotency_key="flaky-create")
    assert again.existing and again.job.job_id == first.job.job_id

    generated_key = client.create_training_job(spec).job.idempotency_key
    assert len(generated_key) == 32


def test_create_training_job_refuses_inline_photos_over_the_message_limit(client):
    with pytest.raises(errors.InvalidArgument, match="prepare_dataset"):
        client.create_training_job(trainer_pb.TrainingJobSpec(), photos=[b"x" * (64 * 1024 * 1024)])


def test_watch_resumes_after_unavailable_without_loss_or_repeats(client, live_server):
    events = list(client.watch_training_job("job-python"))

    assert [e.sequence for e in events] == list(range(1, WATCH_EVENTS + 1))
    assert events[0].state_changed.state == trainer_pb.JOB_STATE_RUNNING
    assert events[-1].succeeded.subject_model.model_id == "subject-scripted"
    calls = [call for call in live_server.scripted.trainer.watch_calls if call[0] == "job-python"]
    assert calls == [("job-python", 0), ("job-python", DROP_AFTER_SEQUENCE)]


def test_watch_starts_after_the_given_sequence_and_fails_fast_on_not_found(client):
    assert [e.sequence for e in client.watch_training_job("job-python-late", after_sequence=4)] == [5, 6]
    with pytest.raises(errors.NotFound):
        list(client.watch_training_job("missing"))


def test_generate_images_reassembles_interleaved_chunks(client):
    events = list(
        client.generate_images(
            prompt="a photo of {subject} at the beach",
            num_images=3,
            parameters=types_pb2.GenerationParameters(num_inference_steps=3),
            output_format=types_pb2.IMAGE_FORMAT_WEBP,
        )
    )

    kinds = [type(e).__name__ for e in events]
    assert kinds[:5] == ["Accepted", "Warning", "Progress", "Progress", "Progress"]
    assert kinds[-1] == "Summary"
    images = sorted((e for e in events if isinstance(e, GeneratedImage)), key=lambda image: image.index)
    assert [image.index for image in images] == [0, 1, 2]
    for image in images:
        assert image.seed == DEFAULT_SEED + image.index
        assert hashlib.sha256(image.data).hexdigest() == image_sha256(image.index, image.seed)
        assert image.extension == "webp" and image.width == 64


def test_generate_collects_everything_and_surfaces_stream_errors(client):
    result = client.generate(
        inference_pb.GenerateImagesRequest(prompt="short", parameters=types_pb2.GenerationParameters(seed=7))
    )
    assert result.accepted.effective_prompt == "short"
    assert [image.seed for image in result.images] == [7]
    assert result.summary.seeds == [7] and result.warnings == []

    with pytest.raises(errors.ResourceExhausted, match="fewer images"):
        client.generate(prompt="fail midway", num_images=2)


def test_image_assembler_rejects_gaps_and_incomplete_streams():
    assembler = ImageAssembler()
    assert assembler.add(inference_pb.ImageChunk(image_index=0, chunk_index=0, data=b"ab")) is None
    with pytest.raises(errors.Unavailable, match="expected chunk 1"):
        assembler.add(inference_pb.ImageChunk(image_index=0, chunk_index=2, data=b"cd"))
    with pytest.raises(errors.Unavailable, match=r"images \[0\]"):
        assembler.finish()
