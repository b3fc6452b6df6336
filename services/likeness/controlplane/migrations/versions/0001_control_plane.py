"""The control plane: training jobs, their events and leases, datasets, subject models.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from likeness.controlplane.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("training_jobs", "job_events", "job_leases", "datasets", "subject_models")


def upgrade() -> None:
    # The first revision creates the schema as `schema.py` defines it; later revisions alter it step by step.
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])


def downgrade() -> None:
    bind = op.get_bind()
    metadata.drop_all(bind, tables=[metadata.tables[name] for name in reversed(TABLES)])
