"""Job webhooks: each job's webhook (URL, signing secret, progress settings) and the outbox of deliveries with
their attempts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of the schema as this revision made it (see 0001).
    op.create_table(
        "job_webhooks",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=256), nullable=False),
        sa.Column("send_progress", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("progress_interval_seconds", sa.Integer(), server_default="30", nullable=False),
        sa.Column("last_progress_time", sa.Float(precision=53), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_http_status", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("create_time", sa.Float(precision=53), nullable=False),
        sa.Column("last_attempt_time", sa.Float(precision=53), nullable=True),
        sa.Column("next_attempt_time", sa.Float(precision=53), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.Float(precision=53), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_time"], unique=False)
    op.create_index("ix_webhook_deliveries_job", "webhook_deliveries", ["job_id", "sequence"], unique=False)


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("job_webhooks")
