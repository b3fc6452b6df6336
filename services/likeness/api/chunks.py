"""Cutting bytes into the chunks that streaming RPCs carry (generated images, gallery images)."""

from __future__ import annotations

from collections.abc import Iterator

from likeness.errors import InvalidArgument


def split_chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    """`data` cut into pieces of at most `chunk_bytes` (at least one piece, even for empty data)."""
    if chunk_bytes <= 0:
        raise InvalidArgument(f"must be positive, got {chunk_bytes}", field="chunk_bytes")
    return [data[start : start + chunk_bytes] for start in range(0, len(data), chunk_bytes)] or [b""]


def iter_chunk_fields(data: bytes, chunk_bytes: int) -> Iterator[tuple[int, bool, bytes]]:
    """(chunk_index, last, data) for each chunk of `data`."""
    chunks = split_chunks(data, chunk_bytes)
    for index, chunk in enumerate(chunks):
        yield index, index == len(chunks) - 1, chunk
