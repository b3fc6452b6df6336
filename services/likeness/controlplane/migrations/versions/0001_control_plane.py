"""The control plane: training jobs, their events and leases, datasets, subject models.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of the schema as this revision made it: later changes to schema.py need a new revision
    # (tests/trainer/test_control_plane_contract.py compares the migrated database with schema.py).
    op.create_table(
        "datasets",
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("display_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("source", sa.String(length=32), server_default="", nullable=False),
        sa.Column("create_time", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id"),
    )
    op.create_index("ix_datasets_tenant", "datasets", ["tenant", "dataset_id"], unique=False)
    op.create_table(
        "subject_models",
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("base_model", sa.String(length=128), nullable=False),
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("class_noun", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("create_time", sa.Float(precision=53), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )
    op.create_index("ix_subject_models_tenant", "subject_models", ["tenant", "model_id"], unique=False)
    op.create_table(
        "training_jobs",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("base_model", sa.String(length=128), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("create_time", sa.Float(precision=53), nullable=False),
        sa.Column("start_time", sa.Float(precision=53), nullable=True),
        sa.Column("end_time", sa.Float(precision=53), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("last_checkpoint_step", sa.Integer(), server_default="0", nullable=False),
        sa.Column("resume_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.Float(precision=53), nullable=True),
        sa.Column("fence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("stop_request", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("job_id"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_training_jobs_idempotency"),
    )
    op.create_index("ix_training_jobs_claim", "training_jobs", ["state", "priority", "create_time"], unique=False)
    op.create_index("ix_training_jobs_tenant", "training_jobs", ["tenant", "job_id"], unique=False)
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Float(precision=53), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("fence", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "sequence"),
    )
    op.create_table(
        "job_leases",
        sa.Column("lease_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("worker_id", sa.String(length=255), nullable=False),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.Float(precision=53), nullable=False),
        sa.Column("released_at", sa.Float(precision=53), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("lease_id"),
    )
    op.create_index("ix_job_leases_job", "job_leases", ["job_id", "fence"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_leases_job", table_name="job_leases")
    op.drop_table("job_leases")
    op.drop_table("job_events")
    op.drop_index("ix_training_jobs_tenant", table_name="training_jobs")
    op.drop_index("ix_training_jobs_claim", table_name="training_jobs")
    op.drop_table("training_jobs")
    op.drop_index("ix_subject_models_tenant", table_name="subject_models")
    op.drop_table("subject_models")
    op.drop_index("ix_datasets_tenant", table_name="datasets")
    op.drop_table("datasets")
