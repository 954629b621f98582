"""Which incidents a digest takes: new or updated since the subscription's position, passing its filters, and not
already delivered at their current version.

    select_incidents(session, digest, categories, now=, position=) -> [Selected]
    passing_categories(incident_categories, digest, categories) -> [id]   most severe first
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from monitor.config.digests import DigestConfig
from monitor.rules.explain import CategoryInfo
from monitor.severity import DEFAULT_LEVEL, rank
from monitor.store.digest_models import DigestEntry, DigestOutbox
from monitor.store.models import Feed, Incident, Item, ItemSource

# Transactions that commit late can carry an updated_at a little before the position; looking back this far
# re-reads them, and digest_entry keeps what was already delivered from coming back.
POSITION_SLACK = timedelta(hours=1)
CHUNK = 500  # ids per IN (...) query


def chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


@dataclass
class Selected:
    incident: Incident
    kind: str
    prev_version: datetime | None
    prev_items: int
    categories: list[str]  # the incident's categories that pass the filter, most severe first
    items: list[Item]


def passing_categories(
    incident_categories: Iterable[str], d: DigestConfig, cats: dict[str, CategoryInfo]
) -> list[str]:
    """The incident's categories this digest shows, most severe first (then in config order)."""
    order = {cid: i for i, cid in enumerate(cats)}
    wanted = set(d.filters.categories)
    min_rank = rank(d.filters.min_severity)
    out = []
    for cid in incident_categories:
        if wanted and cid not in wanted:
            continue
        sev = cats[cid].severity if cid in cats else DEFAULT_LEVEL
        if rank(sev) > min_rank:
            continue
        out.append(cid)
    return sorted(
        set(out), key=lambda c: (rank(cats[c].severity if c in cats else "medium"), order.get(c, 99), c)
    )


def select_incidents(
    session: Session,
    d: DigestConfig,
    cats: dict[str, CategoryInfo],
    *,
    now: datetime,
    position: datetime | None,
) -> list[Selected]:
    """Incidents new or updated since `position` that pass the filters and are not yet delivered at this version."""
    lower = position - POSITION_SLACK if position else now - timedelta(seconds=d.first_lookback)
    rows = list(
        session.exec(
            select(Incident)
            .where(col(Incident.updated_at) > lower, col(Incident.updated_at) <= now)
            .order_by(col(Incident.updated_at), col(Incident.id))
        )
    )
    countries = set(d.filters.countries)
    candidates: list[tuple[Incident, list[str]]] = []
    for inc in rows:
        if countries and not countries.intersection(inc.countries or []):
            continue
        passing = passing_categories(inc.categories or [], d, cats)
        if passing:
            candidates.append((inc, passing))
    if not candidates:
        return []
    ids = [inc.id for inc, _ in candidates if inc.id is not None]

    delivered: dict[int, tuple[datetime, int]] = {}
    for chunk in chunks(ids):
        q = (
            select(DigestEntry.incident_id, DigestEntry.version, DigestEntry.item_count)
            .join(DigestOutbox, col(DigestOutbox.id) == col(DigestEntry.outbox_id))
            .where(
                col(DigestEntry.digest) == d.name,
                col(DigestEntry.incident_id).in_(chunk),
                col(DigestOutbox.status) == "delivered",
            )
        )
        for iid, version, n in session.exec(q):
            if iid not in delivered or version > delivered[iid][0]:
                delivered[iid] = (version, n)

    items: dict[int, list[Item]] = defaultdict(list)
    # A digest shows each report's title, link, source and matched terms, never its text: leaving the texts and
    # HTML in the database takes a quarter off the peak memory of a large digest. raiseload: reading one anyway
    # fails loudly instead of costing a query per report.
    light = [defer(getattr(Item, name), raiseload=True) for name in ("text", "html", "places", "grouping")]
    for chunk in chunks(ids):
        for it in session.exec(
            select(Item)
            .options(*light)
            .where(col(Item.incident_id).in_(chunk))
            .order_by(col(Item.published), col(Item.id))
        ):
            assert it.incident_id is not None
            items[it.incident_id].append(it)

    tags = set(d.filters.feed_tags)
    feeds_of: dict[int, set[str]] = {}
    if tags:
        feeds_of = _feeds_of_items(
            session, [it.id for its in items.values() for it in its if it.id is not None]
        )
        tagged = {f.id for f in session.exec(select(Feed)) if tags.intersection(f.tags or [])}

    out: list[Selected] = []
    for inc, passing in candidates:
        assert inc.id is not None
        prev = delivered.get(inc.id)
        if prev is not None and prev[0] >= inc.updated_at:
            continue  # this version was delivered already
        its = items.get(inc.id, [])
        if tags:
            feeds = {f for it in its if it.id is not None for f in feeds_of.get(it.id, {it.feed_id})}
            if not feeds & tagged:
                continue
        out.append(
            Selected(
                incident=inc,
                kind="update" if prev else "new",
                prev_version=prev[0] if prev else None,
                prev_items=prev[1] if prev else 0,
                categories=passing,
                items=its,
            )
        )
    return out


def _feeds_of_items(session: Session, item_ids: Sequence[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(list(item_ids)):
        for src in session.exec(select(ItemSource).where(col(ItemSource.item_id).in_(chunk))):
            out[src.item_id].add(src.feed_id)
    return out
