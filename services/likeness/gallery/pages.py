"""Page tokens of gallery searches: opaque to clients, tied to one search, carrying the keyset cursor."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

from likeness.errors import InvalidArgument
from likeness.gallery.query import MatchMode

_TOKEN_VERSION = 2
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the search's snapshot time and match mode, and the last row's sort key.

    `after` is (tier bound, position in the tier, row id) for a text query and (uses, created_at, row id) for
    browsing.
    """

    snapshot: float
    mode: MatchMode
    after: tuple[float, ...]


def fingerprint(*parts: Any) -> str:
    """Ties a token to its search (tenant, query and filters; the page size may change between pages)."""
    canonical = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def encode_token(cursor: Cursor, search: str) -> str:
    payload = {"v": _TOKEN_VERSION, "f": search, "s": cursor.snapshot, "m": cursor.mode.value, "a": cursor.after}
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(token: str, search: str) -> Cursor:
    """The cursor in `token`; InvalidArgument (field `page_token`) when malformed or from another search."""
    malformed = InvalidArgument(
        "is not a token returned by a previous search; pass next_page_token unchanged, or omit it for the first page",
        field="page_token",
    )
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise malformed
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise malformed from None
    if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
        raise malformed
    snapshot, mode, after = payload.get("s"), payload.get("m"), payload.get("a")
    if (
        not _is_number(snapshot)
        or mode not in MatchMode._value2member_map_
        or not isinstance(after, list)
        or len(after) != 3
        or not all(_is_number(value) for value in after)
    ):
        raise malformed
    if payload.get("f") != search:
        raise InvalidArgument(
            "belongs to a different search; repeat the same query and filters, or omit the token",
            field="page_token",
        )
    return Cursor(float(cast(float, snapshot)), MatchMode(mode), tuple(after))  # a number: checked above


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
