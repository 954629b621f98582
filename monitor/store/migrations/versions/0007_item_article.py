"""item_article: article pages fetched for teaser-only entries, their retry state and the evidence kept

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:45:00

A new table only; the downgrade drops it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_article",
        sa.Column("item_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("classified", sa.String(length=8), nullable=False),
        sa.Column("teaser", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("etag", sa.String(length=1024), nullable=True),
        sa.Column("last_modified", sa.String(length=256), nullable=True),
        sa.Column("language", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("fetched_at", UTCDateTime(), nullable=True),
        sa.Column("final_url", sa.String(length=2048), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("encoding", sa.String(length=32), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("raw_zlib", sa.LargeBinary(), nullable=True),
        sa.Column("raw_size", sa.Integer(), nullable=True),
        sa.Column("evidence", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("item_id"),
    )
    op.create_index("ix_item_article_state", "item_article", ["state"])
    op.create_index("ix_item_article_next_attempt_at", "item_article", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_item_article_next_attempt_at", table_name="item_article")
    op.drop_index("ix_item_article_state", table_name="item_article")
    op.drop_table("item_article")
