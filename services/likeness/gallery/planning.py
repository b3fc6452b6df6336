"""How a PostgreSQL search walks its tier: chosen from the count of its matches in the GIN index.

A tier is the TIER_SIZE newest matches of a query. PostgreSQL can find them two ways: walk the primary key
backwards and test each row (cost grows with rows / frequency: cheap for common words), or collect every match
from the GIN index and sort by id (cost grows with the match count: cheap for rare words). Its planner estimates
a multi-word query's matches as if the words were independent, which they are not in prompts ("studio
ghibli"), and then walks the wrong way: measured 4x slower on a million prompts. So the store picks the way
itself: it counts the matches with the GIN index alone (the bitmap index scan of an EXPLAIN ANALYZE, which reads
no table rows) and compares the count with the point where both ways cost the same.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from likeness.gallery.query import MatchMode, SearchTerms

REFRESH_SECONDS = 300.0
#: Measured on 1M prompts (PostgreSQL 15): a backward primary-key walk tests a row in about 0.35 us, a GIN
#: bitmap scan fetches a match in about 2 us; their costs meet at sqrt(0.175 * tier * rows) matches.
WALK_COST_PER_ROW = 0.35
BITMAP_COST_PER_MATCH = 2.0


@dataclass
class TierPlanner:
    """Chooses the way to a tier. The table's row count (pg_class.reltuples, kept by ANALYZE) is cached per
    process and refreshed every REFRESH_SECONDS; the match count is taken per search."""

    rows: float = 0.0
    loaded_at: float = -math.inf
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _row_count(self, connection: Connection) -> float:
        with self.lock:
            if time.monotonic() - self.loaded_at > REFRESH_SECONDS:
                rows = connection.execute(
                    sa.text("SELECT reltuples FROM pg_class WHERE relname = 'gallery_prompts'")
                ).scalar()
                self.rows = max(float(rows or 0), 0.0)
                self.loaded_at = time.monotonic()
            return self.rows

    def walk_primary_key(self, connection: Connection, terms: SearchTerms, mode: MatchMode, tier: int) -> bool:
        """True when walking the primary key is the cheaper way to find the tier's matches."""
        rows = self._row_count(connection)
        if rows <= 0:
            return False  # never analysed: a small table, where collecting every match is cheap
        crossover = math.sqrt(WALK_COST_PER_ROW / BITMAP_COST_PER_MATCH * tier * rows)
        return count_matches(connection, terms, mode) > crossover


def count_matches(connection: Connection, terms: SearchTerms, mode: MatchMode) -> int:
    """How many rows match, from the GIN index alone: the row count of the bitmap index scan that collects a
    query's matches (a few milliseconds even for a word in every prompt; the heap is not read)."""
    # Sequential and plain index scans off, so the plan is the bitmap one whose index scan does the counting;
    # the transaction's own settings come back afterwards.
    saved = connection.execute(
        sa.text("SELECT current_setting('enable_seqscan'), current_setting('enable_indexscan')")
    ).one()
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
    try:
        plan = connection.execute(
            sa.text(
                "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT 1 FROM gallery_prompts p "
                "WHERE p.search_vector @@ to_tsquery('english', :match) LIMIT 1"
            ),
            {"match": terms.tsquery(mode)},
        ).scalar()
    finally:
        connection.execute(sa.text("SELECT set_config('enable_seqscan', :value, true)"), {"value": saved[0]})
        connection.execute(sa.text("SELECT set_config('enable_indexscan', :value, true)"), {"value": saved[1]})
    assert plan is not None  # EXPLAIN always returns its plan row
    if isinstance(plan, str):
        plan = json.loads(plan)
    node = _find_node(plan[0]["Plan"], "Bitmap Index Scan")
    return int(node["Actual Rows"]) if node is not None else 0


def _find_node(node: dict, node_type: str) -> dict | None:
    if node.get("Node Type") == node_type:
        return node
    for child in node.get("Plans", []):
        found = _find_node(child, node_type)
        if found is not None:
            return found
    return None
