"""notify_outbox: one row per digest message and chat target (Apprise), with its own retry state

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:10:00

A new table only; the downgrade drops it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.store.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("shown", sa.String(length=512), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["outbox_id"], ["digest_outbox.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("outbox_id", "target", name="uq_notify_outbox_target"),
    )
    op.create_index("ix_notify_outbox_outbox_id", "notify_outbox", ["outbox_id"])
    op.create_index("ix_notify_outbox_digest", "notify_outbox", ["digest"])
    op.create_index("ix_notify_outbox_next_attempt_at", "notify_outbox", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_table("notify_outbox")
