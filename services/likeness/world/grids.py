"""Sample grids: rows of small pictures with a label on the left, enlarged with nearest-neighbour so 32 px
pictures stay crisp in docs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
GAP = 4
LABEL_WIDTH = 230


def sample_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], scale: int = 3) -> Image.Image:
    """One row per (label, pictures); every picture enlarged `scale` times."""
    if not rows:
        raise ValueError("a grid needs at least one row")
    tile = max(image.width for _, images in rows for image in images) * scale if any(r[1] for r in rows) else 32
    columns = max(len(images) for _, images in rows)
    width = LABEL_WIDTH + columns * (tile + GAP) + GAP
    height = GAP + len(rows) * (tile + GAP)
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for row_index, (label, images) in enumerate(rows):
        top = GAP + row_index * (tile + GAP)
        draw.text((GAP, top + tile // 2 - 6), label, fill=TEXT)
        for column, image in enumerate(images):
            enlarged = image.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(enlarged, (LABEL_WIDTH + column * (tile + GAP), top))
    return grid


def save_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], path: str | Path, scale: int = 3) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_grid(rows, scale).save(path, "PNG", optimize=True)
    return path
