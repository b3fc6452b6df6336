"""Quotas and erasure: per-tenant quota overrides, the shared images-per-minute counter, the record of each
erasure, the digest of the request that created each job (idempotency keys), the class-image set each job trains with (backfilled from the stored configs) and the dataset each
subject model was trained from (backfilled from its job).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from likeness.storage.layout import class_image_cache_key

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of the schema as this revision made it (see 0001).
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("class_images_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))
        batch.create_index("ix_training_jobs_class_images", ["class_images_key"], unique=False)
    with op.batch_alter_table("subject_models") as batch:
        batch.add_column(sa.Column("dataset_id", sa.String(length=64), server_default="", nullable=False))
    op.execute(
        "UPDATE subject_models SET dataset_id = COALESCE((SELECT training_jobs.dataset_id FROM training_jobs "
        "WHERE training_jobs.job_id = subject_models.job_id), '')"
    )
    jobs = sa.table("training_jobs", sa.column("job_id"), sa.column("config", sa.JSON), sa.column("class_images_key"))
    connection = op.get_bind()
    for job_id, config in connection.execute(sa.select(jobs.c.job_id, jobs.c.config)).all():
        key = _class_images_key(config)
        if key:
            connection.execute(sa.update(jobs).where(jobs.c.job_id == job_id).values(class_images_key=key))
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("max_active_jobs", sa.Integer(), nullable=True),
        sa.Column("max_subject_models", sa.Integer(), nullable=True),
        sa.Column("images_per_minute", sa.Integer(), nullable=True),
        sa.Column("update_time", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "image_usage",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "window_start"),
    )
    op.create_table(
        "erasures",
        sa.Column("erasure_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=32), server_default="", nullable=False),
        sa.Column("erase_time", sa.Float(precision=53), nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("erasure_id"),
    )
    op.create_index("ix_erasures_tenant", "erasures", ["tenant", "erase_time"], unique=False)


def _class_images_key(config: dict[str, Any]) -> str:
    """TrainingConfig.class_images_key as of this revision, from the stored config document."""
    prior = config.get("prior") or {}
    if not prior.get("enabled") or prior.get("class_dataset_id") or not config.get("resolution"):
        return ""
    return class_image_cache_key(
        config["base_model"], prior["class_prompt"], config["resolution"], prior["num_class_images"]
    )


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("image_usage")
    op.drop_table("tenant_quotas")
    with op.batch_alter_table("subject_models") as batch:
        batch.drop_column("dataset_id")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_index("ix_training_jobs_class_images")
        batch.drop_column("class_images_key")
        batch.drop_column("request_digest")
