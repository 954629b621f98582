"""Retention: keep the database bounded on a long run without forgetting what was seen.

Items that matched no category and belong to no incident are pruned once older than `unmatched_days`: their
text and HTML are cleared and `pruned` is set. The row itself (URL, content hash) and its `item_source` rows
stay, so the same entry met again is recognised and not stored a second time (monitor.store.items treats a
pruned item as unchanged). Matched items and incidents are kept whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, update
from sqlmodel import col, select

from monitor.store.engine import session_scope
from monitor.store.models import Item
from monitor.store.types import utcnow


@dataclass(frozen=True)
class RetentionReport:
    cutoff: datetime
    pruned: int


def prune_unmatched(
    engine: Engine, *, days: int, now: datetime | None = None, batch: int = 1000
) -> RetentionReport:
    """Prune unmatched items fetched more than `days` ago, in batches of one transaction each."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    pruned = 0
    after = 0
    while True:
        with session_scope(engine) as s:
            # Category lists are JSON, which SQLite and PostgreSQL query differently: read the candidates'
            # lists and decide here, which also keeps "matched" meaning exactly what the store wrote.
            rows = s.exec(
                select(Item.id, Item.categories)
                .where(
                    col(Item.pruned).is_(False),
                    col(Item.fetched) < cutoff,
                    col(Item.incident_id).is_(None),
                    col(Item.id) > after,
                )
                .order_by(col(Item.id))
                .limit(batch)
            ).all()
            if not rows:
                break
            after = max(r[0] for r in rows if r[0] is not None)
            ids = [r[0] for r in rows if not r[1]]
            if ids:
                s.execute(
                    update(Item)
                    .where(col(Item.id).in_(ids), col(Item.pruned).is_(False))
                    .values(pruned=True, text="", html="")
                )
                pruned += len(ids)
    return RetentionReport(cutoff=cutoff, pruned=pruned)
