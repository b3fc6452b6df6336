"""The gallery store's contract, run on SQLite and on a real PostgreSQL server: recording and dedupe, tenancy,
full-text search and its ranking, filters, keyset paging across tiers, images, imports and bad input."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from PIL import Image

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.controlplane.schema import subject_models
from likeness.errors import FailedPrecondition, InvalidArgument, NotFound
from likeness.gallery import store as store_module
from likeness.gallery.planning import TierPlanner, count_matches
from likeness.gallery.query import MatchMode, SearchTerms
from likeness.gallery.records import PromptSource
from likeness.gallery.store import PromptDraft, PromptStore, Scope, SearchFilters


def png(size: tuple[int, int] = (320, 200), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def ids(page) -> list[str]:
    return [hit.record.prompt_id for hit in page.results]


def test_record_dedupes_merges_tags_and_counts_uses(store: PromptStore) -> None:
    first = store.record("acme", "a dog on the beach at sunset", params={"steps": 30, "seed": 4}, tags=["Beach"])
    again = store.record("acme", "a dog  on the beach at sunset ", params={"steps": 30.0, "seed": 4}, tags=["pet"])
    assert not first.existing and again.existing
    assert again.record.prompt_id == first.record.prompt_id
    assert again.record.uses == 2 and again.record.tags == ["beach", "pet"]
    other_params = store.record("acme", "a dog on the beach at sunset", params={"steps": 31})
    assert not other_params.existing
    got = store.get("acme", first.record.prompt_id)
    assert got.params == {"seed": 4, "steps": 30} and got.uses == 2
    # Tags added on reuse are filterable like the first ones.
    found = store.search("acme", "", filters=SearchFilters(tags=["pet"], scope=Scope.OWN))
    assert ids(found) == [first.record.prompt_id]


def test_other_tenants_get_not_found_and_shared_entries_are_visible(store: PromptStore) -> None:
    private = store.record("acme", "a secret lighthouse in a storm").record
    with pytest.raises(NotFound):
        store.get("globex", private.prompt_id)
    assert store.search("globex", "lighthouse storm", filters=SearchFilters(scope=Scope.OWN)).results == []
    assert private.prompt_id not in ids(store.search("globex", "lighthouse storm"))
    shared = store.record("acme", "a public lighthouse in a storm", shared=True).record
    assert store.get("globex", shared.prompt_id).shared
    assert shared.prompt_id in ids(store.search("globex", "lighthouse"))
    assert store.search("globex", "lighthouse", filters=SearchFilters(scope=Scope.OWN)).results == []


def test_seeds_are_shared_and_installing_them_twice_changes_nothing(store: PromptStore) -> None:
    count = store.install_seeds()
    assert count > 20 and store.install_seeds() == count
    page = store.search("acme", "beach", filters=SearchFilters(scope=Scope.SHARED), page_size=50)
    assert page.results and all(hit.record.builtin and hit.record.shared for hit in page.results)


def test_all_words_must_match_with_stemming_and_any_word_is_the_fallback(store: PromptStore) -> None:
    fox = store.record("acme", "a red fox in the snow, watercolor").record
    foxes = store.record("acme", "two foxes playing, watercolor painting").record
    store.record("acme", "a castle on a hill, oil painting")
    assert set(ids(store.search("acme", "watercolor fox"))) == {fox.prompt_id, foxes.prompt_id}
    assert ids(store.search("acme", "foxes snow")) == [fox.prompt_id]
    # No entry has both words: entries with either word come back, still ranked.
    fallback = store.search("acme", "fox castle")
    assert len(fallback.results) == 3 and fallback.results[0].score > 0


def test_popularity_and_recency_lift_equal_matches(store: PromptStore) -> None:
    old = store.record("acme", "a koi pond in a zen garden").record
    popular = store.record("acme", "a koi pond in a zen garden at dawn").record
    for _ in range(20):
        store.record("acme", "a koi pond in a zen garden at dawn")
    newest = store.record("acme", "a koi pond in a zen garden at dusk").record
    order = ids(store.search("acme", "koi pond"))
    assert order.index(popular.prompt_id) < order.index(newest.prompt_id)
    assert order.index(newest.prompt_id) < order.index(old.prompt_id) or len(old.prompt) < len(newest.prompt)


def test_filters(store: PromptStore, clock) -> None:
    a = store.record(
        "acme",
        "a robot in a neon city",
        base_model="sd15",
        tags=["scifi"],
        subject_model_id="sm-1",
        source=PromptSource.GENERATION,  # inference vouches for the subject models it generates with
    )
    b = store.record("acme", "a robot in a forest", base_model="sdxl", tags=["scifi", "nature"]).record
    c = store.record("acme", "a robot made of wood", tags=["nature"]).record  # suits any base model
    cutoff = clock.now + 0.5
    d = store.record("acme", "a robot on the moon", base_model="sd15").record
    query = "robot"
    assert set(ids(store.search("acme", query, filters=SearchFilters(tags=["scifi", "nature"])))) == {b.prompt_id}
    by_model = ids(store.search("acme", query, filters=SearchFilters(base_model="sd15")))
    assert set(by_model) == {a.record.prompt_id, c.prompt_id, d.prompt_id}
    assert ids(store.search("acme", query, filters=SearchFilters(subject_model_id="sm-1"))) == [a.record.prompt_id]
    assert ids(store.search("acme", "", filters=SearchFilters(created_after=cutoff, scope=Scope.OWN))) == [d.prompt_id]
    before = store.search("acme", query, filters=SearchFilters(created_before=cutoff))
    assert d.prompt_id not in ids(before) and len(before.results) == 3
    with pytest.raises(InvalidArgument, match="created_after"):
        store.search("acme", query, filters=SearchFilters(created_after=cutoff, created_before=cutoff - 10))


def test_a_recorded_subject_model_must_be_the_callers_own(store: PromptStore) -> None:
    with store.database.transaction() as connection:
        connection.execute(
            sa.insert(subject_models).values(
                model_id="sm-own", tenant="acme", job_id="job-1", base_model="sd15", identifier="ohwx",
                class_noun="dog", method="lora", create_time=0.0, manifest={},
            )
        )  # fmt: skip
    assert store.record("acme", "a robot with ohwx", subject_model_id="sm-own").record.subject_model_id == "sm-own"
    for tenant, model_id in (("beta", "sm-own"), ("acme", "sm-unknown")):
        with pytest.raises(NotFound, match="subject_model_id"):
            store.record(tenant, "a robot", subject_model_id=model_id)


def test_browse_lists_most_used_then_newest(store: PromptStore) -> None:
    first = store.record("acme", "first prompt").record
    second = store.record("acme", "second prompt").record
    store.record("acme", "first prompt")
    page = store.search("acme", "", filters=SearchFilters(scope=Scope.OWN))
    assert ids(page) == [first.prompt_id, second.prompt_id]
    assert all(hit.score == 0.0 for hit in page.results)


@pytest.mark.parametrize(("query", "walk"), [("", False), ("mountain lake", False), ("mountain lake", True)])
def test_paging_across_tiers_never_repeats_or_skips(store: PromptStore, monkeypatch, query: str, walk: bool) -> None:
    # Small tiers, so that a few hundred entries span many of them: the same code path as 1M entries. On
    # PostgreSQL both ways of finding a tier (walking the key, collecting from GIN) must give the same pages.
    monkeypatch.setattr(store_module, "TIER_SIZE", 16)
    monkeypatch.setattr(TierPlanner, "walk_primary_key", lambda *args: walk)
    drafts = [PromptDraft.validate(f"a mountain lake number {index}", params={"seed": index}) for index in range(230)]
    assert store.import_drafts("acme", drafts) == 230
    expected = {draft.prompt_id("acme") for draft in drafts}
    seen: list[str] = []
    token = None
    while True:
        page = store.search("acme", query, page_size=7, page_token=token, filters=SearchFilters(scope=Scope.OWN))
        seen.extend(ids(page))
        # Entries recorded while paging are left out of later pages (snapshot), not interleaved.
        store.record("acme", f"a mountain lake recorded while paging {len(seen)}")
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and set(seen) == expected


def test_page_tokens_are_tied_to_their_search(store: PromptStore) -> None:
    for index in range(5):
        store.record("acme", f"a sailing ship {index}")
    page = store.search("acme", "ship", page_size=2)
    with pytest.raises(InvalidArgument, match="different search"):
        store.search("acme", "boat", page_token=page.next_page_token)
    with pytest.raises(InvalidArgument, match="different search"):
        store.search("globex", "ship", page_token=page.next_page_token)
    with pytest.raises(InvalidArgument, match="page_token"):
        store.search("acme", "ship", page_token="not-a-token")
    with pytest.raises(InvalidArgument, match="page_token"):
        store.search("acme", "", page_token=page.next_page_token)


@pytest.mark.parametrize("query", ['AND OR NOT "', "*", '"', "()", "the of a", "-- ;", "::*:&|!"])
def test_queries_of_operators_only_are_a_client_error(store: PromptStore, query: str) -> None:
    store.record("acme", "a lighthouse")
    with pytest.raises(InvalidArgument, match="query"):
        store.search("acme", query)


@pytest.mark.parametrize(
    "query",
    ['lighthouse AND "', "lighthouse*", "lighthouse OR NOT", "NEAR(lighthouse", '"lighthouse', "lighthouse'; DROP"],
)
def test_engine_syntax_in_a_query_is_plain_text(store: PromptStore, query: str) -> None:
    entry = store.record("acme", "a lighthouse").record
    page = store.search("acme", query)  # must not raise: nothing reaches the engine as syntax
    assert entry.prompt_id in ids(page)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "bell\x07"}, "prompt"),
        # Parameter errors name the wire fields of RecordPromptRequest, as GenerateImages does.
        ({"prompt": "ok", "params": {"steps": 0}}, "parameters.num_inference_steps"),
        ({"prompt": "ok", "params": {"guidance": 31}}, "parameters.guidance_scale"),
        ({"prompt": "ok", "params": {"seed": 2**63}}, "parameters.seed"),
        ({"prompt": "ok", "params": {"scheduler": "heun"}}, "parameters.scheduler"),
        ({"prompt": "ok", "params": {"sampler": "x"}}, "parameters.sampler"),
        ({"prompt": "ok", "tags": ["bad/tag"]}, "tags[0]"),
        ({"prompt": "ok", "image": b"not an image"}, "image"),
        ({"prompt": "ok", "image": png((5000, 8))}, "image"),
    ],
)
def test_bad_records_name_the_field(store: PromptStore, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.record("acme", **kwargs)
    assert caught.value.field == field


def test_images_are_kept_with_a_webp_thumbnail(store: PromptStore) -> None:
    data = png((640, 400))
    entry = store.record("acme", "a red square", image=data).record
    assert entry.has_image
    image, media_type = store.read_image("acme", entry.prompt_id)
    assert image == data and media_type == "image/png"
    hit = store.search("acme", "red square", with_thumbnails=True).results[0]
    with Image.open(io.BytesIO(hit.thumbnail)) as thumbnail:
        assert thumbnail.format == "WEBP" and max(thumbnail.size) == 256
    with pytest.raises(NotFound):
        store.read_image("globex", entry.prompt_id)
    plain = store.record("acme", "no picture").record
    with pytest.raises(NotFound, match="no image"):
        store.read_image("acme", plain.prompt_id)
    # A reuse without an image keeps the image; one with an image fills a missing one.
    assert store.record("acme", "a red square").record.image_key == entry.image_key
    assert store.record("acme", "no picture", image=png()).record.has_image


def test_import_is_idempotent_and_counts_new_rows(store: PromptStore) -> None:
    drafts = [PromptDraft.validate(f"imported prompt {i}", tags=["batch"]) for i in range(50)]
    assert store.import_drafts("acme", drafts[:30]) == 30
    assert store.import_drafts("acme", drafts) == 20
    assert store.import_drafts("acme", drafts) == 0
    page = store.search("acme", "imported", filters=SearchFilters(tags=["batch"]), page_size=100)
    assert len(page.results) == 50 and all(hit.record.uses == 1 for hit in page.results)


def test_replicas_see_each_others_writes_at_once(make_store) -> None:
    one, two = make_store(), make_store()
    entry = one.record("acme", "a floating island above the clouds").record
    assert ids(two.search("acme", "floating island")) == [entry.prompt_id]
    assert two.record("acme", "a floating island above the clouds").existing
    assert one.get("acme", entry.prompt_id).uses == 2


def test_postgresql_counts_matches_from_the_index(postgres_url, storage) -> None:
    # The count chooses between PostgreSQL's two ways to a tier (SQLite has one).
    database = Database(postgres_url)
    migrate(database)
    store = PromptStore(database, storage)
    for index in range(40):
        store.record("acme", f"a harbour at night {index}" if index % 4 else f"a harbour at dawn {index}")
    with database.read() as connection:
        assert count_matches(connection, SearchTerms.parse("harbour"), MatchMode.ALL) == 40
        assert count_matches(connection, SearchTerms.parse("harbour dawn"), MatchMode.ALL) == 10
    database.dispose()


def test_delete_removes_the_entry_its_files_and_its_index_rows(store: PromptStore, storage) -> None:
    entry = store.record("acme", "a red kite over a meadow", tags=["kite"], image=png()).record
    kept = store.record("acme", "a red kite in a storm").record
    shared = store.record("globex", "a shared kite festival", shared=True).record
    store.install_seeds()
    with pytest.raises(NotFound):
        store.delete("globex", entry.prompt_id)  # another tenant's id: as if it never existed
    with pytest.raises(NotFound):
        store.delete("acme", shared.prompt_id)  # visible to acme, but not acme's to delete
    with pytest.raises(FailedPrecondition, match="built in"):
        store.delete("acme", "seed-context-tropical-beach")
    assert store.get("acme", entry.prompt_id).has_image

    outcome = store.delete("acme", entry.prompt_id)
    assert outcome.files_removed == 2
    assert not storage.exists(entry.image_key) and not storage.exists(entry.thumbnail_key)
    with pytest.raises(NotFound):
        store.get("acme", entry.prompt_id)
    assert ids(store.search("acme", "red kite")) == [kept.prompt_id]  # the full-text index forgot it too
    assert store.search("acme", "", filters=SearchFilters(tags=["kite"])).results == []
    with store.database.read() as connection:
        tag_rows = connection.exec_driver_sql("SELECT count(*) FROM gallery_tags WHERE tag = 'kite'").scalar()
    assert tag_rows == 0
    with pytest.raises(NotFound):
        store.delete("acme", entry.prompt_id)  # twice: NOT_FOUND, nothing else changes
    assert store.get("acme", kept.prompt_id) and store.get("globex", shared.prompt_id)
