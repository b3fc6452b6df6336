"""The prompt gallery's store: entries in the control-plane database, images in shared storage.

Every request is one or two indexed queries; nothing is held in memory between requests, so any number of
replicas on one database see each other's writes at once. Text search runs on the engine's own full-text index
(FTS5 on SQLite, a tsvector with GIN on PostgreSQL; see docs/gallery.md), browsing walks the browse indexes.

A tenant sees its own entries plus shared ones: the built-in seed collection and collections imported as
shared. Another tenant's private entry answers NotFound, exactly like an id that never existed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from likeness.controlplane.database import Database
from likeness.controlplane.schema import gallery_prompts, gallery_tags, subject_models
from likeness.enums import ValueEnum
from likeness.errors import FailedPrecondition, InvalidArgument, NotFound
from likeness.gallery import templates
from likeness.gallery.images import MEDIA_TYPES, prepare_image
from likeness.gallery.pages import Cursor, decode_token, encode_token, fingerprint
from likeness.gallery.planning import TierPlanner
from likeness.gallery.query import MatchMode, SearchTerms
from likeness.gallery.records import (
    MAX_PROMPT_CHARS,
    MAX_TAGS,
    SEED_TENANT,
    PromptRecord,
    PromptSource,
    dedupe_key,
    recipe_prompt_id,
    validate_base_model,
    validate_negative_prompt,
    validate_params,
    validate_prompt,
    validate_subject_model_id,
    validate_tags,
)
from likeness.gallery.semantic import SEMANTIC_WEIGHT, SemanticSearch
from likeness.storage.base import Storage
from likeness.storage.layout import (
    gallery_image_key,
    gallery_thumbnail_key,
    validate_resource_id,
    validate_tenant,
)

__all__ = [
    "SEED_TENANT",
    "PromptRecord",
    "PromptStore",
    "RecordOutcome",
    "Scope",
    "SearchFilters",
    "SearchHit",
    "SearchPage",
]

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
SEED_ID_PREFIX = "seed-"
# The seeds predate every tenant entry, so "newest first" lists a tenant's own prompts before them.
SEED_CREATED_AT = 1672531200.0  # 2023-01-01T00:00:00Z

# Ranking of a text query (docs/gallery.md): relevance x popularity boost x recency boost, where
#   popularity = uses / (uses + POPULARITY_HALF)            0 .. 1, one half at POPULARITY_HALF uses
#   recency    = RECENCY_HALF_S / (RECENCY_HALF_S + age)     1 when new, one half after RECENCY_HALF_S
# Both boosts are bounded, so no amount of use lifts an entry that does not match over one that does well.
POPULARITY_WEIGHT = 0.5
POPULARITY_HALF = 10.0
RECENCY_WEIGHT = 0.25
RECENCY_HALF_S = 30 * 86400.0
# Column weights of relevance: the prompt text counts more than the tags.
SQLITE_BM25_WEIGHTS = (1.0, 0.4)
#: Matches ranked together (see PromptStore._match); bounds the cost of a query however common its words.
TIER_SIZE = 1000


@dataclass(frozen=True)
class _Ranked:
    """A result row and where it sits: its tier's upper row id, its position in the tier, the tier's number."""

    row: Any
    tier_upper: float = 0.0
    position: int = 0
    tier: int = 0


class Scope(ValueEnum):
    """Whose entries a search covers."""

    ALL = "all"  # the tenant's own and the shared ones
    OWN = "own"  # only the tenant's own (shared or not)
    SHARED = "shared"  # only shared entries (the seeds, imported public collections)


@dataclass(frozen=True)
class SearchFilters:
    """Filters of a search; every one given must hold."""

    tags: Sequence[str] = ()
    base_model: str = ""  # entries of this base model, plus model-agnostic ones (empty base_model)
    scope: Scope = Scope.ALL
    subject_model_id: str = ""
    created_after: float | None = None  # seconds since the epoch, inclusive
    created_before: float | None = None  # exclusive


class DeleteOutcome(NamedTuple):
    """A deletion: the id it was asked for, how many files left shared storage, how many entries went."""

    prompt_id: str
    files_removed: int
    entries: int = 1


class RecordOutcome(NamedTuple):
    """The stored entry, and whether an identical recipe already existed (then its `uses` went up by one)."""

    record: PromptRecord
    existing: bool


@dataclass(frozen=True)
class SearchHit:
    """One search result. `score` is 0 when browsing; otherwise higher is better. `thumbnail`: WebP or None."""

    record: PromptRecord
    score: float
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class SearchPage:
    """One page of results, best first, and the token for the next page ("" on the last page)."""

    results: list[SearchHit]
    next_page_token: str


@dataclass(frozen=True)
class PromptDraft:
    """A validated entry not yet stored: what `record` and the importer build, what `_insert_many` writes."""

    prompt: str
    negative_prompt: str = ""
    base_model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    subject_model_id: str = ""

    @classmethod
    def validate(
        cls,
        prompt: str,
        *,
        negative_prompt: str = "",
        base_model: str = "",
        params: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        subject_model_id: str = "",
    ) -> PromptDraft:
        """InvalidArgument names the field to fix (`prompt`, `params.steps`, `tags[2]`, ...)."""
        return cls(
            prompt=validate_prompt(prompt),
            negative_prompt=validate_negative_prompt(negative_prompt),
            base_model=validate_base_model(base_model),
            params=validate_params(params),
            tags=validate_tags(tags),
            subject_model_id=validate_subject_model_id(subject_model_id),
        )

    def prompt_id(self, tenant: str) -> str:
        return recipe_prompt_id(tenant, dedupe_key(self.prompt, self.negative_prompt, self.base_model, self.params))


_COLUMNS = (
    gallery_prompts.c.id,
    gallery_prompts.c.prompt_id,
    gallery_prompts.c.tenant,
    gallery_prompts.c.shared,
    gallery_prompts.c.prompt,
    gallery_prompts.c.negative_prompt,
    gallery_prompts.c.base_model,
    gallery_prompts.c.subject_model_id,
    gallery_prompts.c.params,
    gallery_prompts.c.tags,
    gallery_prompts.c.uses,
    gallery_prompts.c.created_at,
    gallery_prompts.c.source,
    gallery_prompts.c.image_key,
    gallery_prompts.c.thumbnail_key,
)
_COLUMN_LIST = ", ".join(f"p.{column.name}" for column in _COLUMNS)


def _record(row: Any) -> PromptRecord:
    return PromptRecord(
        prompt_id=row.prompt_id,
        tenant=row.tenant,
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        base_model=row.base_model,
        params=json.loads(row.params),
        tags=json.loads(row.tags),
        subject_model_id=row.subject_model_id,
        created_at=float(row.created_at),
        uses=int(row.uses),
        shared=bool(row.shared),
        source=PromptSource(row.source),
        image_key=row.image_key,
        thumbnail_key=row.thumbnail_key,
    )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class PromptStore:
    """Records, fetches and searches the prompts of many tenants in one database. Thread-safe."""

    def __init__(
        self,
        database: Database,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.time,
        semantic: SemanticSearch | None = None,
    ) -> None:
        self.database = database
        self.storage = storage
        self.semantic = semantic
        self._planner = TierPlanner()
        self._clock = clock
        self._dialect = database.engine.dialect.name

    # ---- seeds --------------------------------------------------------------------------------------------

    def install_seeds(self) -> int:
        """Write the built-in templates as shared seed entries (an upsert: a new release refreshes them)."""
        rows = []
        for template in templates.list_templates():
            rows.append(
                {
                    "prompt_id": SEED_ID_PREFIX + template.template_id,
                    "tenant": SEED_TENANT,
                    "shared": True,
                    "prompt": template.template,
                    "negative_prompt": template.negative_prompt,
                    "base_model": "",
                    "subject_model_id": "",
                    "params": _json(validate_params(template.default_params)),
                    "tags": _json(validate_tags([template.category, *template.tags])),
                    "uses": 0,
                    "created_at": SEED_CREATED_AT,
                    "source": PromptSource.SEED.value,
                }
            )
        insert = self.database.insert(gallery_prompts)
        statement = insert.on_conflict_do_update(
            index_elements=[gallery_prompts.c.prompt_id],
            set_={name: insert.excluded[name] for name in ("prompt", "negative_prompt", "params", "tags")},
        ).returning(gallery_prompts.c.id, gallery_prompts.c.tags)
        with self.database.transaction() as connection, self._indexing_new_rows(connection):
            stored = connection.execute(statement, rows).all()
            connection.execute(gallery_tags.delete().where(gallery_tags.c.prompt_row.in_([row.id for row in stored])))
            self._insert_tags(connection, [(row.id, json.loads(row.tags)) for row in stored])
        return len(stored)

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
        image: bytes | None = None,
        shared: bool = False,
        source: PromptSource = PromptSource.RECORD,
    ) -> RecordOutcome:
        """Validate and store a prompt, with its image when given (kept as sent, plus a WebP thumbnail).

        An identical recipe (same text up to whitespace, negative prompt, base model and params) is not
        duplicated: its `uses` goes up by one, new tags are added, a missing image is filled in, and the
        outcome says `existing=True`. InvalidArgument names the field to fix.
        """
        validate_tenant(tenant)
        draft = PromptDraft.validate(
            prompt,
            negative_prompt=negative_prompt,
            base_model=base_model,
            params=params,
            tags=tags,
            subject_model_id=subject_model_id,
        )
        if source is PromptSource.RECORD and draft.subject_model_id:
            self._check_own_subject(tenant, draft.subject_model_id)
        prepared = prepare_image(image) if image else None
        prompt_id = draft.prompt_id(tenant)
        image_key = thumbnail_key = None
        if prepared is not None and not self._has_image(prompt_id):
            # Blobs first: a row never points at an image that is not there yet. A failed insert leaves only
            # files under this recipe's deterministic keys, which the next recording overwrites.
            image_key = gallery_image_key(tenant, prompt_id, prepared.extension)
            thumbnail_key = gallery_thumbnail_key(tenant, prompt_id)
            self.storage.write_bytes(image_key, prepared.data)
            self.storage.write_bytes(thumbnail_key, prepared.thumbnail)
        with self.database.transaction() as connection, self._indexing_new_rows(connection):
            inserted = self._insert_many(
                connection,
                tenant,
                [draft],
                shared=shared,
                source=source,
                images=[(image_key, thumbnail_key)],
            )
            if inserted:
                return RecordOutcome(self._get_row(connection, prompt_id), existing=False)
            # The recipe exists: count the use and merge, under the row lock (SQLite: the write lock).
            current = self._get_row(connection, prompt_id, for_update=True)
            merged_tags = list(dict.fromkeys([*current.tags, *draft.tags]))[:MAX_TAGS]
            values: dict[str, Any] = {"uses": gallery_prompts.c.uses + 1, "shared": current.shared or shared}
            if merged_tags != current.tags:
                values["tags"] = _json(merged_tags)
            if current.image_key is None and image_key is not None:
                values.update(image_key=image_key, thumbnail_key=thumbnail_key)
            connection.execute(
                gallery_prompts.update().where(gallery_prompts.c.prompt_id == prompt_id).values(**values)
            )
            new_tags = [tag for tag in merged_tags if tag not in current.tags]
            if new_tags:
                row_id = connection.execute(
                    sa.select(gallery_prompts.c.id).where(gallery_prompts.c.prompt_id == prompt_id)
                ).scalar_one()
                self._insert_tags(connection, [(row_id, new_tags)])
            return RecordOutcome(self._get_row(connection, prompt_id), existing=True)

    def _check_own_subject(self, tenant: str, model_id: str) -> None:
        """NotFound unless `model_id` is one of the tenant's subject models (a caller may label an entry only
        with its own; inference checks the models it generates with itself)."""
        with self.database.read() as connection:
            found = connection.execute(
                sa.select(subject_models.c.model_id).where(
                    subject_models.c.tenant == tenant, subject_models.c.model_id == model_id
                )
            ).first()
        if found is None:
            raise NotFound(f"subject model {model_id!r} does not exist", field="subject_model_id")

    def import_drafts(
        self, tenant: str, drafts: Sequence[PromptDraft], *, shared: bool = False, created_at: float | None = None
    ) -> int:
        """Store already validated drafts in one transaction, skipping recipes that exist (an import run twice
        adds nothing and counts no uses). Returns how many were new."""
        if tenant != SEED_TENANT:
            validate_tenant(tenant)
        now = self._clock() if created_at is None else created_at
        return self.insert_import_rows(import_rows(tenant, drafts, shared=shared, created_at=now))

    def insert_import_rows(self, rows: ImportRows) -> int:
        """Insert rows made by `import_rows` in one transaction; returns how many prompts were new.

        The driver's executemany, not Core's insert: an import is bound by per-row overhead.
        """
        if not rows.prompts:
            return 0
        mark = "%s" if self._dialect == "postgresql" else "?"
        marks = ", ".join([mark] * len(rows.prompts[0]))
        insert_prompts = (
            f"INSERT INTO gallery_prompts ({', '.join(IMPORT_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (prompt_id) DO NOTHING"
        )
        # Tag rows of prompts that already existed are already there: the conflict clause skips them.
        insert_tags = (
            f"INSERT INTO gallery_tags (tag, prompt_row) SELECT {mark}, id FROM gallery_prompts "
            f"WHERE prompt_id = {mark} ON CONFLICT DO NOTHING"
        )
        with self.database.transaction() as connection, self._indexing_new_rows(connection):
            cursor = connection.connection.cursor()
            try:
                cursor.executemany(insert_prompts, rows.prompts)
                inserted = cursor.rowcount  # both drivers sum it over the rows (tests check it on both)
                if rows.tags:
                    cursor.executemany(insert_tags, rows.tags)
                return int(inserted)
            finally:
                cursor.close()

    @contextlib.contextmanager
    def _indexing_new_rows(self, connection: Connection) -> Iterator[None]:
        """SQLite: index the rows the block inserts in FTS5, in one INSERT ... SELECT when it ends (ten times
        faster than a trigger per row). The block runs under the write lock, so every row above the highest id
        seen before it is the block's. PostgreSQL indexes its generated tsvector by itself."""
        if self._dialect == "postgresql":
            yield
            return
        before = connection.execute(sa.select(sa.func.max(gallery_prompts.c.id))).scalar() or 0
        yield
        connection.execute(
            sa.text(
                "INSERT INTO gallery_fts(rowid, prompt, tags) SELECT id, prompt, tags FROM gallery_prompts WHERE id > :before"
            ),
            {"before": before},
        )

    def _insert_many(
        self,
        connection: Connection,
        tenant: str,
        drafts: Sequence[PromptDraft],
        *,
        shared: bool,
        source: PromptSource,
        images: Sequence[tuple[str | None, str | None]] | None = None,
        created_at: float | None = None,
    ) -> int:
        if not drafts:
            return 0
        now = self._clock() if created_at is None else created_at
        rows = []
        for index, draft in enumerate(drafts):
            image_key, thumbnail_key = images[index] if images else (None, None)
            rows.append(
                {
                    "prompt_id": draft.prompt_id(tenant),
                    "tenant": tenant,
                    "shared": shared,
                    "prompt": draft.prompt,
                    "negative_prompt": draft.negative_prompt,
                    "base_model": draft.base_model,
                    "subject_model_id": draft.subject_model_id,
                    "params": _json(draft.params),
                    "tags": _json(draft.tags),
                    "uses": 1,
                    "created_at": now,
                    "source": source.value,
                    "image_key": image_key,
                    "thumbnail_key": thumbnail_key,
                }
            )
        statement = (
            self.database.insert(gallery_prompts)
            .on_conflict_do_nothing(index_elements=[gallery_prompts.c.prompt_id])
            .returning(gallery_prompts.c.id, gallery_prompts.c.tags)
        )
        inserted = connection.execute(statement, rows).all()
        self._insert_tags(connection, [(row.id, json.loads(row.tags)) for row in inserted])
        return len(inserted)

    @staticmethod
    def _insert_tags(connection: Connection, tagged: Iterable[tuple[int, list[str]]]) -> None:
        rows = [{"tag": tag, "prompt_row": row_id} for row_id, tags in tagged for tag in tags]
        if rows:
            connection.execute(gallery_tags.insert(), rows)

    def _has_image(self, prompt_id: str) -> bool:
        with self.database.read() as connection:
            key = connection.execute(
                sa.select(gallery_prompts.c.image_key).where(gallery_prompts.c.prompt_id == prompt_id)
            ).scalar_one_or_none()
        return key is not None

    def _get_row(self, connection: Connection, prompt_id: str, *, for_update: bool = False) -> PromptRecord:
        query = sa.select(*_COLUMNS).where(gallery_prompts.c.prompt_id == prompt_id)
        if for_update:
            query = query.with_for_update()
        return _record(connection.execute(query).one())

    # ---- delete -------------------------------------------------------------------------------------------

    def delete(self, tenant: str, prompt_id: str) -> DeleteOutcome:
        """Delete one of the tenant's own entries, its tags, embedding, index entry and image files.

        NotFound for ids the tenant cannot see and for other tenants' shared entries (existence does not leak);
        FailedPrecondition for the built-in seeds. A second delete answers NotFound and changes nothing.
        """
        validate_tenant(tenant)
        validate_resource_id(prompt_id, field="prompt_id")
        with self.database.transaction() as connection:
            row = connection.execute(
                sa.select(gallery_prompts.c.tenant, gallery_prompts.c.image_key, gallery_prompts.c.thumbnail_key).where(
                    gallery_prompts.c.prompt_id == prompt_id
                )
            ).one_or_none()
            if row is not None and row.tenant == SEED_TENANT:
                raise FailedPrecondition(f"prompt {prompt_id!r} is built in and cannot be deleted")
            if row is None or row.tenant != tenant:
                raise NotFound(f"prompt {prompt_id!r} does not exist; search the gallery for available prompts")
            connection.execute(gallery_prompts.delete().where(gallery_prompts.c.prompt_id == prompt_id))
        # After the commit: a failed delete leaves the entry whole; a crash here leaves only unreferenced files
        # under this recipe's keys, which the next recording of it overwrites.
        removed = 0
        for key in (row.image_key, row.thumbnail_key):
            if key:
                self.storage.delete(key, missing_ok=True)
                removed += 1
        return DeleteOutcome(prompt_id, removed)

    def delete_by_subject(self, tenant: str, subject_model_id: str) -> DeleteOutcome:
        """Delete every entry of the tenant recorded with a subject model (its images show that subject), with
        their files; returns how many entries went (`prompt_id` is the subject model's id)."""
        validate_tenant(tenant)
        condition = sa.and_(
            gallery_prompts.c.tenant == tenant, gallery_prompts.c.subject_model_id == subject_model_id
        )  # ix_gallery_subject
        return self._delete_where(condition, subject_model_id)

    def delete_by_tenant(self, tenant: str) -> DeleteOutcome:
        """Delete every entry of the tenant, shared ones included, with their files (a tenant's erasure)."""
        validate_tenant(tenant)
        if tenant == SEED_TENANT:
            raise FailedPrecondition("the built-in collection cannot be erased")
        return self._delete_where(gallery_prompts.c.tenant == tenant, tenant)

    def count_by_tenant(self, tenant: str) -> int:
        """How many entries the tenant holds (shared ones included)."""
        with self.database.read() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(gallery_prompts).where(gallery_prompts.c.tenant == tenant)
            ).scalar_one()

    def _delete_where(self, condition: sa.ColumnElement[bool], label: str) -> DeleteOutcome:
        with self.database.transaction() as connection:
            rows = connection.execute(
                sa.select(gallery_prompts.c.image_key, gallery_prompts.c.thumbnail_key).where(condition)
            ).all()
            connection.execute(gallery_prompts.delete().where(condition))
        removed = 0
        for row in rows:
            for key in (row.image_key, row.thumbnail_key):
                if key:
                    self.storage.delete(key, missing_ok=True)
                    removed += 1
        return DeleteOutcome(label, removed, entries=len(rows))

    # ---- get ----------------------------------------------------------------------------------------------

    def get(self, tenant: str, prompt_id: str) -> PromptRecord:
        """One entry the tenant can see (its own or a shared one); NotFound otherwise, other tenants' too."""
        validate_tenant(tenant)
        validate_resource_id(prompt_id, field="prompt_id")
        with self.database.read() as connection:
            row = connection.execute(
                sa.select(*_COLUMNS).where(
                    gallery_prompts.c.prompt_id == prompt_id,
                    sa.or_(gallery_prompts.c.tenant == tenant, gallery_prompts.c.shared.is_(True)),
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"prompt {prompt_id!r} does not exist; search the gallery for available prompts")
        return _record(row)

    def get_with_thumbnail(self, tenant: str, prompt_id: str) -> tuple[PromptRecord, bytes | None]:
        """`get`, with the entry's thumbnail (None when it has no image)."""
        record = self.get(tenant, prompt_id)
        return record, self._thumbnails([record]).get(record.prompt_id)

    def read_image(self, tenant: str, prompt_id: str) -> tuple[bytes, str]:
        """The full image of an entry the tenant can see, and its media type; NotFound when it has none."""
        record = self.get(tenant, prompt_id)
        if record.image_key is None:
            raise NotFound(f"prompt {prompt_id!r} has no image")
        extension = record.image_key.rsplit(".", 1)[-1]
        return self.storage.read_bytes(record.image_key), MEDIA_TYPES[extension]

    # ---- search -------------------------------------------------------------------------------------------

    def search(
        self,
        tenant: str,
        query: str = "",
        *,
        filters: SearchFilters | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        with_thumbnails: bool = False,
    ) -> SearchPage:
        """Entries the tenant can see that match `query` and `filters`, best first.

        * `query`: free text; all its words must occur (falling back to any word when no entry has all of
          them). Empty browses: most used first, then newest.
        * `page_size`: 1..100; None or 0 means 20. `page_token`: from the previous page of the same search;
          InvalidArgument when malformed or from a different search.

        Pages are keyset pages over a snapshot: entries created after the first page are left out of later
        pages, and each page starts strictly after the last row of the one before, so paging never repeats
        or skips an entry.
        """
        validate_tenant(tenant)
        filters = self._check_filters(filters or SearchFilters())
        if not isinstance(query, str):
            raise InvalidArgument("must be a string", field="query")
        query = query.strip()
        if len(query) > MAX_PROMPT_CHARS:
            raise InvalidArgument(f"must be at most {MAX_PROMPT_CHARS} characters", field="query")
        terms = SearchTerms.parse(query) if query else None
        size = _check_page_size(page_size)
        search_id = fingerprint(tenant, terms.words if terms else [], filters)
        cursor = decode_token(page_token, search_id) if page_token else None
        if cursor is not None and len(cursor.after) != 3:
            raise InvalidArgument("is not a token of this kind of search", field="page_token")
        snapshot = cursor.snapshot if cursor else self._clock()

        # Encoded before the transaction: the query's embedding takes milliseconds of model time.
        neighbours = self.semantic.neighbours(query) if terms is not None and self.semantic is not None else {}
        with self.database.read() as connection:
            if self._dialect == "postgresql":
                # A generic plan (psycopg prepares a statement after 5 runs) plans for an average query and
                # walks the primary key even for rare words: 30x slower. Each search is planned for its words,
                # never by reading the whole table, and without parallel workers (their start costs more than
                # a tier's work).
                for setting in (
                    "plan_cache_mode = force_custom_plan",
                    "enable_seqscan = off",
                    "max_parallel_workers_per_gather = 0",
                ):
                    connection.exec_driver_sql(f"SET LOCAL {setting}")
            if terms is None:
                mode = MatchMode.ALL
                found = [_Ranked(row) for row in self._browse(connection, tenant, filters, snapshot, cursor, size + 1)]
            else:
                mode = cursor.mode if cursor else MatchMode.ALL
                found = self._match(connection, tenant, terms, mode, filters, snapshot, cursor, size + 1, neighbours)
                if not found and cursor is None:
                    mode = MatchMode.ANY
                    found = self._match(connection, tenant, terms, mode, filters, snapshot, None, size + 1, neighbours)
        more, found = len(found) > size, found[:size]
        records = [_record(ranked.row) for ranked in found]
        thumbnails = self._thumbnails(records) if with_thumbnails else {}
        hits = [
            SearchHit(record, round(float(ranked.row.score), 6) if terms else 0.0, thumbnails.get(record.prompt_id))
            for record, ranked in zip(records, found, strict=True)
        ]
        next_token = ""
        if more:
            last = found[-1]
            after = (
                (last.tier_upper, float(last.position), float(last.tier))
                if terms
                else (int(last.row.uses), float(last.row.created_at), int(last.row.id))
            )
            next_token = encode_token(Cursor(snapshot, mode, after), search_id)
        return SearchPage(results=hits, next_page_token=next_token)

    def _thumbnails(self, records: Sequence[PromptRecord]) -> dict[str, bytes]:
        keys = {record.thumbnail_key: record.prompt_id for record in records if record.thumbnail_key}
        found = self.storage.read_many(list(keys))
        return {keys[key]: data for key, data in found.items()}

    @staticmethod
    def _check_filters(filters: SearchFilters) -> SearchFilters:
        for name in ("created_after", "created_before"):
            value = getattr(filters, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise InvalidArgument("must be a time after 1970", field=name)
        after, before = filters.created_after, filters.created_before
        if after is not None and before is not None and after >= before:
            raise InvalidArgument("must be before created_before", field="created_after")
        return SearchFilters(
            tags=tuple(validate_tags(filters.tags)),
            base_model=validate_base_model(filters.base_model or ""),
            scope=Scope(filters.scope),
            subject_model_id=validate_subject_model_id(filters.subject_model_id or ""),
            created_after=filters.created_after,
            created_before=filters.created_before,
        )

    @staticmethod
    def _filter_sql(filters: SearchFilters, snapshot: float) -> tuple[list[str], dict[str, Any]]:
        """Predicates on `p` for every filter, and their parameters."""
        clauses = ["p.created_at <= :snapshot"]
        params: dict[str, Any] = {"snapshot": snapshot}
        for index, tag in enumerate(filters.tags):
            clauses.append(f"p.id IN (SELECT t.prompt_row FROM gallery_tags t WHERE t.tag = :tag_{index})")
            params[f"tag_{index}"] = tag
        if filters.base_model:
            clauses.append("p.base_model IN ('', :base_model)")
            params["base_model"] = filters.base_model
        if filters.subject_model_id:
            clauses.append("p.subject_model_id = :subject_model_id")
            params["subject_model_id"] = filters.subject_model_id
        if filters.created_after is not None:
            clauses.append("p.created_at >= :created_after")
            params["created_after"] = float(filters.created_after)
        if filters.created_before is not None:
            clauses.append("p.created_at < :created_before")
            params["created_before"] = float(filters.created_before)
        return clauses, params

    @staticmethod
    def _visibility_sql(scope: Scope) -> str:
        return {
            Scope.ALL: "(p.tenant = :tenant OR p.shared = :true)",
            Scope.OWN: "p.tenant = :tenant",
            Scope.SHARED: "p.shared = :true",
        }[scope]

    def _match(
        self,
        connection: Connection,
        tenant: str,
        terms: SearchTerms,
        mode: MatchMode,
        filters: SearchFilters,
        snapshot: float,
        cursor: Cursor | None,
        limit: int,
        neighbours: dict[int, float],
    ) -> list[_Ranked]:
        """Up to `limit` matching rows after `cursor`, best first within each tier.

        A tier is the next TIER_SIZE text matches by row id, newest first; rows are ranked within their tier.
        So every query costs at most a few tiers of scoring however common its words are, and every match is
        still reached by paging on. A query with fewer than TIER_SIZE matches (most queries) is one tier.
        Semantic neighbours with no text match join the first tier; those with one rank in their own tier.
        """
        if cursor is not None:
            upper, offset, tier = cursor.after[0], int(cursor.after[1]), int(cursor.after[2])
        else:
            # The tiers are cut below the newest row id at the first page, so rows written while a client
            # pages on never shift a tier's window (and they are newer than the snapshot anyway).
            newest = connection.execute(sa.select(sa.func.max(gallery_prompts.c.id))).scalar()
            upper, offset, tier = float((newest or 0) + 1), 0, 0
        extra: list[int] = []
        if neighbours and tier == 0:
            lexical = self._lexical_among(connection, terms, mode, list(neighbours))
            extra = [row for row in neighbours if row not in lexical and row < upper]
        walk = self._walk(connection, terms, mode)
        found: list[_Ranked] = []
        while len(found) < limit:
            rows = self._match_tier(
                connection,
                tenant,
                terms,
                mode,
                filters,
                snapshot,
                upper,
                offset,
                limit - len(found),
                neighbours,
                extra if tier == 0 else [],
                walk,
            )
            found.extend(_Ranked(row, upper, offset + index + 1, tier) for index, row in enumerate(rows))
            if len(found) >= limit:
                break
            lower, count = self._tier_extent(connection, terms, mode, upper, walk)
            if count < TIER_SIZE:
                break  # that was the last tier
            upper, offset, tier = lower, 0, tier + 1
        return found

    def _lexical_among(self, connection: Connection, terms: SearchTerms, mode: MatchMode, rows: list[int]) -> set[int]:
        """Which of `rows` match the query's text."""
        listed = ", ".join(str(int(row)) for row in rows)  # ints from the index, never caller text
        if self._dialect == "postgresql":
            sql = (
                "SELECT p.id FROM gallery_prompts p, to_tsquery('english', :match) AS q(query) "
                f"WHERE p.id IN ({listed}) AND p.search_vector @@ q.query"
            )
        else:
            sql = f"SELECT rowid FROM gallery_fts WHERE gallery_fts MATCH :match AND rowid IN ({listed})"
        found = connection.execute(sa.text(sql), {"match": self._match_params(terms, mode, 0)["match"]}).scalars()
        return {int(row) for row in found}

    def _match_params(self, terms: SearchTerms, mode: MatchMode, upper: float) -> dict[str, Any]:
        match = terms.tsquery(mode) if self._dialect == "postgresql" else terms.fts5(mode)
        return {"match": match, "upper": int(upper), "tier": TIER_SIZE}  # an int: a float hides the key index

    def _tier_ids_sql(self, walk: bool = False) -> str:
        """The ids of the tier's text matches: the TIER_SIZE newest below `:upper`.

        PostgreSQL: `walk` walks the primary key backwards (bitmap scans are off, see `_walk`); otherwise the
        GIN index collects every match (the order is written so the primary key cannot serve it). See
        likeness.gallery.planning for the choice.
        """
        if self._dialect == "postgresql":
            if walk:
                return (
                    "SELECT p.id FROM gallery_prompts p "
                    "WHERE p.search_vector @@ to_tsquery('english', :match) "
                    "AND p.id < :upper ORDER BY p.id DESC LIMIT :tier"
                )
            return (
                "SELECT p.id FROM gallery_prompts p WHERE p.search_vector @@ to_tsquery('english', :match) "
                "AND p.id < :upper ORDER BY p.id + 0 DESC LIMIT :tier"
            )
        return (
            "SELECT rowid AS id FROM gallery_fts WHERE gallery_fts MATCH :match AND rowid < :upper "
            "ORDER BY rowid DESC LIMIT :tier"
        )

    def _candidates_sql(self, walk: bool = False) -> str:
        """The tier's text matches with their relevance."""
        if self._dialect == "postgresql":
            # Ranked after the cut: ts_rank reads each row's tsvector, so it runs on the tier's rows only.
            return (
                "SELECT t.id, ts_rank(g.search_vector, to_tsquery('english', :match), 1)::float8 AS relevance "
                f"FROM ({self._tier_ids_sql(walk)}) AS t JOIN gallery_prompts g ON g.id = t.id"
            )
        weights = ", ".join(str(weight) for weight in SQLITE_BM25_WEIGHTS)
        # bm25() is negative, lower is better; inside this query FTS5 evaluates it for the rows it returns only.
        return (
            f"SELECT rowid AS id, -bm25(gallery_fts, {weights}) AS relevance FROM gallery_fts "
            "WHERE gallery_fts MATCH :match AND rowid < :upper ORDER BY rowid DESC LIMIT :tier"
        )

    def _walk(self, connection: Connection, terms: SearchTerms, mode: MatchMode) -> bool:
        """PostgreSQL: whether this search walks the primary key (then bitmap scans go off for it)."""
        if self._dialect != "postgresql" or not self._planner.walk_primary_key(connection, terms, mode, TIER_SIZE):
            return False
        connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        return True

    def _tier_extent(
        self, connection: Connection, terms: SearchTerms, mode: MatchMode, upper: float, walk: bool
    ) -> tuple[float, int]:
        """The lowest row id of the tier below `upper` and its size (TIER_SIZE unless it is the last)."""
        sql = f"SELECT min(c.id), count(*) FROM ({self._tier_ids_sql(walk)}) AS c"
        lowest, count = connection.execute(sa.text(sql), self._match_params(terms, mode, upper)).one()
        return float(lowest or 0), int(count)

    def _match_tier(
        self,
        connection: Connection,
        tenant: str,
        terms: SearchTerms,
        mode: MatchMode,
        filters: SearchFilters,
        snapshot: float,
        upper: float,
        offset: int,
        limit: int,
        neighbours: dict[int, float],
        extra: list[int],
        walk: bool,
    ) -> list[Any]:
        clauses, params = self._filter_sql(filters, snapshot)
        clauses.append(self._visibility_sql(filters.scope))
        params.update(self._match_params(terms, mode, upper))
        params.update(
            tenant=tenant,
            true=True,
            limit=limit,
            offset=offset,
            w_pop=POPULARITY_WEIGHT,
            pop_half=POPULARITY_HALF,
            w_rec=RECENCY_WEIGHT,
            rec_half=RECENCY_HALF_S,
        )
        boost = (
            "(1.0 + :w_pop * p.uses / (p.uses + :pop_half))"
            " * (1.0 + :w_rec * :rec_half / (:rec_half + (:snapshot - p.created_at)))"
        )
        # MATERIALIZED: the tier is cut first, then filtered and ranked (and on SQLite bm25() stays inside
        # the full-text query, the only place FTS5 can evaluate it).
        ctes = [f"c AS MATERIALIZED ({self._candidates_sql(walk)})"]
        candidates, relevance = "c", "c.relevance"
        if neighbours:
            # Hybrid: w * similarity + (1 - w) * relevance / the tier's best relevance (docs/gallery.md).
            pairs = ", ".join(f"({int(row)}, {float(similarity)!r})" for row, similarity in neighbours.items())
            ctes.append(f"nb(id, similarity) AS (VALUES {pairs})")
            union = "SELECT id, relevance FROM c"
            if extra:
                union += " UNION ALL SELECT id, 0.0 FROM nb WHERE id IN (" + ", ".join(str(int(r)) for r in extra) + ")"
            ctes.append(f"h AS ({union})")
            candidates = "h LEFT JOIN nb ON nb.id = h.id"
            relevance = (
                ":w_sem * coalesce(nb.similarity, 0.0) + (1.0 - :w_sem) * "
                "coalesce(h.relevance / nullif((SELECT max(relevance) FROM c), 0.0), 0.0)"
            )
            params["w_sem"] = SEMANTIC_WEIGHT
        key = "h.id" if neighbours else "c.id"
        ctes.append(
            f"s AS (SELECT {_COLUMN_LIST}, ({relevance}) * {boost} AS score "
            f"FROM {candidates} JOIN gallery_prompts p ON p.id = {key} WHERE {' AND '.join(clauses)})"
        )
        sql = f"WITH {', '.join(ctes)} SELECT * FROM s ORDER BY s.score DESC, s.id ASC LIMIT :limit OFFSET :offset"
        return list(connection.execute(sa.text(sql), params).all())

    def _browse(
        self,
        connection: Connection,
        tenant: str,
        filters: SearchFilters,
        snapshot: float,
        cursor: Cursor | None,
        limit: int,
    ) -> list[Any]:
        clauses, params = self._filter_sql(filters, snapshot)
        params.update(tenant=tenant, true=True, false=False, limit=limit)
        if cursor is not None:
            clauses.append("(p.uses, p.created_at, p.id) < (:after_uses, :after_created, :after_id)")
            params.update(
                after_uses=int(cursor.after[0]), after_created=float(cursor.after[1]), after_id=int(cursor.after[2])
            )
        # One branch per browse index, each walked in order and cut at `limit`; the union is merged and cut
        # again. An OR of the two visibility conditions would make both engines sort every visible row.
        branches = {
            Scope.ALL: ["p.tenant = :tenant AND p.shared = :false", "p.shared = :true"],
            Scope.OWN: ["p.tenant = :tenant AND p.shared = :false", "p.shared = :true AND p.tenant = :tenant"],
            Scope.SHARED: ["p.shared = :true"],
        }[filters.scope]
        order = "ORDER BY uses DESC, created_at DESC, id DESC"
        selects = [
            f"SELECT * FROM (SELECT {_COLUMN_LIST}, 0.0 AS score FROM gallery_prompts p "
            f"WHERE {branch} AND {' AND '.join(clauses)} "
            f"ORDER BY p.uses DESC, p.created_at DESC, p.id DESC LIMIT :limit) AS b{index}"
            for index, branch in enumerate(branches)
        ]
        sql = " UNION ALL ".join(selects) + f" {order} LIMIT :limit"
        return list(connection.execute(sa.text(sql), params).all())


IMPORT_COLUMNS = (
    "prompt_id",
    "tenant",
    "shared",
    "prompt",
    "negative_prompt",
    "base_model",
    "subject_model_id",
    "params",
    "tags",
    "created_at",
    "source",
)


class ImportRows(NamedTuple):
    """Rows ready for `PromptStore.insert_import_rows`: plain tuples, cheap to pickle between processes."""

    prompts: list[tuple[Any, ...]]  # in IMPORT_COLUMNS order
    tags: list[tuple[str, str]]  # (tag, prompt_id)


def import_rows(tenant: str, drafts: Sequence[PromptDraft], *, shared: bool, created_at: float) -> ImportRows:
    """The database rows of imported drafts (a pure function, so an importer can run it in another process)."""
    prompts: list[tuple[Any, ...]] = []
    tags: list[tuple[str, str]] = []
    for draft in drafts:
        prompt_id = draft.prompt_id(tenant)
        prompts.append(
            (
                prompt_id,
                tenant,
                shared,
                draft.prompt,
                draft.negative_prompt,
                draft.base_model,
                draft.subject_model_id,
                _json(draft.params),
                _json(draft.tags),
                created_at,
                PromptSource.IMPORT.value,
            )
        )
        tags.extend((tag, prompt_id) for tag in draft.tags)
    return ImportRows(prompts, tags)


def _check_page_size(page_size: int | None) -> int:
    if page_size is None or page_size == 0:
        return DEFAULT_PAGE_SIZE
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})", field="page_size")
    return page_size
