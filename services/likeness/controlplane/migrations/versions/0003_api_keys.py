"""API keys: hashed, per tenant and role, revocable, with an optional expiry.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of the schema as this revision made it (see 0001).
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("create_time", sa.Float(precision=53), nullable=False),
        sa.Column("expire_time", sa.Float(precision=53), nullable=True),
        sa.Column("revoke_time", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant", "key_id"], unique=False)


def downgrade() -> None:
    op.drop_table("api_keys")
