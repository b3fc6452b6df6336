"""The documented storage layout, tenant validation and id generation."""

from __future__ import annotations

import re
import time

import pytest

from likeness.errors import InvalidArgument
from likeness.storage import LocalStorage, validate_key
from likeness.storage import layout as L


def test_every_kind_lives_under_its_tenant() -> None:
    t = "acme"
    assert L.dataset_prefix(t, "ds-1") == "tenants/acme/datasets/ds-1"
    assert L.dataset_images_prefix(t, "ds-1") == "tenants/acme/datasets/ds-1/images"
    assert L.dataset_report_key(t, "ds-1") == "tenants/acme/datasets/ds-1/report.json"
    assert L.dataset_contact_sheet_key(t, "ds-1") == "tenants/acme/datasets/ds-1/contact_sheet.jpg"
    assert L.dataset_manifest_key(t, "ds-1") == "tenants/acme/datasets/ds-1/manifest.json"
    assert L.job_record_key(t, "job-1") == "tenants/acme/jobs/job-1/job.json"
    assert L.job_events_prefix(t, "job-1") == "tenants/acme/jobs/job-1/events"
    assert L.checkpoint_prefix(t, "job-1", 400) == "tenants/acme/jobs/job-1/checkpoints/step-00000400"
    assert L.job_validation_prefix(t, "job-1") == "tenants/acme/jobs/job-1/validation"
    assert L.model_prefix(t, "m-1") == "tenants/acme/models/m-1"
    assert L.model_manifest_key(t, "m-1") == "tenants/acme/models/m-1/manifest.json"
    assert L.model_samples_prefix(t, "m-1") == "tenants/acme/models/m-1/samples"
    assert L.gallery_prompt_key(t, "p-1") == "tenants/acme/gallery/prompts/p-1.json"
    assert L.tenant_prefix(L.DEFAULT_TENANT) == "tenants/default"
    for key in [L.job_record_key(t, "job-1"), L.checkpoint_prefix(t, "job-1", 0), L.gallery_prompt_key(t, "p")]:
        validate_key(key)


def test_checkpoint_names_sort_by_step_and_parse_back() -> None:
    names = [L.checkpoint_prefix("default", "j", step).rsplit("/", 1)[1] for step in (1000, 20, 300)]
    assert sorted(names) == ["step-00000020", "step-00000300", "step-00001000"]
    assert [L.parse_checkpoint_step(name) for name in sorted(names)] == [20, 300, 1000]
    assert L.parse_checkpoint_step("latest") is None
    for bad in (-1, 10**8, 1.0, True):
        with pytest.raises(InvalidArgument):
            L.checkpoint_prefix("default", "j", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("tenant", ["default", "a", "team-7", "0abc", "x" * 63])
def test_valid_tenants(tenant: str) -> None:
    assert L.validate_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "Acme", "-lead", "a_b", "a/b", "..", "x" * 64, "ü", None])
def test_invalid_tenants(tenant: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        L.model_prefix(tenant, "m")  # type: ignore[arg-type]
    assert caught.value.field == "tenant"


@pytest.mark.parametrize("bad_id", ["", "../x", "a/b", "a..b", ".hidden", "-x", "x" * 129])
def test_invalid_resource_ids(bad_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        L.job_prefix("default", bad_id)
    assert caught.value.field == "job_id"


def test_tenants_are_isolated_in_storage(tmp_path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_json(L.job_record_key("alpha", "job-1"), {"t": "alpha"})
    storage.write_json(L.job_record_key("beta", "job-1"), {"t": "beta"})
    assert storage.list_dirs(L.TENANTS_PREFIX) == ["alpha", "beta"]
    assert storage.list_dirs(L.jobs_prefix("alpha")) == ["job-1"]
    assert storage.read_json(L.job_record_key("beta", "job-1")) == {"t": "beta"}


def test_new_id_format_uniqueness_and_time_order() -> None:
    ids = [L.new_id("job") for _ in range(2000)]
    assert all(re.fullmatch(r"job-[0-9a-hjkmnp-tv-z]{26}", value) for value in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "ids from one process are strictly increasing"
    earlier = L.new_id("model")
    time.sleep(0.003)
    later = L.new_id("model")
    assert earlier < later
    assert L.new_id("ds")[:3] == "ds-"
    for bad in ("", "Job", "job-x", "1job", "j" * 17):
        with pytest.raises(InvalidArgument):
            L.new_id(bad)


def test_new_id_time_part_decodes_to_now() -> None:
    value = L.new_id("job")[4:14]
    millis = 0
    for char in value:
        millis = millis * 32 + "0123456789abcdefghjkmnpqrstvwxyz".index(char)
    assert abs(millis / 1000 - time.time()) < 5


def test_class_image_cache_key_is_stable_and_sensitive_to_every_input() -> None:
    base = ("runwayml/sd15", "a photo of a dog", 512, 200)
    key = L.class_image_cache_key(*base)
    assert key == L.class_image_cache_key(*base)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    variants = [
        ("other/model", *base[1:]),
        (base[0], "a photo of a cat", *base[2:]),
        (*base[:2], 768, base[3]),
        (*base[:3], 100),
    ]
    assert len({key, *(L.class_image_cache_key(*v) for v in variants)}) == 5
    assert L.class_images_prefix(key) == f"shared/class-images/{key}"
    with pytest.raises(InvalidArgument):
        L.class_images_prefix("not-a-hash")
    with pytest.raises(InvalidArgument):
        L.class_image_cache_key("m", "  ", 512, 10)
    with pytest.raises(InvalidArgument):
        L.class_image_cache_key("m", "a dog", 0, 10)
