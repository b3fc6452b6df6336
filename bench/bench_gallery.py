"""Gallery at a million prompts: import rate, search p95 through gRPC on SQLite and PostgreSQL, a new replica's
first answer, and the service against a bare FTS5 query on the same file.

The prompts are the project's own collection (likeness.gallery.corpus, CC0), 1,000,000 of them, written to a
DiffusionDB-style CSV and imported with `likeness prompts import`'s code path as one shared collection.
Queries: 20 varied searches, from rare phrases to words in a third of all prompts; each is run once to warm
up and then measured 3 times, p95 over the 60 timings.

Run: `python bench/bench_gallery.py [--rows N]` (prints the figures) or import `run()`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from likeness.controlplane.database import Database  # noqa: E402
from likeness.controlplane.migrate import migrate  # noqa: E402
from likeness.gallery import corpus  # noqa: E402
from likeness.gallery.importer import import_file  # noqa: E402
from likeness.gallery.service import GalleryComponent  # noqa: E402
from likeness.gallery.store import PromptStore  # noqa: E402
from likeness.server.settings import Settings  # noqa: E402
from likeness.server.testing import serve_components  # noqa: E402
from likeness.storage.local import LocalStorage  # noqa: E402
from likeness_client.v1 import gallery_service_pb2 as pb  # noqa: E402
from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc  # noqa: E402

QUERIES = [
    "portrait",
    "dragon",
    "watercolor fox",
    "cyberpunk city night",
    "oil painting of an old fisherman",
    "cat in the snow",
    "astronaut on the moon",
    "samurai",
    "highly detailed",
    "studio ghibli",
    "sunset beach",
    "neon",
    "castle in a misty forest",
    "koi fish watercolor",
    "robot",
    "bokeh",
    "pixel art",
    "vintage car rainy street",
    "lavender field",
    "steampunk inventor in a library",
]
REPEATS = 3


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "negative_prompt", "step", "cfg", "sampler", "seed", "width", "height", "tags"])
        for index, sample in enumerate(corpus.generate(rows)):
            p = sample.params
            writer.writerow(
                [
                    sample.prompt,
                    sample.negative_prompt,
                    p["steps"],
                    p["guidance"],
                    (index % 8) + 1,
                    p["seed"],
                    p["width"],
                    p["height"],
                    ";".join(sample.tags),
                ]
            )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


async def grpc_search_timings(settings: Settings) -> tuple[float, list[float]]:
    """Seconds from a new replica's start to its first search answer, then every query's latency in ms."""
    started = time.perf_counter()
    component = GalleryComponent(settings)
    async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = pb_grpc.GalleryServiceStub(channel)
        await stub.SearchPrompts(pb.SearchPromptsRequest(query=QUERIES[0]))
        cold = time.perf_counter() - started
        for query in QUERIES:
            await stub.SearchPrompts(pb.SearchPromptsRequest(query=query))
        timings = []
        for _ in range(REPEATS):
            for query in QUERIES:
                begin = time.perf_counter()
                response = await stub.SearchPrompts(pb.SearchPromptsRequest(query=query, page_size=20))
                timings.append((time.perf_counter() - begin) * 1000)
                assert response.results, query
    return cold, timings


PAGED_QUERY = "lavender field"


async def page_through(settings: Settings, query: str) -> tuple[list[str], float]:
    """Every prompt id of a search, page after page of 100, and the seconds it took."""
    component = GalleryComponent(settings)
    seen: list[str] = []
    async with serve_components([component]) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = pb_grpc.GalleryServiceStub(channel)
        begin, token = time.perf_counter(), ""
        while True:
            page = await stub.SearchPrompts(pb.SearchPromptsRequest(query=query, page_size=100, page_token=token))
            seen.extend(result.prompt.prompt_id for result in page.results)
            token = page.next_page_token
            if not token:
                return seen, time.perf_counter() - begin


def expected_matches(path: Path, query: str) -> set[str]:
    from likeness.gallery.query import MatchMode, SearchTerms

    connection = sqlite3.connect(path)
    rows = connection.execute(
        "SELECT p.prompt_id FROM gallery_fts JOIN gallery_prompts p ON p.id = gallery_fts.rowid "
        "WHERE gallery_fts MATCH ?",
        (SearchTerms.parse(query).fts5(MatchMode.ALL),),
    ).fetchall()
    connection.close()
    return {row[0] for row in rows}


def bare_fts5_timings(path: Path) -> list[float]:
    from likeness.gallery.query import MatchMode, SearchTerms

    connection = sqlite3.connect(path)
    sql = "SELECT rowid FROM gallery_fts WHERE gallery_fts MATCH ? ORDER BY rank LIMIT 20"
    for query in QUERIES:
        connection.execute(sql, (SearchTerms.parse(query).fts5(MatchMode.ALL),)).fetchall()
    timings = []
    for _ in range(REPEATS):
        for query in QUERIES:
            begin = time.perf_counter()
            connection.execute(sql, (SearchTerms.parse(query).fts5(MatchMode.ALL),)).fetchall()
            timings.append((time.perf_counter() - begin) * 1000)
    connection.close()
    return timings


def run(rows: int = 1_000_000) -> list[dict]:
    from pg_server import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="likeness-gallery-bench-"))
    source = work / "prompts.csv"
    write_csv(source, rows)
    figures = []
    sqlite_path = work / "likeness.db"
    storage = LocalStorage(work / "storage")
    database = Database(f"sqlite:///{sqlite_path}")
    migrate(database)
    begin = time.perf_counter()
    report = import_file(PromptStore(database, storage), source, tenant="public", shared=True)
    seconds = time.perf_counter() - begin
    database.dispose()
    assert report.imported == rows, report
    figures.append(
        {
            "name": "gallery.import_rows_per_second",
            "value": round(rows / seconds),
            "unit": "rows/s",
            "goal": "> 20000",
            "note": f"{rows:,} CSV rows into SQLite, validation in a second process",
        }
    )
    settings = Settings(
        storage_url=str(work / "storage"), cache_dir=str(work / "cache"), database_url=f"sqlite:///{sqlite_path}"
    )
    cold, timings = asyncio.run(grpc_search_timings(settings))
    bare = bare_fts5_timings(sqlite_path)
    paged, paging_seconds = asyncio.run(page_through(settings, PAGED_QUERY))
    expected = expected_matches(sqlite_path, PAGED_QUERY)
    repeated = len(paged) - len(set(paged))
    missing = len(expected - set(paged)) + len(set(paged) - expected)
    service_p95 = p95(timings)
    figures += [
        {
            "name": "gallery.search_p95_ms_1m",
            "value": round(service_p95, 2),
            "unit": "ms",
            "goal": "< 50",
            "note": f"20 queries x {REPEATS} through gRPC, SQLite FTS5, {rows:,} prompts",
        },
        {
            "name": "gallery.cold_start_seconds_1m",
            "value": round(cold, 2),
            "unit": "s",
            "goal": "< 5",
            "note": "new replica: migrate check, seeds, server start, first search answered",
        },
        {
            "name": "gallery.vs_fts5_p95_ratio",
            "value": round(service_p95 / p95(bare), 2),
            "unit": "x",
            "goal": "< 5",
            "note": f"bare FTS5 'ORDER BY rank LIMIT 20' p95 {p95(bare):.1f} ms on the same file",
        },
        {
            "name": "gallery.paging_1m_repeats_or_gaps",
            "value": repeated + missing,
            "unit": "entries",
            "goal": "<= 0",
            "note": f"paged all {len(expected):,} matches of {PAGED_QUERY!r} by 100 through gRPC in "
            f"{paging_seconds:.1f} s: {repeated} repeated, {missing} missing or extra",
        },
    ]
    # Sized like a real database server (the test default of 128 MB shared buffers holds 1/6 of the table).
    server = PostgresServer(settings=["shared_buffers=2GB", "effective_cache_size=8GB", "work_mem=64MB"]).start()
    try:
        url = server.fresh_database("gallery_bench")
        database = Database(url)
        migrate(database)
        import_file(PromptStore(database, storage), source, tenant="public", shared=True)
        with database.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE gallery_prompts")
            connection.commit()
        database.dispose()
        pg_settings = Settings(storage_url=str(work / "storage"), cache_dir=str(work / "cache"), database_url=url)
        _, pg_timings = asyncio.run(grpc_search_timings(pg_settings))
        figures.append(
            {
                "name": "gallery.search_p95_ms_1m_postgres",
                "value": round(p95(pg_timings), 2),
                "unit": "ms",
                "goal": "< 50",
                "note": f"same queries through gRPC, PostgreSQL 15 tsvector + GIN, {rows:,} prompts",
            }
        )
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    for figure in run(parser.parse_args().rows):
        print(f"{figure['name']}: {figure['value']} {figure['unit']} (goal {figure['goal']}) {figure['note']}")
