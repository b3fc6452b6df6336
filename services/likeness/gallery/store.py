"""The prompt gallery's store: records prompts in shared storage and searches them per tenant.

Each record is one JSON object at `tenants/{tenant}/gallery/prompts/{prompt_id}.json`. Replicas keep an
in-memory index per tenant, loaded on the tenant's first request (or for all tenants at start with
`preload()`) and refreshed from a listing of the tenant's folder at most every `refresh_interval_s`, so
records written by other replicas appear within that interval (`get` reads storage and sees them at once).

A tenant sees its own records plus the built-in seed collection (the templates of `seed_prompts.json`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, NamedTuple

from likeness.errors import AlreadyExists, InvalidArgument, LikenessError, NotFound
from likeness.gallery import templates
from likeness.gallery.records import (
    MAX_PROMPT_CHARS,
    MAX_TAGS,
    SEED_TENANT,
    PromptRecord,
    dedupe_key,
    format_timestamp,
    normalize_timestamp,
    recipe_prompt_id,
    validate_base_model,
    validate_image_key,
    validate_negative_prompt,
    validate_params,
    validate_prompt,
    validate_subject_model_id,
    validate_tags,
)
from likeness.gallery.search import LexicalRanker, Ranker, SearchDocument
from likeness.storage.base import Storage
from likeness.storage.layout import (
    TENANTS_PREFIX,
    gallery_prompt_key,
    gallery_prompts_prefix,
    validate_resource_id,
    validate_tenant,
)

__all__ = ["SEED_TENANT", "PromptRecord", "PromptStore", "RecordOutcome", "SearchHit", "SearchPage"]

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
SEED_ID_PREFIX = "seed-"
# The seeds predate every tenant record, so "newest first" lists a tenant's own prompts before them.
SEED_CREATED_AT = "2023-01-01T00:00:00.000000Z"
_TOKEN_VERSION = 1


class RecordOutcome(NamedTuple):
    """The stored record, and whether an identical prompt already existed (then its `uses` went up by one)."""

    record: PromptRecord
    existing: bool


@dataclass(frozen=True)
class SearchHit:
    """One search result. `score` is 0 for empty-query listings; otherwise higher is better."""

    record: PromptRecord
    score: float


@dataclass(frozen=True)
class SearchPage:
    """One page of results, best first, and the token for the next page ("" on the last page)."""

    results: list[SearchHit]
    next_page_token: str


@dataclass
class _TenantIndex:
    records: dict[str, PromptRecord] = field(default_factory=dict)
    refreshed_at: float | None = None  # monotonic seconds of the last listing
    unreadable: set[str] = field(default_factory=set)  # keys skipped as corrupt, not re-read every refresh
    # Per tenant, so one tenant's slow storage listing does not hold up another tenant's requests.
    lock: threading.RLock = field(default_factory=threading.RLock)


def _seed_records() -> dict[str, PromptRecord]:
    seeds = {}
    for template in templates.list_templates():
        record = PromptRecord(
            prompt_id=SEED_ID_PREFIX + template.template_id,
            tenant=SEED_TENANT,
            prompt=template.template,
            negative_prompt=template.negative_prompt,
            base_model="",
            params=validate_params(template.default_params),
            tags=validate_tags([template.category, *template.tags]),
            subject_model_id="",
            created_at=SEED_CREATED_AT,
            uses=0,
            image_key=None,
        )
        seeds[record.prompt_id] = record
    return seeds


def _document(record: PromptRecord) -> SearchDocument:
    return SearchDocument(record.prompt_id, record.prompt, tuple(record.tags))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class PromptStore:
    """Records, fetches and searches prompts of many tenants in one shared storage. Thread-safe."""

    def __init__(
        self,
        storage: Storage,
        *,
        ranker: Ranker | None = None,
        refresh_interval_s: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.storage = storage
        self.ranker: Ranker = ranker if ranker is not None else LexicalRanker()
        self.refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._seeds = _seed_records()
        self._tenants: dict[str, _TenantIndex] = {}
        self._tenants_lock = threading.Lock()

    # ---- loading ------------------------------------------------------------------------------------------

    def preload(self, tenants: Iterable[str] | None = None) -> int:
        """Load the indexes of `tenants` (default: every tenant folder in storage); returns records loaded.

        Servers call this at start so the first search of each tenant does not pay for the listing.
        """
        names = list(tenants) if tenants is not None else self.storage.list_dirs(TENANTS_PREFIX)
        total = 0
        for tenant in names:
            try:
                _check_tenant(tenant)
            except LikenessError as exc:  # a stray folder whose name is not a valid tenant
                log.warning("gallery preload skipped tenant folder %r: %s", tenant, exc)
                continue
            total += len(self._refresh(tenant, force=True).records)
        # Records just loaded were prepared by _refresh; the seeds are prepared here, once.
        self.ranker.prepare([_document(record) for record in self._seeds.values()])
        return total

    def _index(self, tenant: str) -> _TenantIndex:
        with self._tenants_lock:
            return self._tenants.setdefault(tenant, _TenantIndex())

    def _refresh(self, tenant: str, *, force: bool = False) -> _TenantIndex:
        """The tenant's index, re-listed from storage when older than the refresh interval."""
        index = self._index(tenant)
        with index.lock:
            now = time.monotonic()
            if not force and index.refreshed_at is not None and now - index.refreshed_at < self.refresh_interval_s:
                return index
            listed = {key for key in self.storage.list(gallery_prompts_prefix(tenant)) if key.endswith(".json")}
            known_keys = {gallery_prompt_key(tenant, prompt_id): prompt_id for prompt_id in index.records}
            for key, prompt_id in known_keys.items():
                if key not in listed:  # deleted by an operator
                    del index.records[prompt_id]
            new_keys = sorted(listed - known_keys.keys() - index.unreadable)
            loaded = []
            for key, data in self.storage.read_many(new_keys).items():
                record = self._parse_stored(key, data, tenant)
                if record is None:
                    index.unreadable.add(key)
                else:
                    index.records[record.prompt_id] = record
                    loaded.append(_document(record))
            self.ranker.prepare(loaded)
            index.refreshed_at = now
            return index

    def _parse_stored(self, key: str, data: bytes, tenant: str) -> PromptRecord | None:
        # One corrupt object must not take the tenant's gallery down; it is logged and skipped.
        try:
            record = PromptRecord.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable gallery record %s: %s", key, exc)
            return None
        if record.tenant != tenant or gallery_prompt_key(tenant, record.prompt_id) != key:
            log.warning("skipping gallery record %s: its tenant/prompt_id do not match its key", key)
            return None
        return record

    def _read_stored(self, tenant: str, prompt_id: str) -> PromptRecord | None:
        key = gallery_prompt_key(tenant, prompt_id)
        try:
            data = self.storage.read_bytes(key)
        except NotFound:
            return None
        return self._parse_stored(key, data, tenant)

    # ---- record -------------------------------------------------------------------------------------------

    def record(
        self,
        tenant: str,
        prompt: str,
        *,
        negative_prompt: str = "",
        base_model: str = "",
        params: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        subject_model_id: str = "",
        image_key: str | None = None,
    ) -> RecordOutcome:
        """Validate and store a prompt. An identical one (same text up to whitespace, negative prompt, base
        model and params) is not duplicated: its `uses` goes up by one, new tags are added and a missing
        image_key is filled in, and the outcome says `existing=True`.

        InvalidArgument names the field to fix (`prompt`, `params.steps`, `tags[2]`, ...).
        """
        _check_tenant(tenant)
        prompt = validate_prompt(prompt)
        negative_prompt = validate_negative_prompt(negative_prompt)
        base_model = validate_base_model(base_model)
        params = validate_params(params)
        tags = validate_tags(tags)
        subject_model_id = validate_subject_model_id(subject_model_id)
        image_key = validate_image_key(image_key)
        fresh = PromptRecord(
            prompt_id=recipe_prompt_id(tenant, dedupe_key(prompt, negative_prompt, base_model, params)),
            tenant=tenant,
            prompt=prompt,
            negative_prompt=negative_prompt,
            base_model=base_model,
            params=params,
            tags=tags,
            subject_model_id=subject_model_id,
            created_at=format_timestamp(self._clock()),
            uses=1,
            image_key=image_key,
        )
        key = gallery_prompt_key(tenant, fresh.prompt_id)
        index = self._index(tenant)
        with index.lock:
            if fresh.prompt_id not in index.records:
                try:
                    self.storage.create_json(key, fresh.to_json())
                except AlreadyExists:
                    # Recorded by another replica since our last listing: this is a reuse.
                    log.debug("prompt %s was recorded concurrently by another replica", fresh.prompt_id)
                else:
                    index.records[fresh.prompt_id] = fresh
                    self.ranker.prepare([_document(fresh)])
                    return RecordOutcome(fresh.copy(), existing=False)
            # Re-read so increments made by other replicas are not overwritten; two replicas recording the
            # same prompt in the same instant can still lose one increment (a popularity count, documented).
            current = self._read_stored(tenant, fresh.prompt_id) or index.records.get(fresh.prompt_id)
            record = (current or replace(fresh, uses=0)).copy()
            record.uses += 1
            record.tags = list(dict.fromkeys([*record.tags, *tags]))[:MAX_TAGS]
            record.image_key = record.image_key or image_key
            self.storage.write_json(key, record.to_json())
            index.records[record.prompt_id] = record
            return RecordOutcome(record.copy(), existing=True)

    # ---- get ----------------------------------------------------------------------------------------------

    def get(self, tenant: str, prompt_id: str) -> PromptRecord:
        """One record of the tenant or of the seed collection; NotFound otherwise (other tenants' too)."""
        _check_tenant(tenant)
        validate_resource_id(prompt_id, field="prompt_id")
        if prompt_id in self._seeds:
            return self._seeds[prompt_id].copy()
        index = self._index(tenant)
        with index.lock:
            record = index.records.get(prompt_id)
            if record is None:
                # Possibly written by another replica since the last listing: storage is the source of truth.
                record = self._read_stored(tenant, prompt_id)
                if record is None:
                    raise NotFound(f"prompt {prompt_id!r} does not exist; search the gallery for available prompts")
                index.records[prompt_id] = record
            return record.copy()

    # ---- search -------------------------------------------------------------------------------------------

    def search(
        self,
        tenant: str,
        query: str = "",
        *,
        tags: Iterable[str] | None = None,
        base_model: str | None = None,
        include_seeds: bool = True,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> SearchPage:
        """Prompts of the tenant and the seed collection matching `query`, best first.

        * `query`: free text; empty lists everything, most used first, then newest.
        * `tags`: only records carrying all of them. `base_model`: only records of that base model, plus
          model-agnostic ones (empty base_model, such as the seeds).
        * `page_size`: 1..100; None or 0 means 20. `page_token`: from the previous page of the same search;
          InvalidArgument when malformed or from a different search.

        Pages are taken from a snapshot: records created after the first page are left out of later pages,
        so paging never repeats or skips a record because of new ones.
        """
        _check_tenant(tenant)
        if not isinstance(query, str):
            raise InvalidArgument("must be a string", field="query")
        query = query.strip()
        if len(query) > MAX_PROMPT_CHARS:
            raise InvalidArgument(f"must be at most {MAX_PROMPT_CHARS} characters", field="query")
        wanted_tags = validate_tags(tags)
        base_model = validate_base_model(base_model or "")
        size = _check_page_size(page_size)
        fingerprint = _fingerprint(tenant, query, wanted_tags, base_model, include_seeds)
        if page_token:
            offset, snapshot = _decode_token(page_token, fingerprint)
        else:
            offset, snapshot = 0, format_timestamp(self._clock())

        index = self._refresh(tenant)
        with index.lock:
            own = list(index.records.values())
        candidates = [
            record
            for record in (own + list(self._seeds.values()) if include_seeds else own)
            if record.created_at <= snapshot
            and (not wanted_tags or set(wanted_tags).issubset(record.tags))
            and (not base_model or record.base_model in ("", base_model))
        ]
        # Least significant key first: Python's sort is stable, so later sorts keep earlier ties in order.
        candidates.sort(key=lambda record: record.prompt_id)
        candidates.sort(key=lambda record: record.created_at, reverse=True)
        candidates.sort(key=lambda record: record.uses, reverse=True)
        if query:
            documents = [_document(record) for record in candidates]
            scores = [round(score, 6) for score in self.ranker.score(query, documents)]
            hits = [SearchHit(r, s) for r, s in zip(candidates, scores, strict=True) if s > 0.0]
            hits.sort(key=lambda hit: hit.score, reverse=True)
        else:
            hits = [SearchHit(record, 0.0) for record in candidates]

        page = [SearchHit(hit.record.copy(), hit.score) for hit in hits[offset : offset + size]]
        end = offset + len(page)
        next_token = _encode_token(end, snapshot, fingerprint) if end < len(hits) else ""
        return SearchPage(results=page, next_page_token=next_token)


def _check_tenant(tenant: str) -> None:
    # Checked before anything else so a bad name fails the same way whether or not storage is touched.
    # SEED_TENANT is not a valid tenant name, so no caller can write into the seed collection.
    validate_tenant(tenant)


def _check_page_size(page_size: int | None) -> int:
    if page_size is None or page_size == 0:
        return DEFAULT_PAGE_SIZE
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})", field="page_size")
    return page_size


def _fingerprint(tenant: str, query: str, tags: list[str], base_model: str, include_seeds: bool) -> str:
    # Ties a token to its search; the page size may change between pages.
    canonical = json.dumps([tenant, query, sorted(tags), base_model, include_seeds], separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _encode_token(offset: int, snapshot: str, fingerprint: str) -> str:
    payload = json.dumps({"v": _TOKEN_VERSION, "o": offset, "s": snapshot, "f": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_token(token: str, fingerprint: str) -> tuple[int, str]:
    malformed = InvalidArgument(
        "is not a token returned by a previous search; pass next_page_token unchanged, or omit it for the first page",
        field="page_token",
    )
    if not isinstance(token, str) or len(token) > 512:
        raise malformed
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise malformed from None
    if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
        raise malformed
    offset, snapshot, token_fingerprint = payload.get("o"), payload.get("s"), payload.get("f")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or not isinstance(snapshot, str):
        raise malformed
    try:
        snapshot = normalize_timestamp(snapshot)
    except ValueError:
        raise malformed from None
    if token_fingerprint != fingerprint:
        raise InvalidArgument(
            "belongs to a different search; repeat the same query, tags and base_model, or omit the token",
            field="page_token",
        )
    return offset, snapshot
