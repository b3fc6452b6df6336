"""Subject-model and dataset manifests: round trips, validation on construction, corruption on read."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.storage import DatasetManifest, SubjectModelManifest, utc_now_rfc3339
from likeness.storage.manifest import parse_rfc3339


def model_fields(**overrides: Any) -> dict[str, Any]:
    fields = {
        "model_id": "model-01j9z3k8q4m2x7v5t6r3n1p0wd",
        "tenant": "default",
        "identifier": "sks",
        "class_noun": "dog",
        "base_model": "tiny-sd",
        "arch": "sd15",
        "method": "lora",
        "training_config": {"steps": 400, "lr": 1e-4},
        "metrics": {"identity_similarity": 0.71},
        "created_at": "2025-01-31T12:00:00.123Z",
        "sample_images": ["samples/0.png"],
        "weights": ["unet_lora.safetensors"],
        "lora_rank": 8,
    }
    fields.update(overrides)
    return fields


def dataset_fields(**overrides: Any) -> dict[str, Any]:
    fields = {
        "dataset_id": "ds-1",
        "tenant": "default",
        "resolution": 512,
        "image_count": 2,
        "images": ["images/0.png", "images/1.png"],
        "captions": {"images/0.png": "a sks dog on grass"},
        "created_at": "2025-01-31T12:00:00+01:00",
        "source": "upload",
    }
    fields.update(overrides)
    return fields


def test_subject_manifest_roundtrip() -> None:
    manifest = SubjectModelManifest(**model_fields())
    text = manifest.to_json()
    assert json.loads(text)["format_version"] == 1
    assert SubjectModelManifest.from_json(text) == manifest
    assert SubjectModelManifest.from_json(text.encode()) == manifest


def test_full_fine_tune_has_no_rank() -> None:
    manifest = SubjectModelManifest(**model_fields(method="full", lora_rank=None))
    assert SubjectModelManifest.from_json(manifest.to_json()).lora_rank is None
    with pytest.raises(InvalidArgument) as caught:
        SubjectModelManifest(**model_fields(method="full", lora_rank=4))
    assert caught.value.field == "lora_rank"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method": "dreambooth"}, "method"),
        ({"lora_rank": None}, "lora_rank"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"identifier": "two words"}, "identifier"),
        ({"class_noun": ""}, "class_noun"),
        ({"tenant": "Bad_Tenant"}, "tenant"),
        ({"model_id": "../x"}, "model_id"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2025-13-01T00:00:00Z"}, "created_at"),
        ({"weights": []}, "weights"),
        ({"weights": ["../outside.bin"]}, "weights"),
        ({"sample_images": ["a.png", "a.png"]}, "sample_images"),
        ({"metrics": [1, 2]}, "metrics"),
    ],
)
def test_subject_manifest_rejects_bad_values(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        SubjectModelManifest(**model_fields(**overrides))
    assert caught.value.field == field


def test_corrupt_stored_manifest_is_failed_precondition_naming_source_and_field() -> None:
    source = "tenants/default/models/m/manifest.json"
    with pytest.raises(FailedPrecondition, match="not valid JSON"):
        SubjectModelManifest.from_json('{"model_id": ', source=source)
    with pytest.raises(FailedPrecondition, match="expected a JSON object"):
        SubjectModelManifest.from_json("[]", source=source)
    broken = model_fields()
    del broken["weights"], broken["arch"]
    with pytest.raises(FailedPrecondition, match=r"missing required field.*arch, weights") as caught:
        SubjectModelManifest.from_json(json.dumps(broken), source=source)
    assert source in str(caught.value)
    with pytest.raises(FailedPrecondition, match="method: must be one of lora, full"):
        SubjectModelManifest.from_json(json.dumps(model_fields(method="x")), source=source)


def test_newer_format_version_and_unknown_fields() -> None:
    with pytest.raises(FailedPrecondition, match="newer Likeness"):
        SubjectModelManifest.from_json(json.dumps(model_fields(format_version=2)))
    tolerant = SubjectModelManifest.from_json(json.dumps({**model_fields(), "added_later": 1}))
    assert tolerant.identifier == "sks"


def test_dataset_manifest_roundtrip_and_consistency() -> None:
    manifest = DatasetManifest(**dataset_fields())
    assert DatasetManifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(InvalidArgument) as caught:
        DatasetManifest(**dataset_fields(image_count=3))
    assert caught.value.field == "image_count"
    with pytest.raises(InvalidArgument) as caught:
        DatasetManifest(**dataset_fields(captions={"images/9.png": "x"}))
    assert caught.value.field == "captions"
    with pytest.raises(InvalidArgument) as caught:
        DatasetManifest(**dataset_fields(resolution=0))
    assert caught.value.field == "resolution"
    with pytest.raises(FailedPrecondition, match="dataset manifest is corrupt"):
        DatasetManifest.from_json(json.dumps(dataset_fields(images=[], image_count=0)))


def test_rfc3339_helpers() -> None:
    now = utc_now_rfc3339()
    assert now.endswith("Z")
    assert abs(parse_rfc3339(now).timestamp() - time.time()) < 5
    assert parse_rfc3339("2025-01-31T13:00:00+01:00") == parse_rfc3339("2025-01-31T12:00:00Z")
    assert parse_rfc3339("2025-01-31T12:00:00.5Z").microsecond == 500000
