"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 23:19:54.055173
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import monitor.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("config_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("site_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("interval", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("etag", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
        sa.Column("last_modified", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("body_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("last_fetch_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_success_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_full_fetch_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_new_item_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("next_check_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_outcome", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("error_kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("muted", sa.Boolean(), nullable=False),
        sa.Column("mute_reason", sa.Text(), nullable=True),
        sa.Column("publish_interval", sa.Float(), nullable=True),
        sa.Column("ttl", sa.Float(), nullable=True),
        sa.Column("items_total", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("lease_until", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", monitor.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feed", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feed_next_check_at"), ["next_check_at"], unique=False)

    op.create_table(
        "item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feed_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("author", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("published", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("published_estimated", sa.Boolean(), nullable=False),
        sa.Column("fetched", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hash_updates", sa.Integer(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("matches", sa.JSON(), nullable=False),
        sa.Column("rules_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("pruned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_item_content_hash"), ["content_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_feed_id"), ["feed_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_fetched"), ["fetched"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_incident_id"), ["incident_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_published"), ["published"], unique=False)
        batch_op.create_index("ix_item_url", ["url"], unique=True)

    op.create_table(
        "item_source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("feed_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("entry_key", sqlmodel.sql.sqltypes.AutoString(length=1100), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("first_seen", monitor.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"],
            ["feed.id"],
        ),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["item.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("feed_id", "entry_key", name="uq_item_source_feed_entry"),
    )
    with op.batch_alter_table("item_source", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_item_source_item_id"), ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("item_source", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_item_source_item_id"))

    op.drop_table("item_source")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index("ix_item_url")
        batch_op.drop_index(batch_op.f("ix_item_published"))
        batch_op.drop_index(batch_op.f("ix_item_incident_id"))
        batch_op.drop_index(batch_op.f("ix_item_fetched"))
        batch_op.drop_index(batch_op.f("ix_item_feed_id"))
        batch_op.drop_index(batch_op.f("ix_item_content_hash"))

    op.drop_table("item")
    with op.batch_alter_table("feed", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feed_next_check_at"))

    op.drop_table("feed")
