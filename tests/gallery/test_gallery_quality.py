"""Search quality on the project's own prompt collection (likeness.gallery.corpus, CC0): for each query, the
prompts a person would expect appear in the top 10, on both engines."""

from __future__ import annotations

import pytest

from likeness.gallery import corpus
from likeness.gallery.store import PromptDraft, PromptStore

# Hand-written entries among 3,000 generated ones; each query names the entries it must surface.
NEEDLES = {
    "lighthouse-storm": "a lonely lighthouse in a violent storm at night, crashing waves, oil painting",
    "corgi-space": "a corgi puppy wearing an astronaut helmet floating in outer space, digital art",
    "ramen-neon": "a steaming bowl of ramen on a counter in a neon lit alley, cinematic lighting",
    "fox-watercolor": "a sleeping red fox curled up in the snow, soft watercolor illustration",
    "foxes-forest": "three fox cubs playing in a misty forest at dawn, watercolor",
}
QUERIES = {
    "lighthouse storm": {"lighthouse-storm"},
    "corgi astronaut": {"corgi-space"},
    "ramen neon alley": {"ramen-neon"},
    "watercolor foxes": {"fox-watercolor", "foxes-forest"},
    "fox snow": {"fox-watercolor"},
    "sleeping fox": {"fox-watercolor"},
    "crashing waves lighthouse": {"lighthouse-storm"},
}


@pytest.fixture
def filled(store: PromptStore) -> dict[str, str]:
    drafts = [PromptDraft.validate(s.prompt, params=s.params, tags=s.tags) for s in corpus.generate(3000, seed=7)]
    store.import_drafts("acme", drafts)
    return {name: store.record("acme", prompt).record.prompt_id for name, prompt in NEEDLES.items()}


@pytest.mark.parametrize(("query", "expected"), QUERIES.items())
def test_expected_prompts_are_in_the_top_10(store: PromptStore, filled: dict[str, str], query, expected) -> None:
    top = [hit.record.prompt_id for hit in store.search("acme", query, page_size=10).results]
    missing = {name for name in expected if filled[name] not in top}
    assert not missing, f"{query!r}: {missing} not in the top 10"


def test_generated_collection_is_deterministic_and_varied() -> None:
    first = [s.prompt for s in corpus.generate(2000)]
    assert first[:5] == [s.prompt for s in corpus.generate(5)]
    assert len(set(first)) > 1990
