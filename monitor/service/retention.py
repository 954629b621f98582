"""Retention: keep the database bounded on a long run without forgetting what was seen.

Items that matched no category and belong to no incident are pruned once older than `unmatched_days`: their
text and HTML are cleared and `pruned` is set. The row itself (URL, content hash) and its `item_source` rows
stay, so the same entry met again is recognised and not stored a second time (monitor.store.items treats a
pruned item as unchanged). Matched items and incidents are kept whole. A pruned item's article record loses its
texts too (monitor.store.evidence.forget_articles); `prune_evidence` drops old evidence texts and raw pages, but
never those of items in an incident unless told to (`include_incidents`): they are what proves a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, update
from sqlmodel import col, select

from monitor.search.index import index_items
from monitor.store.engine import session_scope
from monitor.store.evidence import forget_articles
from monitor.store.evidence import prune_evidence as _prune_evidence
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
                forget_articles(s, [i for i in ids if i is not None])
                index_items(s, ids)  # the pruned text must not stay findable; the title still is
                pruned += len(ids)
    return RetentionReport(cutoff=cutoff, pruned=pruned)


def prune_evidence(
    engine: Engine, *, days: int, now: datetime | None = None, include_incidents: bool = False
) -> RetentionReport:
    """Drop the evidence texts and raw pages read more than `days` ago; items in an incident keep theirs unless
    `include_incidents`."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    pruned, after = 0, 0
    while True:
        with session_scope(engine) as s:
            n, last = _prune_evidence(s, before=cutoff, include_incidents=include_incidents, after=after)
        pruned += n
        if last is None:
            break
        after = last
    return RetentionReport(cutoff=cutoff, pruned=pruned)
