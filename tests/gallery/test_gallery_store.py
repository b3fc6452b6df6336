"""PromptStore: recording with validation and dedupe, get, tenant isolation and persistence across replicas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from likeness.errors import InvalidArgument, NotFound
from likeness.gallery.store import SEED_TENANT, PromptStore
from likeness.storage.layout import gallery_prompt_key
from likeness.storage.local import LocalStorage

BEACH = "a photo of sks dog on the beach at sunset"


def test_record_then_get_round_trip(store: PromptStore, storage: LocalStorage) -> None:
    outcome = store.record(
        "acme",
        f"  {BEACH}  ",
        negative_prompt="blurry",
        base_model="tiny-sd15",
        params={"steps": 30, "guidance": 7, "width": 512, "height": 768, "scheduler": "DDIM", "seed": 42},
        tags=["Beach", "pet", "beach"],
        subject_model_id="model-1",
        image_key="tenants/acme/images/1.png",
    )
    record = outcome.record
    assert not outcome.existing
    assert record.prompt == BEACH  # trimmed
    assert record.params == {"guidance": 7.0, "height": 768, "scheduler": "ddim", "seed": 42, "steps": 30, "width": 512}
    assert isinstance(record.params["guidance"], float)
    assert record.tags == ["beach", "pet"]
    assert record.uses == 1 and record.created_at.endswith("Z") and not record.builtin
    assert record.prompt_id.startswith("pr-")
    assert store.get("acme", record.prompt_id) == record
    stored = storage.read_json(gallery_prompt_key("acme", record.prompt_id))
    assert stored["prompt"] == BEACH and stored["tenant"] == "acme"


def test_identical_prompt_is_deduplicated(store: PromptStore) -> None:
    first = store.record("acme", BEACH, params={"steps": 30, "guidance": 7.5}, tags=["beach"])
    # Whitespace, integral floats and key order do not make a different recipe.
    again = store.record("acme", BEACH.replace(" ", "  "), params={"guidance": 7.5, "steps": 30.0}, tags=["dog"])
    assert again.existing and again.record.prompt_id == first.record.prompt_id
    assert again.record.uses == 2
    assert again.record.tags == ["beach", "dog"]
    assert store.get("acme", first.record.prompt_id).uses == 2
    # Any change to the recipe is a new record.
    other_params = store.record("acme", BEACH, params={"steps": 31, "guidance": 7.5})
    other_model = store.record("acme", BEACH, params={"steps": 30, "guidance": 7.5}, base_model="tiny-sdxl")
    other_tenant = store.record("globex", BEACH, params={"steps": 30, "guidance": 7.5})
    ids = {first.record.prompt_id, other_params.record.prompt_id, other_model.record.prompt_id}
    assert len(ids) == 3 and not other_params.existing and not other_model.existing and not other_tenant.existing


def test_dedupe_sees_records_of_another_replica(make_store: Callable[..., PromptStore]) -> None:
    replica_a, replica_b = make_store(), make_store(refresh_interval_s=3600.0)
    replica_b.search("acme", "")  # load b's index before a writes
    created = replica_a.record("acme", BEACH)
    again = replica_b.record("acme", BEACH)
    assert again.existing and again.record.prompt_id == created.record.prompt_id and again.record.uses == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "{subject} at\x00 sea"}, "prompt"),
        ({"negative_prompt": "blurry \x07"}, "negative_prompt"),
        ({"negative_prompt": "x" * 1001}, "negative_prompt"),
        ({"base_model": "m" * 201}, "base_model"),
        ({"params": {"steps": 0}}, "params.steps"),
        ({"params": {"steps": 151}}, "params.steps"),
        ({"params": {"steps": 30.5}}, "params.steps"),
        ({"params": {"steps": True}}, "params.steps"),
        ({"params": {"steps": "30"}}, "params.steps"),
        ({"params": {"guidance": 31}}, "params.guidance"),
        ({"params": {"guidance": float("nan")}}, "params.guidance"),
        ({"params": {"width": 500}}, "params.width"),
        ({"params": {"height": 24}}, "params.height"),
        ({"params": {"height": 2056}}, "params.height"),
        ({"params": {"seed": -1}}, "params.seed"),
        ({"params": {"lora_scale": 2.5}}, "params.lora_scale"),
        ({"params": {"scheduler": "karras"}}, "params.scheduler"),
        ({"params": {"cfg": 7}}, "params.cfg"),
        ({"params": [("steps", 30)]}, "params"),
        ({"tags": "beach"}, "tags"),
        ({"tags": ["ok", "no/slash"]}, "tags[1]"),
        ({"tags": ["ok", ""]}, "tags[1]"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"subject_model_id": "m" * 129}, "subject_model_id"),
    ],
)
def test_record_validation_names_the_field(store: PromptStore, kwargs: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"prompt": BEACH, **kwargs}
    with pytest.raises(InvalidArgument) as error:
        store.record("acme", **arguments)
    assert error.value.field == field
    assert store.search("acme", "", include_seeds=False).results == []  # nothing was written


@pytest.mark.parametrize("tenant", ["", "Acme", "a/b", SEED_TENANT])
def test_invalid_tenant(store: PromptStore, tenant: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        store.record(tenant, BEACH)
    assert error.value.field == "tenant"


def test_get_unknown_and_malformed_ids(store: PromptStore) -> None:
    with pytest.raises(NotFound):
        store.get("acme", "pr-doesnotexist")
    with pytest.raises(InvalidArgument) as error:
        store.get("acme", "../globex/secret")
    assert error.value.field == "prompt_id"


def test_tenant_isolation(store: PromptStore) -> None:
    mine = store.record("acme", "sks dog on the beach", tags=["beach"]).record
    theirs = store.record("globex", "ohwx cat on the beach", tags=["beach"]).record
    with pytest.raises(NotFound):
        store.get("globex", mine.prompt_id)
    acme_ids = {hit.record.prompt_id for hit in store.search("acme", "beach", page_size=100).results}
    globex_ids = {hit.record.prompt_id for hit in store.search("globex", "beach", page_size=100).results}
    assert mine.prompt_id in acme_ids and theirs.prompt_id not in acme_ids
    assert theirs.prompt_id in globex_ids and mine.prompt_id not in globex_ids
    # Both see the shared seed collection, read-only.
    assert "seed-dreambench-beach" in acme_ids and "seed-dreambench-beach" in globex_ids
    seed = store.get("globex", "seed-dreambench-beach")
    assert seed.builtin and seed.uses == 0 and seed.prompt == "a {subject} on the beach"


def test_records_persist_across_store_instances(make_store: Callable[..., PromptStore]) -> None:
    first = make_store()
    created = [first.record("acme", f"sks dog number {i} on the beach").record for i in range(3)]
    restarted = make_store()
    assert restarted.preload() == 3
    for record in created:
        assert restarted.get("acme", record.prompt_id) == record
    found = restarted.search("acme", "beach", include_seeds=False).results
    assert {hit.record.prompt_id for hit in found} == {record.prompt_id for record in created}


def test_other_replicas_records_appear_after_refresh(make_store: Callable[..., PromptStore]) -> None:
    writer = make_store()
    cached_reader = make_store(refresh_interval_s=3600.0)
    fresh_reader = make_store(refresh_interval_s=0.0)
    for reader in (cached_reader, fresh_reader):
        assert reader.search("acme", "", include_seeds=False).results == []
    record = writer.record("acme", "sks dog in the snow").record
    assert [hit.record for hit in fresh_reader.search("acme", "", include_seeds=False).results] == [record]
    # Within its refresh interval a replica's search may lag, but get reads through to storage.
    assert cached_reader.search("acme", "", include_seeds=False).results == []
    assert cached_reader.get("acme", record.prompt_id) == record


def test_corrupt_record_is_skipped(store: PromptStore, storage: LocalStorage) -> None:
    good = store.record("acme", "sks dog in the snow").record
    storage.write_bytes(gallery_prompt_key("acme", "pr-broken"), b"{not json")
    storage.write_json(gallery_prompt_key("acme", "pr-elsewhere"), {**good.to_json(), "prompt_id": "pr-other"})
    restarted = PromptStore(storage)
    assert [hit.record.prompt_id for hit in restarted.search("acme", "", include_seeds=False).results] == [
        good.prompt_id
    ]


def test_returned_records_do_not_alias_the_index(store: PromptStore) -> None:
    record = store.record("acme", BEACH, tags=["beach"]).record
    record.tags.append("mutated")
    record.params["steps"] = 1
    assert store.get("acme", record.prompt_id).tags == ["beach"]
    assert "steps" not in store.get("acme", record.prompt_id).params
