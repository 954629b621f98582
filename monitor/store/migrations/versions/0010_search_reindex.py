"""search reindex: the index rebuilt for what it now stores (Kazakh keys for vowel-dropped stems and two-letter
verb roots; on PostgreSQL a smaller match vector and a title-and-lead vector to rank by), and a covering index
of the columns a filtered search reads

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:00:00

The index's tables are dropped and built again from the stored items (monitor.search.index), which is what
makes `monitor db upgrade` bring an existing archive's index up to date (and fill it for an archive older
than 0009, which now only makes the tables). The downgrade drops the covering index and, on PostgreSQL, the
ranking vector, so 0009's code can write the table again; `monitor db reindex` of that version rebuilds the
rest in its own format.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from monitor.search.backends import PG_TABLE
from monitor.search.index import (
    create_filter_index,
    create_index_tables,
    drop_filter_index,
    drop_index_tables,
    rebuild_index,
)

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    drop_index_tables(conn)
    create_index_tables(conn)
    rebuild_index(conn)
    create_filter_index(conn)


def downgrade() -> None:
    conn = op.get_bind()
    drop_filter_index(conn)
    if conn.dialect.name != "sqlite":
        conn.execute(text(f"ALTER TABLE {PG_TABLE} DROP COLUMN IF EXISTS head"))
