"""A gallery entry's image: checked once when it arrives, kept as sent, and shrunk to a WebP thumbnail for grids."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from likeness.errors import InvalidArgument

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 80
#: Encodings kept as sent, with the file extension and media type they are stored and served under.
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}
MEDIA_TYPES = {extension: media_type for extension, media_type in FORMATS.values()}


@dataclass(frozen=True)
class GalleryImage:
    """A checked image: its bytes as sent, their extension and size, and the thumbnail made from it."""

    data: bytes
    extension: str
    width: int
    height: int
    thumbnail: bytes

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.extension]


def prepare_image(data: bytes, field: str = "image") -> GalleryImage:
    """Check an uploaded image and make its thumbnail; InvalidArgument naming `field` says what to fix."""
    if not data:
        raise InvalidArgument("is empty", field=field)
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(
            f"is {len(data)} bytes; at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB is accepted", field=field
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = image.format or ""
                if kind not in FORMATS:
                    raise InvalidArgument(f"is {kind or 'an unknown format'}; send PNG, JPEG or WebP", field=field)
                width, height = image.size
                if max(width, height) > MAX_IMAGE_SIDE:
                    raise InvalidArgument(
                        f"is {width}x{height}; at most {MAX_IMAGE_SIDE} pixels a side is accepted", field=field
                    )
                image.load()  # decode now: a truncated file fails here, not later while serving it
                thumbnail = make_thumbnail(image)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument("is not a readable PNG, JPEG or WebP image", field=field) from None
    return GalleryImage(data, FORMATS[kind][0], width, height, thumbnail)


def make_thumbnail(image: Image.Image) -> bytes:
    """A WebP of at most THUMBNAIL_SIDE pixels a side, aspect ratio kept."""
    copy = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    copy.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    copy.save(out, format="WEBP", quality=THUMBNAIL_QUALITY, method=4)
    return out.getvalue()
