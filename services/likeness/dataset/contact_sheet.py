"""A contact sheet: every prepared image as a labelled thumbnail on one page, for a quick visual check."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

BACKGROUND = (245, 245, 245)
LABEL_COLOUR = (40, 40, 40)
GAP = 8
LABEL_HEIGHT = 14


def contact_sheet(
    images: Sequence[Image.Image | tuple[str, Image.Image]],
    columns: int | None = None,
    thumb: int = 160,
) -> Image.Image:
    """Lay `images` (or (label, image) pairs) out on a grid of `thumb`-px squares.

    `columns` defaults to a near-square grid (at most 6 wide). An empty input gives a single blank tile.
    """
    if thumb < 16:
        raise ValueError(f"thumb must be at least 16 px, got {thumb}")
    items = [item if isinstance(item, tuple) else ("", item) for item in images]
    count = max(1, len(items))
    columns = columns or min(6, math.ceil(math.sqrt(count)))
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    rows = math.ceil(count / columns)
    labelled = any(label for label, _ in items)
    cell_h = thumb + (LABEL_HEIGHT if labelled else 0)
    sheet = Image.new("RGB", (GAP + columns * (thumb + GAP), GAP + rows * (cell_h + GAP)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(items):
        tile = image.convert("RGB")
        tile.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
        x = GAP + (index % columns) * (thumb + GAP)
        y = GAP + (index // columns) * (cell_h + GAP)
        sheet.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
        if label:
            draw.text((x, y + thumb + 1), _fit(draw, label, thumb), fill=LABEL_COLOUR)
    return sheet


def contact_sheet_jpeg(
    images: Sequence[Image.Image | tuple[str, Image.Image]],
    columns: int | None = None,
    thumb: int = 160,
    quality: int = 85,
) -> bytes:
    """The contact sheet encoded as a JPEG."""
    buffer = io.BytesIO()
    contact_sheet(images, columns=columns, thumb=thumb).save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _fit(draw: ImageDraw.ImageDraw, label: str, width: int) -> str:
    """Shorten `label` with an ellipsis until it fits `width` pixels."""
    if draw.textlength(label) <= width:
        return label
    while label and draw.textlength(label + "...") > width:
        label = label[:-1]
    return label + "..."


def encoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded contact sheet, read from its header; (0, 0) for no sheet (empty bytes)."""
    if not data:
        return 0, 0
    with Image.open(io.BytesIO(data)) as image:
        return image.size
