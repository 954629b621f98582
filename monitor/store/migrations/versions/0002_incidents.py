"""incidents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 23:24:26.132335
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import monitor.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("severity", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("first_seen", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("last_seen", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", monitor.store.types.UTCDateTime(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_first_seen"), ["first_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_incident_last_seen"), ["last_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_incident_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_updated_at"))
        batch_op.drop_index(batch_op.f("ix_incident_last_seen"))
        batch_op.drop_index(batch_op.f("ix_incident_first_seen"))

    op.drop_table("incident")
