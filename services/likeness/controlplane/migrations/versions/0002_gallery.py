"""The gallery: prompts with their parameters and images, exact tag rows, embeddings, and full-text search.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# SQLite: an external-content FTS5 table over gallery_prompts. Porter stemming folds plurals and verb forms.
# Deletes and text updates are kept in step by triggers (the FTS5 manual's pattern); inserts are indexed by the
# store in one INSERT ... SELECT per transaction (likeness.gallery.store), ten times faster than a trigger per row.
_SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE gallery_fts USING fts5(prompt, tags, content='gallery_prompts', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER gallery_fts_delete AFTER DELETE ON gallery_prompts BEGIN "
    "INSERT INTO gallery_fts(gallery_fts, rowid, prompt, tags) VALUES ('delete', old.id, old.prompt, old.tags); END",
    "CREATE TRIGGER gallery_fts_update AFTER UPDATE OF prompt, tags ON gallery_prompts BEGIN "
    "INSERT INTO gallery_fts(gallery_fts, rowid, prompt, tags) VALUES ('delete', old.id, old.prompt, old.tags); "
    "INSERT INTO gallery_fts(rowid, prompt, tags) VALUES (new.id, new.prompt, new.tags); END",
]
# PostgreSQL: a stored generated tsvector (prompt weighted above tags) with a GIN index.
_POSTGRES_SEARCH = [
    "ALTER TABLE gallery_prompts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english'::regconfig, prompt), 'A') || "
    "setweight(to_tsvector('english'::regconfig, tags), 'B')) STORED",
    "CREATE INDEX ix_gallery_search ON gallery_prompts USING gin (search_vector)",
]


def upgrade() -> None:
    # A frozen copy of the schema as this revision made it (see 0001).
    op.create_table(
        "gallery_prompts",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("prompt_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("shared", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), server_default="", nullable=False),
        sa.Column("base_model", sa.String(length=200), server_default="", nullable=False),
        sa.Column("subject_model_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), server_default="[]", nullable=False),
        sa.Column("uses", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("source", sa.String(length=16), server_default="record", nullable=False),
        sa.Column("image_key", sa.String(length=1024), nullable=True),
        sa.Column("thumbnail_key", sa.String(length=1024), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prompt_id"),
    )
    op.create_index(
        "ix_gallery_own_browse", "gallery_prompts", ["tenant", "shared", "uses", "created_at", "id"], unique=False
    )
    op.create_index("ix_gallery_shared_browse", "gallery_prompts", ["shared", "uses", "created_at", "id"], unique=False)
    op.create_index("ix_gallery_subject", "gallery_prompts", ["tenant", "subject_model_id"], unique=False)
    op.create_table(
        "gallery_tags",
        sa.Column("tag", sa.String(length=40), nullable=False),
        sa.Column("prompt_row", _ROW_ID, nullable=False),
        sa.ForeignKeyConstraint(["prompt_row"], ["gallery_prompts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tag", "prompt_row"),
    )
    op.create_table(
        "gallery_embeddings",
        sa.Column("seq", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("prompt_row", _ROW_ID, nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["prompt_row"], ["gallery_prompts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("prompt_row"),
    )
    statements = _POSTGRES_SEARCH if op.get_bind().dialect.name == "postgresql" else _SQLITE_SEARCH
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS gallery_fts")
    op.drop_table("gallery_embeddings")
    op.drop_table("gallery_tags")
    op.drop_table("gallery_prompts")
