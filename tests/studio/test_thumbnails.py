"""Grid thumbnails: shrunk for the grid, cached per key slot only briefly."""

from __future__ import annotations

import io

from PIL import Image

from likeness.studio import thumbnails
from likeness.studio.thumbnails import GRID_SIDE, ThumbnailCache, shrink


def _webp(side: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((side, side), 64).convert("RGB").save(out, "WEBP", quality=90)
    return out.getvalue()


def test_shrink_makes_grid_sized_webp_and_keeps_small_or_broken_ones() -> None:
    large = _webp(256)
    small = shrink(large)
    with Image.open(io.BytesIO(small)) as image:
        assert image.format == "WEBP" and max(image.size) == GRID_SIDE
    assert len(small) < len(large)
    tiny = _webp(64)
    assert shrink(tiny) == tiny
    assert shrink(b"not an image") == b"not an image"


def test_cache_separates_key_slots_and_expires(monkeypatch) -> None:
    cache = ThumbnailCache()
    cache.put("slot-a", "pr-1", b"a")
    assert cache.get("slot-a", "pr-1") == b"a"
    assert cache.get("slot-b", "pr-1") is None  # another tenant's session never gets it
    monkeypatch.setattr(thumbnails, "CACHE_SECONDS", -1.0)
    cache.put("slot-a", "pr-2", b"b")
    assert cache.get("slot-a", "pr-2") is None
