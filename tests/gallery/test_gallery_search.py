"""Lexical search through the store: relevance order, filters, empty-query listing and page tokens."""

from __future__ import annotations

import base64
import json

import pytest

from likeness.errors import InvalidArgument
from likeness.gallery import templates
from likeness.gallery.search import LexicalRanker, SearchDocument, tokenize
from likeness.gallery.store import PromptStore

PROMPTS = {
    "beach": ("a photo of sks dog on the beach at sunset", ["beach", "pet"], "tiny-sd15"),
    "beach2": ("sks dog running on a sandy beach, beaches of portugal", ["beach"], "tiny-sdxl"),
    "snow": ("sks dog in the snow, winter forest", ["winter", "pet"], "tiny-sd15"),
    "city": ("sks dog on a city street at night, neon lights", ["city"], "tiny-sd15"),
    "studio": ("studio portrait of ohwx man, grey backdrop", ["portrait"], "tiny-sd15"),
}


@pytest.fixture
def filled(store: PromptStore) -> dict[str, str]:
    """The PROMPTS recorded for tenant acme; returns name -> prompt_id."""
    return {
        name: store.record("acme", text, tags=tags, base_model=model).record.prompt_id
        for name, (text, tags, model) in PROMPTS.items()
    }


def ids(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [hit.record.prompt_id for hit in page.results]


def test_tokenize_drops_stopwords_and_placeholder_and_folds_plurals() -> None:
    assert tokenize("A {subject} on the Beaches, with dogs!") == ["beach", "dog"]
    assert tokenize("glass grass bus") == ["glass", "grass", "bus"]


def test_bm25_prefers_rarer_terms_and_repeated_terms() -> None:
    ranker = LexicalRanker()
    documents = [
        SearchDocument("a", "dog on the beach"),
        SearchDocument("b", "dog in the park"),
        SearchDocument("c", "beach beach beach volleyball"),
        SearchDocument("d", "a cat"),
    ]
    scores = dict(zip("abcd", ranker.score("dog beach", documents), strict=True))
    assert scores["a"] > scores["c"] > scores["b"] > 0 and scores["d"] == 0
    assert ranker.score("", documents) == [0.0] * 4


def test_beach_query_ranks_beach_prompts_first(store: PromptStore, filled: dict[str, str]) -> None:
    results = store.search("acme", "beach", include_seeds=False).results
    assert set(ids_of := [hit.record.prompt_id for hit in results]) == {filled["beach"], filled["beach2"]}
    assert all(hit.score > 0 for hit in results) and ids_of[0] == filled["beach2"]  # "beach" twice
    # With the seed collection the tenant's beach prompts still come before any non-beach prompt.
    with_seeds = store.search("acme", "dog beach sunset", page_size=5).results
    assert with_seeds[0].record.prompt_id == filled["beach"]
    assert [hit.score for hit in with_seeds] == sorted((hit.score for hit in with_seeds), reverse=True)


def test_query_without_matches_returns_nothing(store: PromptStore, filled: dict[str, str]) -> None:
    page = store.search("acme", "zeppelin")
    assert page.results == [] and page.next_page_token == ""


def test_tag_and_base_model_filters(store: PromptStore, filled: dict[str, str]) -> None:
    pets = store.search("acme", "", tags=["PET"], include_seeds=False)
    assert set(ids(pets)) == {filled["beach"], filled["snow"]}
    both = store.search("acme", "", tags=["pet", "beach"], include_seeds=False)
    assert ids(both) == [filled["beach"]]
    sdxl = store.search("acme", "dog", base_model="tiny-sdxl", include_seeds=False)
    assert ids(sdxl) == [filled["beach2"]]
    # Seeds are model-agnostic, so they pass any base_model filter; tags filter them like any record.
    seeds = store.search("acme", "", base_model="tiny-sdxl", tags=["dreambench", "accessorization"], page_size=100)
    assert len(seeds.results) == 10 and all(hit.record.builtin for hit in seeds.results)
    with pytest.raises(InvalidArgument) as error:
        store.search("acme", "", tags=["no/slash"])
    assert error.value.field == "tags[0]"


def test_empty_query_lists_most_used_then_newest(store: PromptStore, filled: dict[str, str]) -> None:
    text, tags, model = PROMPTS["snow"]
    store.record("acme", text, tags=tags, base_model=model)  # snow: 2 uses
    page = store.search("acme", "", page_size=100)
    order = ids(page)
    newest_first = [filled[name] for name in ("studio", "city", "beach2", "beach")]
    assert order[:5] == [filled["snow"], *newest_first]
    assert all(hit.record.builtin and hit.score == 0.0 for hit in page.results[5:])


def test_pagination_walks_every_result_once(store: PromptStore, filled: dict[str, str]) -> None:
    everything = ids(store.search("acme", "", page_size=100))
    assert len(everything) > 40  # own records plus the seeds
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = store.search("acme", "", page_size=7, page_token=token)
        seen += ids(page)
        pages += 1
        token = page.next_page_token
        if not token:
            break
        # A token is stable: the same token gives the same page.
        assert ids(store.search("acme", "", page_size=7, page_token=token)) == ids(
            store.search("acme", "", page_size=7, page_token=token)
        )
    assert seen == everything and pages == -(-len(everything) // 7)


def test_records_created_while_paging_do_not_shift_pages(store: PromptStore, filled: dict[str, str]) -> None:
    before = ids(store.search("acme", "dog", page_size=100, include_seeds=False))
    assert len(before) == 4
    first = store.search("acme", "dog", page_size=2, include_seeds=False)
    # A new, highly relevant record would land on the first page of a new search; later pages of the
    # running search come from its snapshot and neither repeat nor skip anything because of it.
    new = store.record("acme", "dog dog dog").record
    rest = store.search("acme", "dog", page_size=10, include_seeds=False, page_token=first.next_page_token)
    assert ids(first) + ids(rest) == before
    assert ids(store.search("acme", "dog", page_size=1, include_seeds=False)) == [new.prompt_id]


@pytest.mark.parametrize(
    "token",
    [
        "not-base64!",
        base64.urlsafe_b64encode(b"plain text").decode(),
        base64.urlsafe_b64encode(
            json.dumps({"v": 1, "o": -3, "s": "2025-01-01T00:00:00Z", "f": "x"}).encode()
        ).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 9, "o": 1}).encode()).decode(),
        "x" * 600,
    ],
)
def test_malformed_page_token(store: PromptStore, token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        store.search("acme", "dog", page_token=token)
    assert error.value.field == "page_token"


def test_token_of_another_search_is_rejected(store: PromptStore, filled: dict[str, str]) -> None:
    token = store.search("acme", "dog", page_size=1).next_page_token
    assert token
    for kwargs in ({"query": "cat"}, {"query": "dog", "tags": ["pet"]}, {"query": "dog", "base_model": "tiny-sdxl"}):
        with pytest.raises(InvalidArgument, match="different search") as error:
            store.search("acme", page_token=token, **kwargs)  # type: ignore[arg-type]
        assert error.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        store.search("globex", "dog", page_token=token)
    # The page size may change between pages.
    assert store.search("acme", "dog", page_size=3, page_token=token).results


@pytest.mark.parametrize(
    ("page_size", "valid"), [(None, True), (0, True), (1, True), (100, True), (-1, False), (101, False)]
)
def test_page_size_bounds(store: PromptStore, page_size: int | None, valid: bool) -> None:
    if valid:
        page = store.search("acme", "", page_size=page_size)
        assert len(page.results) == min(page_size or 20, len(templates.list_templates()))
    else:
        with pytest.raises(InvalidArgument) as error:
            store.search("acme", "", page_size=page_size)
        assert error.value.field == "page_size"


def test_query_length_limit(store: PromptStore) -> None:
    with pytest.raises(InvalidArgument) as error:
        store.search("acme", "dog " * 300)
    assert error.value.field == "query"
