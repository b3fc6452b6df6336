"""One vocabulary: each enum's names come from one map derived from its descriptor, and each fact has one place."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from likeness.api import convert, generation
from likeness.dataset.contact_sheet import contact_sheet_jpeg, encoded_size
from likeness.storage.manifest import METHODS, SubjectModelManifest
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2


def _values(enum):
    return [value for value in enum.DESCRIPTOR.values if value.number]


@pytest.mark.parametrize("value", _values(types_pb2.Scheduler), ids=lambda v: v.name)
def test_scheduler_round_trips(value) -> None:
    from likeness.cli import generate_cmd
    from likeness.gallery import corpus

    name = generation.SCHEDULER_NAMES[value.number]
    assert generation.SCHEDULER_ENUMS[name] == value.number
    assert generate_cmd.SCHEDULERS[name] == value.number  # --scheduler takes the wire name
    assert name in corpus.SCHEDULERS


@pytest.mark.parametrize("value", _values(types_pb2.TrainingMethod), ids=lambda v: v.name)
def test_training_method_round_trips(value) -> None:
    name = convert.TRAINING_METHOD_NAMES[value.number]
    assert name == value.name.removeprefix("TRAINING_METHOD_").lower()
    assert convert.training_method_enum(name) == value.number
    assert convert.training_method_name(value.number) == name
    assert name in METHODS  # storage cannot import the proto: its list must match


def test_training_methods_match_the_manifest() -> None:
    assert convert.TRAINING_METHODS == METHODS


def test_subject_kinds_and_origins_match_the_manifest() -> None:
    from likeness.storage.manifest import KINDS, ORIGINS
    from likeness_client.messages import LORA_KINDS

    assert tuple(convert.SUBJECT_KIND_NAMES.values()) == KINDS  # storage cannot import the proto
    assert tuple(convert.MODEL_ORIGIN_NAMES.values()) == ORIGINS
    assert {name: convert.SUBJECT_KIND_ENUMS[name] for name in KINDS} == LORA_KINDS  # the SDK's own map
    for value, name in convert.SUBJECT_KIND_NAMES.items():
        assert convert.subject_kind_name(value) == name
    built = convert.subject_model_to_pb(_manifest(identifier="", class_noun="", kind="style", origin="imported"))
    assert (built.kind, built.origin) == (types_pb2.SUBJECT_KIND_STYLE, types_pb2.MODEL_ORIGIN_IMPORTED)
    assert convert.subject_model_to_pb(_manifest()).origin == types_pb2.MODEL_ORIGIN_TRAINED


@pytest.mark.parametrize("value", _values(types_pb2.ImageFormat), ids=lambda v: v.name)
def test_image_format_round_trips(value) -> None:
    from likeness.cli import generate_cmd
    from likeness.inference.servicer import spec_from_request
    from likeness_client.v1 import inference_service_pb2 as pb

    name = generation.IMAGE_FORMAT_NAMES[value.number]
    assert generation.IMAGE_FORMAT_ENUMS[name] == value.number
    assert generation.image_format_name(value.number) == name
    assert generation.IMAGE_MEDIA_TYPES[name] == f"image/{name}"
    assert generation.IMAGE_EXTENSIONS[name]
    assert generate_cmd.FORMATS[name] == value.number
    request = pb.GenerateImagesRequest(prompt="x", num_images=1, output_format=value.number)
    assert spec_from_request(request).output_format == name


@pytest.mark.parametrize("value", trainer_pb.MixedPrecision.DESCRIPTOR.values, ids=lambda v: v.name)
def test_mixed_precision_round_trips(value) -> None:
    from likeness.trainer import servicer
    from likeness.trainer.config import MIXED_PRECISIONS

    names = convert.mixed_precision_names(trainer_pb.MixedPrecision.DESCRIPTOR)
    name = names[value.number]
    assert {n: v for v, n in names.items()}[name] == value.number
    assert name in MIXED_PRECISIONS
    # The trainer's own table (trainer/servicer.py) agrees, so it can switch to the shared map.
    assert servicer.PRECISION_FROM_PB[value.number] == name


def _manifest(**changes) -> SubjectModelManifest:
    values = dict(
        model_id="m1",
        tenant="acme",
        identifier="sks",
        class_noun="dog",
        base_model="toy",
        arch="sd15",
        method="lora",
        training_config={"job_id": "job-1"},
        metrics={"loss": 0.5, "flag": True},
        created_at="2025-01-31T12:00:00.123456789Z",
        sample_images=["samples/0.png"],
        weights=["pytorch_lora_weights.safetensors"],
        lora_rank=4,
    )
    return SubjectModelManifest(**(values | changes))


def test_one_subject_model_builder_for_trainer_and_inference() -> None:
    from likeness.inference.repository import LOADED, SubjectStatus
    from likeness.inference.servicer import subject_status_proto

    manifest = _manifest()
    built = convert.subject_model_to_pb(manifest, size_bytes=123)
    assert built.method == types_pb2.TRAINING_METHOD_LORA and built.job_id == "job-1"
    assert dict(built.metrics) == {"loss": 0.5}
    assert list(built.sample_image_keys) == ["tenants/acme/models/m1/samples/0.png"]
    assert built.size_bytes == 123
    # The trainer's dict (the manifest plus size_bytes) builds the same message.
    trainer_dict = manifest.to_dict() | {"size_bytes": 123}
    assert convert.subject_model_to_pb(SubjectModelManifest.from_dict(trainer_dict), size_bytes=123) == built
    status = SubjectStatus("m1", manifest, LOADED, "", 0, 123)
    assert subject_status_proto(status, "acme").model == built


def test_unloaded_subject_reports_the_size_of_its_published_weights(tmp_path: Path) -> None:
    from likeness.inference.subject_files import published_size, stored_size
    from likeness.storage.local import LocalStorage

    storage = LocalStorage(tmp_path)
    manifest = _manifest()
    storage.write_bytes(manifest.weight_keys[0], b"x" * 1000)
    assert stored_size(storage, manifest) == 1000
    assert published_size(manifest, tmp_path / manifest.prefix) == 1000


def test_contact_sheet_reports_its_size(tmp_path: Path) -> None:
    from likeness.storage.layout import dataset_contact_sheet_key
    from likeness.storage.local import LocalStorage
    from likeness.trainer.datasets import DatasetCatalog

    data = contact_sheet_jpeg([("a.png", Image.new("RGB", (64, 48)))])
    width, height = Image.open(io.BytesIO(data)).size
    assert encoded_size(data) == (width, height) != (0, 0)
    storage = LocalStorage(tmp_path)
    storage.write_bytes(dataset_contact_sheet_key("acme", "d1"), data)
    catalog = DatasetCatalog.__new__(DatasetCatalog)
    catalog.storage = storage
    image = catalog.contact_sheet_image("acme", "d1")
    assert (image.width, image.height) == (width, height) and image.data == data


def test_importer_names_wire_fields() -> None:
    from likeness.errors import InvalidArgument
    from likeness.gallery.importer import draft_from_row

    with pytest.raises(InvalidArgument) as error:
        draft_from_row({"prompt": "a cat", "steps": "many"})
    assert error.value.field == "parameters.num_inference_steps"


def test_seed_prompts_carry_no_model_dependent_sizes() -> None:
    from likeness.gallery import templates

    data = json.loads((Path(templates.__file__).parent / "seed_prompts.json").read_text())
    for template in data["templates"]:
        assert not set(template.get("default_params", {})) & templates.MODEL_DEPENDENT_PARAMS, template["template_id"]
