"""Which incidents a digest takes, and in which order a message shows them.

select_incidents(session, digest, categories, now=, position=) -> [Pick]   new or updated since the position,
    passing the filters, not yet delivered at their current version (only ids and a few columns: a
    selection of thousands stays small)
message_order(picks, categories) -> [Pick]   most severe first, then most reported, then most recent
passing_categories(incident_categories, digest, categories) -> [id]   most severe first
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select as sa_select
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


@dataclass(frozen=True, slots=True)
class Pick:
    """One incident version a digest takes: what ordering, counting and the delivery record need, no text."""

    id: int
    version: datetime  # the incident's updated_at
    kind: str  # new | update
    prev_version: datetime | None  # the version delivered before (updates)
    prev_items: int  # its number of reports then
    item_count: int
    first_seen: datetime
    last_seen: datetime
    categories: tuple[str, ...]  # the incident's categories that pass the filter, most severe first
    severity: str  # of the first of them

    @property
    def category(self) -> str:
        return self.categories[0]


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
        set(out), key=lambda c: (rank(cats[c].severity if c in cats else DEFAULT_LEVEL), order.get(c, 99), c)
    )


def message_order(picks: Iterable[Pick], cats: dict[str, CategoryInfo]) -> list[Pick]:
    """The order in which a message takes incidents in full: most severe first, then the most reported (a story
    many outlets carry matters more than a single mention), then the most recent, then by id so reruns agree."""
    order = {cid: i for i, cid in enumerate(cats)}
    return sorted(
        picks,
        key=lambda p: (
            rank(p.severity),
            -p.item_count,
            -p.last_seen.timestamp(),
            order.get(p.category, 99),
            p.id,
        ),
    )


def select_incidents(
    session: Session,
    d: DigestConfig,
    cats: dict[str, CategoryInfo],
    *,
    now: datetime,
    position: datetime | None,
) -> list[Pick]:
    """Incidents new or updated since `position` that pass the filters and are not yet delivered at this
    version, in the order they changed."""
    lower = position - POSITION_SLACK if position else now - timedelta(seconds=d.first_lookback)
    countries = set(d.filters.countries)
    candidates: list[tuple[int, datetime, int, datetime, datetime, list[str]]] = []
    rows = session.execute(
        sa_select(
            col(Incident.id),
            col(Incident.updated_at),
            col(Incident.item_count),
            col(Incident.first_seen),
            col(Incident.last_seen),
            col(Incident.categories),
            col(Incident.countries),
        )
        # An incident left with no reports (its last one rejected, reclassified away, or merged elsewhere) has
        # nothing to tell: it is not delivered, not even as an update.
        .where(
            col(Incident.updated_at) > lower, col(Incident.updated_at) <= now, col(Incident.item_count) > 0
        )
        .order_by(col(Incident.updated_at), col(Incident.id))
    )
    for iid, updated, n_items, first, last, categories, inc_countries in rows:
        if iid is None or (countries and not countries.intersection(inc_countries or [])):
            continue
        passing = passing_categories(categories or [], d, cats)
        if passing:
            candidates.append((iid, updated, n_items, first, last, passing))
    if not candidates:
        return []
    ids = [c[0] for c in candidates]

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

    tags = set(d.filters.feed_tags)
    from_tagged: set[int] | None = None
    if tags:
        tagged = {f.id for f in session.exec(select(Feed)) if tags.intersection(f.tags or [])}
        from_tagged = _incidents_from_feeds(session, ids, tagged)

    out: list[Pick] = []
    for iid, updated, n_items, first, last, passing in candidates:
        prev = delivered.get(iid)
        if prev is not None and prev[0] >= updated:
            continue  # this version was delivered already
        if from_tagged is not None and iid not in from_tagged:
            continue
        primary = passing[0]
        out.append(
            Pick(
                id=iid,
                version=updated,
                kind="update" if prev else "new",
                prev_version=prev[0] if prev else None,
                prev_items=prev[1] if prev else 0,
                item_count=n_items,
                first_seen=first,
                last_seen=last,
                categories=tuple(passing),
                severity=cats[primary].severity if primary in cats else DEFAULT_LEVEL,
            )
        )
    return out


def _incidents_from_feeds(session: Session, incident_ids: Sequence[int], feeds: set[str]) -> set[int]:
    """The incidents with a report from one of `feeds`: a report's feeds are those of its sources (an item seen in
    several feeds has one source each), or its own feed when it has no source rows."""
    out: set[int] = set()
    for chunk in chunks(incident_ids):
        item_feed: dict[int, tuple[int, str]] = {}
        for item_id, incident_id, feed_id in session.exec(
            select(Item.id, Item.incident_id, Item.feed_id).where(col(Item.incident_id).in_(chunk))
        ):
            if item_id is not None and incident_id is not None:
                item_feed[item_id] = (incident_id, feed_id)
        source_feeds: dict[int, set[str]] = defaultdict(set)
        item_ids = list(item_feed)
        for part in chunks(item_ids):
            for item_id, feed_id in session.exec(
                select(ItemSource.item_id, ItemSource.feed_id).where(col(ItemSource.item_id).in_(part))
            ):
                source_feeds[item_id].add(feed_id)
        for item_id, (incident_id, own) in item_feed.items():
            if (source_feeds.get(item_id) or {own}) & feeds:
                out.add(incident_id)
    return out
