"""The control-plane schema: one SQLAlchemy Core `MetaData` for SQLite and PostgreSQL.

Times are seconds since the epoch as double precision, taken from the database's clock (`clock.db_now`), so
lease expiry never depends on which node's clock asked. JSON columns hold documents that are read whole (a
job's resolved config, an event's payload); everything a query filters or orders on is a column of its own.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: A time as seconds since the epoch (double precision on PostgreSQL, REAL on SQLite).
Seconds = sa.Float(precision=53)

training_jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    #: Higher runs first; FIFO (by `create_time`) within a priority.
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    #: The resolved TrainingConfig as a dict: exactly what the job trains, defaults and seed filled in.
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("base_model", sa.String(128), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    #: Id the subject model is published under; reserved at creation so a re-run job finds its own model.
    sa.Column("model_id", sa.String(64), nullable=False),
    #: NULL when the caller sent none: NULLs never collide in the unique constraint below.
    sa.Column("idempotency_key", sa.String(128), nullable=True),
    sa.Column("create_time", Seconds, nullable=False),
    sa.Column("start_time", Seconds, nullable=True),
    sa.Column("end_time", Seconds, nullable=True),
    sa.Column("progress", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("last_checkpoint_step", sa.Integer, nullable=False, server_default="0"),
    sa.Column("resume_count", sa.Integer, nullable=False, server_default="0"),
    #: Sequence number of the job's latest event; incremented in the transaction that inserts the event.
    sa.Column("last_sequence", sa.BigInteger, nullable=False, server_default="0"),
    #: The worker holding the lease, and until when (database clock). NULL owner: nobody holds it.
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", Seconds, nullable=True),
    #: Fencing token: incremented by every claim. A worker's writes name the fence it claimed with, so a worker
    #: whose lease was taken over writes nothing more.
    sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    #: "cancel" or "preempt" once asked; the owning worker reads it with its next heartbeat.
    sa.Column("stop_request", sa.String(16), nullable=True),
    #: The shared class-image set the job trains with (TrainingConfig.class_images_key); NULL without one.
    #: Erasing a subject removes a set no other job names.
    sa.Column("class_images_key", sa.String(64), nullable=True),
    #: SHA-256 of the creating request (spec, priority, photos): the same idempotency key with another request
    #: is an error, not a silent return of the first job (AIP-155).
    sa.Column("request_digest", sa.String(64), nullable=True),
    sa.UniqueConstraint("tenant", "idempotency_key", name="uq_training_jobs_idempotency"),
)
sa.Index("ix_training_jobs_claim", training_jobs.c.state, training_jobs.c.priority, training_jobs.c.create_time)
sa.Index("ix_training_jobs_tenant", training_jobs.c.tenant, training_jobs.c.job_id)
sa.Index("ix_training_jobs_class_images", training_jobs.c.class_images_key)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("training_jobs.job_id", ondelete="CASCADE"), primary_key=True),
    #: 1, 2, 3, ... per job without gaps (allocated from training_jobs.last_sequence in the same transaction).
    sa.Column("sequence", sa.BigInteger, primary_key=True),
    sa.Column("time", Seconds, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    #: The fence of the lease the event was written under (0 for events written by an API replica).
    sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("payload", sa.JSON, nullable=False),
)

job_leases = sa.Table(
    "job_leases",
    metadata,
    sa.Column("lease_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), sa.ForeignKey("training_jobs.job_id", ondelete="CASCADE"), nullable=False),
    sa.Column("worker_id", sa.String(255), nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("acquired_at", Seconds, nullable=False),
    #: When the lease ended: released by its worker, or the expiry time of a lease that another claim took over.
    sa.Column("released_at", Seconds, nullable=True),
    #: How it ended: succeeded, failed, cancelled, preempted, lost, expired.
    sa.Column("outcome", sa.String(16), nullable=True),
)
sa.Index("ix_job_leases_job", job_leases.c.job_id, job_leases.c.fence)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("resolution", sa.Integer, nullable=False),
    sa.Column("image_count", sa.Integer, nullable=False),
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("source", sa.String(32), nullable=False, server_default=""),
    sa.Column("create_time", Seconds, nullable=False),
)
sa.Index("ix_datasets_tenant", datasets.c.tenant, datasets.c.dataset_id)

subject_models = sa.Table(
    "subject_models",
    metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False),
    #: The dataset of photos it was trained from: the link an erasure follows after the job was deleted.
    sa.Column("dataset_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("base_model", sa.String(128), nullable=False),
    sa.Column("identifier", sa.String(64), nullable=False),
    sa.Column("class_noun", sa.String(64), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("create_time", Seconds, nullable=False),
    #: The published manifest (the copy in storage is what inference loads).
    sa.Column("manifest", sa.JSON, nullable=False),
)
sa.Index("ix_subject_models_tenant", subject_models.c.tenant, subject_models.c.model_id)

#: The gallery: prompts with the parameters and images they were generated with. Full-text search runs on
#: engine-specific structures that the migration creates beside this table (SEARCH_INDEX_OBJECTS): an FTS5
#: table on SQLite (new rows indexed by the store, deletes and updates by triggers), a generated tsvector column
#: with a GIN index on PostgreSQL.
gallery_prompts = sa.Table(
    "gallery_prompts",
    metadata,
    #: Integer row id: the FTS5 index keys its rows by it, and it breaks ties in every ordering.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    #: The public id, derived from the tenant and the recipe (likeness.gallery.records.recipe_prompt_id), so
    #: replicas recording the same recipe at once meet on this unique key instead of writing duplicates.
    sa.Column("prompt_id", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    #: Visible to every tenant (the built-in seeds, imported public collections); otherwise only to `tenant`.
    sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("negative_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("base_model", sa.String(200), nullable=False, server_default=""),
    sa.Column("subject_model_id", sa.String(128), nullable=False, server_default=""),
    #: Validated generation parameters (likeness.gallery.records.validate_params) as a JSON object.
    sa.Column("params", sa.Text, nullable=False),
    #: Normalized tags as a JSON array; searched as text, filtered exactly through gallery_tags.
    sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
    sa.Column("uses", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", Seconds, nullable=False),
    #: Where it came from: record, generation, import or seed.
    sa.Column("source", sa.String(16), nullable=False, server_default="record"),
    #: Storage keys of the full image and its WebP thumbnail; NULL for entries without an image.
    sa.Column("image_key", sa.String(1024), nullable=True),
    sa.Column("thumbnail_key", sa.String(1024), nullable=True),
)
# Browsing (no query) walks these in order: most used, then newest, then id; one index per visibility branch.
sa.Index(
    "ix_gallery_own_browse",
    gallery_prompts.c.tenant,
    gallery_prompts.c.shared,
    gallery_prompts.c.uses,
    gallery_prompts.c.created_at,
    gallery_prompts.c.id,
)
sa.Index(
    "ix_gallery_shared_browse",
    gallery_prompts.c.shared,
    gallery_prompts.c.uses,
    gallery_prompts.c.created_at,
    gallery_prompts.c.id,
)
sa.Index("ix_gallery_subject", gallery_prompts.c.tenant, gallery_prompts.c.subject_model_id)

#: One row per (tag, entry), so a tag filter is an index lookup instead of a scan of the tags text.
gallery_tags = sa.Table(
    "gallery_tags",
    metadata,
    sa.Column("tag", sa.String(40), primary_key=True),
    sa.Column(
        "prompt_row",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("gallery_prompts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)

#: Sentence embeddings of gallery prompts, computed once each by the semantic backfill. `seq` grows with every
#: insert, so each replica's nearest-neighbour index follows new vectors with `seq > last seen`.
gallery_embeddings = sa.Table(
    "gallery_embeddings",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column(
        "prompt_row",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("gallery_prompts.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    #: float32 little-endian, unit norm.
    sa.Column("vector", sa.LargeBinary, nullable=False),
)

#: Engine-specific search structures beside gallery_prompts that schema comparison leaves out: the FTS5 table
#: and its shadow tables (SQLite), the tsvector column and its GIN index (PostgreSQL).
SEARCH_INDEX_OBJECTS = frozenset({"gallery_fts", "search_vector", "ix_gallery_search"})


def include_in_schema_comparison(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's include_object hook: everything but SEARCH_INDEX_OBJECTS (and the FTS5 shadow tables)."""
    if name is None:
        return True
    return name not in SEARCH_INDEX_OBJECTS and not name.startswith("gallery_fts_")


#: API keys. Only a SHA-256 of each key is kept: keys are 256-bit random strings, so a slow password hash would
#: add nothing but latency. `key_id` is the key's public prefix, shown in listings and logs.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    #: user or admin (likeness.identity.keys.Role).
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("create_time", Seconds, nullable=False),
    #: NULL: never expires.
    sa.Column("expire_time", Seconds, nullable=True),
    sa.Column("revoke_time", Seconds, nullable=True),
)
sa.Index("ix_api_keys_tenant", api_keys.c.tenant, api_keys.c.key_id)


#: Per-tenant quota overrides set by operators (`likeness quotas set`); a NULL limit falls back to the
#: server's default (`--quota-*` settings). 0 means unlimited.
tenant_quotas = sa.Table(
    "tenant_quotas",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("max_active_jobs", sa.Integer, nullable=True),
    sa.Column("max_subject_models", sa.Integer, nullable=True),
    sa.Column("images_per_minute", sa.Integer, nullable=True),
    sa.Column("update_time", Seconds, nullable=False),
)

#: Images generated per tenant and minute (fixed windows of the database clock), shared by every inference
#: replica: the counter an images-per-minute quota is enforced on. Old windows are pruned as new ones start.
image_usage = sa.Table(
    "image_usage",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    #: Start of the minute, in whole seconds since the epoch.
    sa.Column("window_start", sa.BigInteger, primary_key=True),
    sa.Column("images", sa.Integer, nullable=False),
)

#: One row per erasure, kept as the record that it happened: what was named and the receipt (ids and counts
#: only; nothing derived from the photos).
erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("erasure_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(63), nullable=False),
    #: subject or tenant.
    sa.Column("scope", sa.String(16), nullable=False),
    #: The key id of the caller ("" with authentication off).
    sa.Column("requested_by", sa.String(32), nullable=False, server_default=""),
    sa.Column("erase_time", Seconds, nullable=False),
    sa.Column("receipt", sa.JSON, nullable=False),
)
sa.Index("ix_erasures_tenant", erasures.c.tenant, erasures.c.erase_time)

#: A training job's webhook (revision 0005): where its events are POSTed and the secret that signs them. The
#: secret is read only by the dispatcher; no RPC returns it and nothing logs it.
job_webhooks = sa.Table(
    "job_webhooks",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("training_jobs.job_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.String(256), nullable=False),
    sa.Column("send_progress", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("progress_interval_seconds", sa.Integer, nullable=False, server_default="30"),
    #: When the last progress delivery was queued (database clock): progress is throttled against it.
    sa.Column("last_progress_time", Seconds, nullable=True),
)

#: The webhook outbox: one row per event to deliver, written in the transaction that records the event, and
#: its attempts. A dispatcher claims due rows with a lease (`lease_owner`, `lease_expires_at`), so replicas never
#: send one delivery at the same time; an expired lease (a replica that died mid-send) makes it due again.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(64), sa.ForeignKey("training_jobs.job_id", ondelete="CASCADE"), nullable=False),
    #: training_job.state_changed or training_job.progress.
    sa.Column("event_type", sa.String(40), nullable=False),
    #: The job event it carries.
    sa.Column("sequence", sa.BigInteger, nullable=False),
    #: The exact JSON body, signed anew (fresh timestamp) on every attempt.
    sa.Column("body", sa.Text, nullable=False),
    #: PENDING, RETRYING, DELIVERED or FAILED (likeness.trainer.webhooks.DeliveryState).
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_http_status", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("create_time", Seconds, nullable=False),
    sa.Column("last_attempt_time", Seconds, nullable=True),
    #: When the next attempt is due; NULL once DELIVERED or FAILED.
    sa.Column("next_attempt_time", Seconds, nullable=True),
    sa.Column("lease_owner", sa.String(255), nullable=True),
    sa.Column("lease_expires_at", Seconds, nullable=True),
)
sa.Index("ix_webhook_deliveries_due", webhook_deliveries.c.state, webhook_deliveries.c.next_attempt_time)
sa.Index("ix_webhook_deliveries_job", webhook_deliveries.c.job_id, webhook_deliveries.c.sequence)
