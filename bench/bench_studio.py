"""Likeness Studio in headless Chromium on the million-prompt gallery: how soon an instant search shows its first
thumbnails, and what the Discover page weighs on a first visit.

The gallery is bench_gallery's (its CSV writer and queries, imported the same way: 1,000,000 prompts of
likeness.gallery.corpus as one shared collection), plus prompts recorded WITH images whose text matches each of
bench_gallery's 20 queries, so every search has thumbnails to show (imported rows have none). The real gallery
service (EmbeddedServer, the full interceptor chain on 127.0.0.1) and the Studio (StudioServer, waitress,
`auth=none`) serve it; Debian's /usr/bin/chromium drives the pages through /usr/bin/chromedriver.

* `studio.discover_first_results_ms`: on /discover, the query is set into `#q` and an `input` event dispatched
  in the page (performance.now() taken right before); the end is the first
  `#results[data-query=q] img.thumb` with `complete && naturalWidth > 0`, then one requestAnimationFrame. The
  Studio's 120 ms input debounce is inside the figure. One warm-up round of all queries, then 2 timed rounds
  with the browser cache cleared before each search (so thumbnails really travel); median, p95 in the note.
* `studio.page_weight_kb`: a fresh browser profile opens /discover?q=...; once loaded, the lazy thumbnails in
  the first viewport painted and the network quiet, the sum of the navigation entry's and every resource
  entry's transferSize (encodedBodySize where that is 0), in KiB.

Run: `python bench/bench_studio.py [--rows N]` (prints the figures) or import `run()`.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_gallery import QUERIES, p95, write_csv  # noqa: E402
from chromium import start_chromium  # noqa: E402

from likeness.controlplane.database import Database  # noqa: E402
from likeness.controlplane.migrate import migrate  # noqa: E402
from likeness.gallery.importer import import_file  # noqa: E402
from likeness.gallery.store import PromptStore  # noqa: E402
from likeness.server.embedded import EmbeddedServer  # noqa: E402
from likeness.server.settings import Settings  # noqa: E402
from likeness.storage.local import LocalStorage  # noqa: E402
from likeness.studio.server import StudioServer  # noqa: E402

#: Prompts recorded with an image per query (20 queries: 3,000 images), from a pool of distinct pictures.
IMAGES_PER_QUERY = 150
IMAGE_POOL = 64
TIMED_ROUNDS = 2
WEIGHT_QUERY = "watercolor fox"


def _log(message: str) -> None:
    print(f"  studio: {message}", file=sys.stderr, flush=True)


# ---- the gallery ------------------------------------------------------------------------------------------


def picture(seed: int) -> bytes:
    """A 512 px JPEG with detail at every scale (colour fields, texture, grain), so its 256 px WebP thumbnail
    weighs what a detailed generated image's does (about 14 KB) rather than the few hundred bytes of a flat
    colour."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((512, 512, 3), np.float32)
    for size, amplitude in ((4, 1.0), (16, 0.6), (64, 0.4), (128, 0.4), (512, 0.2)):
        layer = rng.random((size, size, 3), dtype=np.float32)
        if size < 512:
            image = Image.fromarray((layer * 255).astype(np.uint8)).resize((512, 512), Image.Resampling.BICUBIC)
            layer = np.asarray(image, np.float32) / 255
        pixels += amplitude * (layer - 0.5)
    out = io.BytesIO()
    Image.fromarray((np.clip(pixels / 2 + 0.5, 0, 1) * 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def build_gallery(work: Path, rows: int) -> tuple[Settings, int]:
    """bench_gallery's imported collection of `rows` prompts plus the prompts with images; the settings to
    serve it and how many entries have an image."""
    source = work / "prompts.csv"
    write_csv(source, rows)
    database_url = f"sqlite:///{work / 'likeness.db'}"
    database = Database(database_url)
    migrate(database)
    store = PromptStore(database, LocalStorage(work / "storage"))
    began = time.perf_counter()
    report = import_file(store, source, tenant="public", shared=True)
    assert report.imported == rows, report
    _log(f"imported {rows:,} prompts in {time.perf_counter() - began:.0f} s")
    began = time.perf_counter()
    pool = [picture(seed) for seed in range(IMAGE_POOL)]
    recorded = 0
    for index in range(IMAGES_PER_QUERY):
        for number, query in enumerate(QUERIES):
            # Newest rows form a search's first tier, and these short prompts rank at its top: the first page
            # of each query is entries with images, as in a gallery of generations.
            image = pool[(index * len(QUERIES) + number) % IMAGE_POOL]
            store.record("public", f"{query}, study {index + 1}", image=image, shared=True)
            recorded += 1
    database.dispose()
    _log(f"recorded {recorded:,} prompts with images in {time.perf_counter() - began:.0f} s")
    settings = Settings(
        storage_url=str(work / "storage"),
        cache_dir=str(work / "cache"),
        database_url=database_url,
        auth="none",
        studio_secret="bench-studio-secret-not-for-production",
    )
    return settings, recorded


# ---- the browser ------------------------------------------------------------------------------------------


def chromium(log_path: Path):
    """A fresh headless Chromium (new temporary profile, empty cache), as the Studio's browser tests start it."""
    return start_chromium(log_path, page_load_timeout=60.0)


# Types `query` into #q the way an input event arrives, and reports (ms after the event) when the results HTML
# was in (#results[data-query] set), when the first thumbnail of those results was decoded, and the first frame
# after that; plus the Resource Timing of the results fetch and of that thumbnail.
SEARCH_SCRIPT = """
const query = arguments[0], done = arguments[arguments.length - 1];
const input = document.getElementById("q"), results = document.getElementById("results");
let resultsAt = null, finished = false, t0 = 0;
const watcher = new MutationObserver(() => {
  if (resultsAt === null && results.dataset.query === query) resultsAt = performance.now() - t0;
});
watcher.observe(results, {attributes: true, attributeFilter: ["data-query"]});
function firstPainted() {
  if (results.dataset.query !== query) return null;
  for (const img of results.querySelectorAll("img.thumb")) if (img.complete && img.naturalWidth > 0) return img;
  return null;
}
function timing(url) {
  const entry = performance.getEntriesByName(new URL(url, location.href).href).pop();
  return entry ? {total: entry.responseEnd - entry.startTime, wait: entry.responseStart - entry.requestStart} : null;
}
function finish(outcome) {
  finished = true;
  watcher.disconnect();
  document.removeEventListener("load", check, true);
  outcome.cards = results.querySelectorAll(".card").length;
  outcome.thumbs = results.querySelectorAll("img.thumb").length;
  outcome.results = resultsAt;
  outcome.resultsFetch = timing("/discover/results?q=" + encodeURIComponent(query));
  done(outcome);
}
function check() {
  if (finished) return;
  const img = firstPainted();
  if (img === null) return;
  finished = true;
  const decoded = performance.now() - t0;
  requestAnimationFrame(() => {
    const painted = performance.now() - t0;
    finish({painted, decoded, thumbFetch: timing(img.src)});
  });
}
function poll() { if (!finished) { check(); requestAnimationFrame(poll); } }
document.addEventListener("load", check, true);  // capture: an img's load event does not bubble
setTimeout(() => { if (!finished) finish({error: "no thumbnail painted within 20 s"}); }, 20000);
t0 = performance.now();
input.value = query;
input.dispatchEvent(new Event("input", {bubbles: true}));
requestAnimationFrame(poll);
"""

# Waits for the first load to settle (the first viewport's thumbnails painted, no new resource for 1 s) and sums
# the bytes of the navigation and of every resource, by kind.
WEIGHT_SCRIPT = """
const done = arguments[arguments.length - 1];
const started = performance.now();
let count = -1, stableSince = 0;
function inView(img) {
  const box = img.getBoundingClientRect();
  return box.bottom > 0 && box.top < innerHeight && box.right > 0 && box.left < innerWidth;
}
function bytes(entry) { return entry.transferSize || entry.encodedBodySize || 0; }
function settle() {
  const visible = [...document.querySelectorAll("#results img.thumb")].filter(inView);
  const painted = visible.every((img) => img.complete && img.naturalWidth > 0);
  const entries = performance.getEntriesByType("resource");
  const now = performance.now();
  if (entries.length !== count || entries.some((e) => e.responseEnd === 0)) { count = entries.length; stableSince = now; }
  if (!(painted && now - stableSince >= 1000) && now - started < 30000) { setTimeout(settle, 100); return; }
  const navigation = performance.getEntriesByType("navigation")[0];
  const kinds = {html: bytes(navigation), static: 0, thumbs: 0, other: 0};
  const inViewSrc = new Set(visible.map((img) => img.src));
  let thumbCount = 0, viewportThumbs = 0;
  const others = [];
  for (const entry of entries) {
    const path = new URL(entry.name).pathname;
    if (path.startsWith("/thumbs/")) {
      kinds.thumbs += bytes(entry); thumbCount++;
      if (inViewSrc.has(entry.name)) viewportThumbs += bytes(entry);
    }
    else if (path.startsWith("/static/")) kinds.static += bytes(entry);
    else { kinds.other += bytes(entry); others.push(path); }
  }
  done({kinds, thumbCount, viewportThumbs, others, visible: visible.length, painted, resources: entries.length,
        cards: document.querySelectorAll("#results .card").length,
        settledAfter: now - started});
}
settle();
"""


def page_weight(base: str, work: Path) -> dict:
    driver = chromium(work / "chromedriver-weight.log")
    try:
        driver.get(f"{base}/discover?q={quote(WEIGHT_QUERY)}")
        outcome = driver.execute_async_script(WEIGHT_SCRIPT)
    finally:
        driver.quit()
    assert outcome["painted"] and outcome["visible"] > 0, outcome
    return outcome


def search_timings(base: str, work: Path) -> tuple[list[dict], int]:
    """One warm-up round of every query, then TIMED_ROUNDS timed rounds; the timed outcomes and the warm-up
    count."""
    driver = chromium(work / "chromedriver-search.log")
    try:
        driver.get(f"{base}/discover")
        driver.find_element("css selector", "#q")
        timed = []
        for round_ in range(TIMED_ROUNDS + 1):
            for query in QUERIES:
                if round_ > 0:
                    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
                driver.execute_script("window.scrollTo(0, 0); performance.clearResourceTimings();")
                outcome = driver.execute_async_script(SEARCH_SCRIPT, query)
                assert "error" not in outcome, (query, outcome)
                outcome["query"] = query
                if round_ > 0:
                    timed.append(outcome)
                time.sleep(0.3)  # let the rest of this page's thumbnails arrive before the next search
        return timed, len(QUERIES)
    finally:
        driver.quit()


def run(rows: int = 1_000_000) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="likeness-studio-bench-"))
    try:
        settings, with_images = build_gallery(work, rows)
        with EmbeddedServer(settings, ["gallery"]) as services:
            studio = StudioServer(settings, services.address, host="127.0.0.1", port=0).start()
            try:
                base = studio.url.rstrip("/")
                weight = page_weight(base, work)
                timed, warmups = search_timings(base, work)
            finally:
                studio.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    painted = [t["painted"] for t in timed]
    median = statistics.median
    results_in = median(t["results"] for t in timed)
    results_fetch = median(t["resultsFetch"]["total"] for t in timed if t["resultsFetch"])
    results_wait = median(t["resultsFetch"]["wait"] for t in timed if t["resultsFetch"])
    thumb_fetch = median(t["thumbFetch"]["total"] for t in timed if t["thumbFetch"])
    kinds = weight["kinds"]
    total_kb = sum(kinds.values()) / 1024
    slowest = max(timed, key=lambda t: t["painted"])
    return [
        {
            "name": "studio.discover_first_results_ms",
            "value": round(median(painted), 1),
            "unit": "ms",
            "goal": "< 300",
            "note": f"headless Chromium, {len(timed)} instant searches ({len(QUERIES)} queries x {TIMED_ROUNDS}, "
            f"cache cleared, after {warmups} warm-up), input event to first thumbnail painted: median, p95 "
            f"{p95(painted):.0f} ms (slowest {slowest['painted']:.0f} ms, {slowest['query']!r}); includes the "
            f"120 ms debounce; results HTML in at {results_in:.0f} ms (fetch {results_fetch:.0f} ms, server "
            f"{results_wait:.0f} ms), first thumbnail fetch {thumb_fetch:.0f} ms; {rows:,} prompts, "
            f"{with_images:,} with images",
        },
        {
            "name": "studio.page_weight_kb",
            "value": round(total_kb, 1),
            "unit": "KB",
            "goal": "< 300",
            "note": f"first load of /discover?q={quote(WEIGHT_QUERY)}, fresh profile, all assets (KiB "
            f"transferred): HTML {kinds['html'] / 1024:.1f}, CSS+JS {kinds['static'] / 1024:.1f}, "
            f"{weight['thumbCount']} thumbnails {kinds['thumbs'] / 1024:.1f} "
            f"({weight['visible']} in the first viewport: {weight['viewportThumbs'] / 1024:.1f}), other "
            f"{kinds['other'] / 1024:.1f} ({', '.join(sorted(set(weight['others']))) or 'none'}); "
            f"{weight['cards']} cards shown",
        },
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    started = time.perf_counter()
    for figure in run(parser.parse_args().rows):
        print(f"{figure['name']}: {figure['value']} {figure['unit']} (goal {figure['goal']}) {figure['note']}")
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)
