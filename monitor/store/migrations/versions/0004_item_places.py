"""item places: the gazetteer entries an item names, for grouping across languages

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 00:04:35.434270
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows already stored get [] (no places known) until they are classified again.
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("places", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_column("places")
