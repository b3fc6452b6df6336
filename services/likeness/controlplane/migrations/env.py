"""Alembic environment: runs on the connection `likeness.controlplane.migrate` hands over (inside its lock)."""

from __future__ import annotations

from alembic import context

from likeness.controlplane.schema import include_in_schema_comparison, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    include_object=include_in_schema_comparison,
)
with context.begin_transaction():
    context.run_migrations()
