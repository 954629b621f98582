"""item grouping and incident seq: each report's grouping reason moves from its incident's explanation to the
item; incidents are numbered by the grouping call that last changed them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 02:10:00

An incident's `explanation` held one entry per report, so a report joining an incident of a thousand reports
rewrote all thousand entries. Each entry now lives on its item (`item.grouping`); the incident keeps the rule.
`incident.seq` lets a process's cache read only the incidents changed since it last looked (see
monitor.incidents); existing incidents start at 0, which every cache reads afresh anyway.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_incident = sa.table("incident", sa.column("id", sa.Integer), sa.column("explanation", sa.JSON))
_item = sa.table(
    "item", sa.column("id", sa.Integer), sa.column("incident_id", sa.Integer), sa.column("grouping", sa.JSON)
)


def upgrade() -> None:
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grouping", sa.JSON(), nullable=True))
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.create_index(batch_op.f("ix_incident_seq"), ["seq"], unique=False)
    conn = op.get_bind()
    last = 0
    while True:  # in batches: a database of a few years holds tens of thousands of incidents
        rows = conn.execute(
            sa.select(_incident.c.id, _incident.c.explanation)
            .where(_incident.c.id > last)
            .order_by(_incident.c.id)
            .limit(500)
        ).all()
        if not rows:
            break
        for inc_id, explanation in rows:
            last = inc_id
            explanation = explanation if isinstance(explanation, dict) else {}
            entries = explanation.get("items") or {}
            for item_id, entry in entries.items() if isinstance(entries, dict) else ():
                if str(item_id).isdigit() and isinstance(entry, dict):
                    conn.execute(
                        _item.update()
                        .where(_item.c.id == int(item_id), _item.c.incident_id == inc_id)
                        .values(grouping=entry)
                    )
            if "items" in explanation:
                rest = {k: v for k, v in explanation.items() if k != "items"}
                conn.execute(_incident.update().where(_incident.c.id == inc_id).values(explanation=rest))


def downgrade() -> None:
    conn = op.get_bind()
    found: dict[int, dict[str, object]] = {}
    q = sa.select(_item.c.id, _item.c.incident_id, _item.c.grouping).where(
        _item.c.incident_id.is_not(None), _item.c.grouping.is_not(None)
    )
    for item_id, inc_id, entry in conn.execute(q):
        if not isinstance(entry, dict):
            continue  # a JSON null
        found.setdefault(inc_id, {})[str(item_id)] = entry
    for inc_id, entries in found.items():
        explanation = conn.execute(
            sa.select(_incident.c.explanation).where(_incident.c.id == inc_id)
        ).scalar_one_or_none()
        merged = {**(explanation if isinstance(explanation, dict) else {}), "items": entries}
        conn.execute(_incident.update().where(_incident.c.id == inc_id).values(explanation=merged))
    # Natively (SQLite 3.35+): a batch rebuild would drop the item table, which item_source's key refers to.
    with op.batch_alter_table("item", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("grouping")
    with op.batch_alter_table("incident", schema=None, recreate="never") as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_seq"))
        batch_op.drop_column("seq")
