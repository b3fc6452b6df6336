"""The product path across services: the trainer publishes subject models, the inference service generates them.

Runs the real trainer, inference and gallery services together on one shared storage, on the tiny SD 1.x and tiny
SDXL base models, for a LoRA and a full fine-tune.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors import safe_open

from likeness import errors
from likeness.cli.main import main as cli_main
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness_client import GeneratedImage, LikenessClient
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

METHODS = {"lora": types_pb2.TRAINING_METHOD_LORA, "full": types_pb2.TRAINING_METHOD_FULL}


def subject_photos(count: int = 4) -> list[tuple[str, bytes]]:
    """A striped orange box, shot at different places and sizes on different backgrounds, 128 px."""
    rng = np.random.default_rng(5)
    photos = []
    for index in range(count):
        background = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        image = Image.fromarray(background).resize((128, 128), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        size = 40 + 12 * index
        left, top = [(10, 12), (60, 20), (20, 60), (45, 45)][index % 4]
        draw.rectangle([left, top, left + size, top + size], fill=(240, 130, 20))
        for stripe in range(left, left + size, 10):
            draw.rectangle([stripe, top, stripe + 4, top + size], fill=(30, 30, 30))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        photos.append((f"box-{index}.png", buffer.getvalue()))
    return photos


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    settings = Settings(
        storage_url=str(root / "storage"),
        cache_dir=str(root / "cache"),
        device="cpu",
        trainer_progress_interval_seconds=0.0,
        log_level="WARNING",
    )
    with (
        EmbeddedServer(settings, ["trainer", "inference", "gallery"]) as server,
        LikenessClient(server.address, timeout=300) as client,
    ):
        yield client


def train(client: LikenessClient, base_model: str, method: str, **spec_fields) -> trainer_pb.TrainingJob:
    spec = trainer_pb.TrainingJobSpec(
        base_model=base_model,
        class_noun="box",
        method=METHODS[method],
        # A high learning rate so that three steps move the weights visibly: the test checks the subject model is
        # applied at generation, not what it learned (that is the personalization eval's job).
        hyperparameters=trainer_pb.Hyperparameters(max_train_steps=3, seed=3, resolution=64, learning_rate=0.02),
        lora=trainer_pb.LoraConfig(rank=4),
        checkpointing=trainer_pb.CheckpointConfig(every_n_steps=0),
        **spec_fields,
    )
    job = client.create_training_job(spec, photos=subject_photos()).job
    events = list(client.watch_training_job(job.job_id))
    kinds = [event.WhichOneof("event") for event in events]
    assert "succeeded" in kinds, [str(event) for event in events[-3:]]
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    return client.get_training_job(job.job_id)


def generate(client: LikenessClient, **request) -> list[GeneratedImage]:
    parameters = types_pb2.GenerationParameters(num_inference_steps=3, seed=11, width=64, height=64)
    return [
        event
        for event in client.generate_images(parameters=parameters, num_images=2, **request)
        if isinstance(event, GeneratedImage)
    ]


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("base_model", "method"), [("tiny-sd15", "lora"), ("tiny-sdxl", "full")])
def test_trained_subject_generates_through_inference(services, base_model, method):
    job = train(services, base_model, method)
    assert job.state == trainer_pb.JOB_STATE_SUCCEEDED and job.subject_model_id

    # The inference service finds the model the trainer just published, without a restart.
    listed = {status.model.model_id: status for status in services.list_subject_models(base_model=base_model)}
    assert job.subject_model_id in listed
    model = listed[job.subject_model_id].model
    assert model.identifier == job.spec.identifier and model.class_noun == "box"

    first = generate(services, subject_model_id=job.subject_model_id, prompt="a photo of {subject} on the beach")
    again = generate(services, subject_model_id=job.subject_model_id, prompt="a photo of {subject} on the beach")
    assert [image.seed for image in first] == [11, 12]
    assert all(pixels(a).shape == (64, 64, 3) for a in first)
    # Same request, same pixels.
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, again, strict=True))
    # The subject model changes the output compared with the base model alone.
    base = generate(services, base_model=base_model, prompt=f"a photo of {model.identifier} box on the beach")
    assert any(np.abs(pixels(a) - pixels(b)).mean() > 0.5 for a, b in zip(first, base, strict=True))


def test_subject_of_another_base_model_is_refused(services):
    sd15_models = services.list_subject_models(base_model="tiny-sd15")
    assert sd15_models, "the LoRA test publishes one first"
    from likeness.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition):
        generate(services, subject_model_id=sd15_models[0].model.model_id, base_model="tiny-sdxl", prompt="{subject}")


def test_a_trained_subject_downloads_for_other_tools(services, tmp_path, capsys):
    job = train(services, "tiny-sd15", "lora", export_kohya=True)
    files = services.download_subject_model(job.subject_model_id, tmp_path / "all")
    by_name = {file.path.relative_to(tmp_path / "all").as_posix(): file for file in files}
    assert set(by_name) >= {"manifest.json", "pytorch_lora_weights.safetensors", "lora_kohya.safetensors"}
    assert files[0].kind == inference_pb.ARTIFACT_KIND_MANIFEST
    assert by_name["lora_kohya.safetensors"].kind == inference_pb.ARTIFACT_KIND_KOHYA_LORA
    for file in files:  # what arrived is what the server announced
        data = file.path.read_bytes()
        assert len(data) == file.size_bytes and hashlib.sha256(data).hexdigest() == file.sha256
    manifest = json.loads(by_name["manifest.json"].path.read_text())
    assert manifest["identifier"] == job.spec.identifier
    # Another tool's loader reads the kohya file: its keys are in the kohya layout.
    with safe_open(str(by_name["lora_kohya.safetensors"].path), "pt") as kohya:
        assert all(key.startswith(("lora_unet_", "lora_te")) for key in kohya.keys())  # noqa: SIM118 - safe_open has no __iter__

    only_kohya = services.download_subject_model(
        job.subject_model_id, tmp_path / "kohya", kinds=[inference_pb.ARTIFACT_KIND_KOHYA_LORA]
    )
    assert [file.path.name for file in only_kohya] == ["lora_kohya.safetensors"]
    # The command line does the same.
    argv = ["subjects", "download", job.subject_model_id, str(tmp_path / "cli"), "--kind", "manifest"]
    assert cli_main([*argv, "--address", services.address]) == 0
    assert (tmp_path / "cli" / "manifest.json").read_bytes() == by_name["manifest.json"].path.read_bytes()
    assert "manifest" in capsys.readouterr().out
    with pytest.raises(errors.NotFound):
        services.download_subject_model("sm-doesnotexist", tmp_path / "none")
    with pytest.raises(errors.InvalidArgument) as raised:
        services.download_subject_model(job.subject_model_id, tmp_path / "bad", kinds=[99])
    assert raised.value.field == "kinds"
