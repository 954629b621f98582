"""search storage: on PostgreSQL, the ranking vector stays in the row (compressed with lz4 where the server has
it) instead of being moved to the TOAST table

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 17:00:00

A storage setting applies to values written after it, so the index's rows are written again from the stored
items (monitor.search.index.rebuild_index; what 0010 does), which is what brings an existing archive's index
to the new layout; an archive that 0010 has just indexed (it makes the tables with today's settings) is not
indexed twice. Nothing changes on SQLite. The downgrade puts the default storage back for new rows.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from monitor.search.backends import PG_TABLE
from monitor.search.index import create_index_tables, drop_index_tables, rebuild_index

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        return
    storage = conn.execute(
        text(
            f"SELECT attstorage FROM pg_attribute WHERE attrelid = '{PG_TABLE}'::regclass AND attname = 'head'"
        )
    ).scalar_one()
    if storage == "m":  # already MAIN: 0010 wrote the rows in this run
        return
    drop_index_tables(conn)
    create_index_tables(conn)  # with the storage settings (set_index_storage)
    rebuild_index(conn)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        return
    conn.execute(text(f"ALTER TABLE {PG_TABLE} ALTER COLUMN head SET STORAGE EXTENDED"))
    if int(conn.execute(text("SHOW server_version_num")).scalar_one()) >= 140000:  # SET COMPRESSION: 14+
        conn.execute(text(f"ALTER TABLE {PG_TABLE} ALTER COLUMN head SET COMPRESSION DEFAULT"))
