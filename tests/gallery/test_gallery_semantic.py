"""Semantic search: embeddings stored once by the backfill, an HNSW index per replica, hybrid ranking."""

from __future__ import annotations

import os
from typing import Any

import pytest
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedder ships inside a package; nothing is fetched

from likeness.controlplane.schema import gallery_embeddings
from likeness.gallery.semantic import Embedder, SemanticSearch, load_bundled_model
from likeness.gallery.store import PromptStore, Scope, SearchFilters


@pytest.fixture(scope="session")
def minilm() -> Any:
    return load_bundled_model()


class CountingEmbedder(Embedder):
    def __init__(self, model: Any) -> None:
        super().__init__(lambda: model)
        self.texts = 0

    def encode(self, texts):
        self.texts += len(texts)
        return super().encode(texts)


def test_semantic_neighbours_without_shared_words_rank_with_text_matches(database, storage, clock, minilm) -> None:
    embedder = CountingEmbedder(minilm)
    semantic = SemanticSearch(database, embedder)
    store = PromptStore(database, storage, clock=clock, semantic=semantic)
    puppy = store.record("acme", "a golden retriever puppy playing in the grass").record
    store.record("acme", "a steam locomotive crossing a bridge")
    store.record("globex", "a small dog asleep on a sofa")  # another tenant's: never returned to acme
    semantic.catch_up()
    assert embedder.texts == 3
    page = store.search("acme", "young dog")  # no entry has "young" and "dog" in it
    assert [hit.record.prompt_id for hit in page.results] == [puppy.prompt_id]
    assert store.search("acme", "dog", filters=SearchFilters(scope=Scope.SHARED)).results == []

    # Embeddings are computed once: a new replica follows the stored vectors and embeds nothing but queries.
    fresh = CountingEmbedder(minilm)
    replica = SemanticSearch(database, fresh)
    replica.catch_up()
    assert fresh.texts == 0 and len(replica.index) == 3
    with database.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(gallery_embeddings)).scalar() == 3


def test_text_search_works_while_the_index_is_empty(database, storage, clock, minilm) -> None:
    store = PromptStore(database, storage, clock=clock, semantic=SemanticSearch(database, Embedder(lambda: minilm)))
    entry = store.record("acme", "a lighthouse at dawn").record
    assert [hit.record.prompt_id for hit in store.search("acme", "lighthouse").results] == [entry.prompt_id]
