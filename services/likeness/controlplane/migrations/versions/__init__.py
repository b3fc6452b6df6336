"""Alembic revisions of the control-plane schema, oldest first (Alembic skips this file)."""
