"""item display: what the site shows of a report that grouping works out once (monitor.incidents.display)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 16:45:00

A nullable column only. Reports stored before it have none: the site works their actors and HTML out at every
build, as before, until grouping sees them again. The downgrade drops the column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    # Natively (SQLite 3.35+): a batch rebuild would drop the item table, which item_source's key refers to.
    with op.batch_alter_table("item", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("display")
