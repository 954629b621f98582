"""digests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 23:27:10.641366
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import monitor.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("open_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("position", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sender", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("page_html", sa.Text(), nullable=False),
        sa.Column("page_path", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("incidents", sa.Integer(), nullable=False),
        sa.Column("updates", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("lease_until", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("maybe_sent", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("refused", sa.JSON(), nullable=False),
        sa.Column("delivered_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        sa.UniqueConstraint("open_key"),
    )
    with op.batch_alter_table("digest_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_digest_outbox_digest"), ["digest"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_digest_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "digest_state",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("position", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_run_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_delivered_at", monitor.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_message_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "digest_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("version", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["digest_outbox.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest", "incident_id", "version", name="uq_digest_entry_version"),
    )
    with op.batch_alter_table("digest_entry", schema=None) as batch_op:
        batch_op.create_index("ix_digest_entry_digest_incident", ["digest", "incident_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_digest_entry_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("digest_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_digest_entry_outbox_id"))
        batch_op.drop_index("ix_digest_entry_digest_incident")

    op.drop_table("digest_entry")
    op.drop_table("digest_state")
    with op.batch_alter_table("digest_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_digest_outbox_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_digest_outbox_digest"))

    op.drop_table("digest_outbox")
