"""Grid thumbnails: the gallery's 256 px WebP thumbnails, made smaller for a grid that shows them at about
180 px (a first visit then weighs a fraction), and kept briefly after a search so the grid's image requests do
not read each thumbnail a second time.

A cache, not state: an entry a replica does not hold (another replica served the search, or it expired) is
fetched with GetPrompt. Entries are keyed by the session's key slot, so one tenant's thumbnails are never
served to another.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict

from PIL import Image

#: Side of the grid's thumbnails: cards are at most ~185 px wide at desktop width (2x screens upscale).
GRID_SIDE = 192
WEBP_QUALITY = 72
CACHE_ENTRIES = 4096
CACHE_SECONDS = 300.0


def shrink(webp: bytes) -> bytes:
    """A GRID_SIDE WebP of a thumbnail (the original when it is no larger, or not decodable)."""
    try:
        with Image.open(io.BytesIO(webp)) as image:
            if max(image.size) <= GRID_SIDE:
                return webp
            image.thumbnail((GRID_SIDE, GRID_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.convert("RGB").save(out, "WEBP", quality=WEBP_QUALITY, method=4)
            return out.getvalue()
    except Exception:
        return webp


class ThumbnailCache:
    """(key slot, prompt id) -> grid thumbnail, for CACHE_SECONDS, at most CACHE_ENTRIES."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, slot: str, prompt_id: str, webp: bytes) -> None:
        with self._lock:
            self._entries[(slot, prompt_id)] = (time.monotonic() + CACHE_SECONDS, webp)
            self._entries.move_to_end((slot, prompt_id))
            while len(self._entries) > CACHE_ENTRIES:
                self._entries.popitem(last=False)

    def get(self, slot: str, prompt_id: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get((slot, prompt_id))
            if entry is None or entry[0] < time.monotonic():
                self._entries.pop((slot, prompt_id), None)
                return None
            return entry[1]
