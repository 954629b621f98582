"""search reindex: the index rebuilt for what it now stores (Kazakh keys for vowel-dropped stems and two-letter
verb roots)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:00:00

The index's tables are dropped and built again from the stored items (monitor.search.index), which is what
makes `monitor db upgrade` bring an existing archive's index up to date. The downgrade keeps the rebuilt index
(0009's code reads it).
"""

from __future__ import annotations

from alembic import op

from monitor.search.index import create_index_tables, drop_index_tables, rebuild_index

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    drop_index_tables(conn)
    create_index_tables(conn)
    rebuild_index(conn)


def downgrade() -> None:
    pass
