"""search index: an FTS5 table on SQLite, a tsvector table with a GIN index on PostgreSQL, filled from the
items already stored

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 07:00:00

The tables are not ORM models (FTS5 is a virtual table; the two databases need different ones); their layout
and the text they hold are monitor.search's (backends, text). They are filled by 0010 (which rebuilds the
index), so `monitor db upgrade` indexes an existing archive once.
"""

from __future__ import annotations

from alembic import op

from monitor.search.index import create_index_tables, drop_index_tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0010 rebuilds the index from the stored items: filling it here too would index an archive twice
    create_index_tables(op.get_bind())


def downgrade() -> None:
    drop_index_tables(op.get_bind())
