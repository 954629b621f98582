"""Feed rows: keeping them in step with config/feeds.yaml and with feeds added from the CLI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from monitor.config.models import FeedConfig
from monitor.store.models import Feed


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # left config: kept with their items, not polled


def due(now: datetime, *, ignore_schedule: bool = False) -> list[Any]:
    """Where-clauses of the feeds a poll should take now: polled (not removed, enabled, not muted), due (never
    checked, or their next check has come; all of them with `ignore_schedule`), and not leased to a worker."""
    clauses: list[Any] = [
        col(Feed.removed).is_(False),
        col(Feed.enabled).is_(True),
        col(Feed.muted).is_(False),
        unleased(now),
    ]
    if not ignore_schedule:
        clauses.append(or_(col(Feed.next_check_at).is_(None), col(Feed.next_check_at) <= now))
    return clauses


def unleased(now: datetime) -> Any:
    return or_(col(Feed.lease_until).is_(None), col(Feed.lease_until) < now)


def claim_feeds(
    session: Session,
    *,
    now: datetime,
    feed_ids: Sequence[str] | None = None,
    ignore_schedule: bool = False,
    worker: str | None = None,
    lease_seconds: float = 900,
    limit: int | None = None,
) -> list[Feed]:
    """The feeds to poll now, oldest check first, leased to `worker` so no other worker polls them meanwhile.

    On PostgreSQL the rows are locked with SKIP LOCKED while the lease is written, so workers racing for the
    same due feeds each get a different share.
    """
    if feed_ids:  # named feeds are polled even if muted or not due
        q = select(Feed).where(col(Feed.removed).is_(False), col(Feed.id).in_(list(feed_ids)), unleased(now))
    else:
        q = select(Feed).where(*due(now, ignore_schedule=ignore_schedule))
    q = q.order_by(col(Feed.next_check_at).asc().nulls_first(), col(Feed.id))
    if limit:
        q = q.limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    feeds = list(session.exec(q).all())
    if worker:
        for f in feeds:
            f.lease_owner, f.lease_until = worker, now + timedelta(seconds=lease_seconds)
            session.add(f)
    return feeds


def _reset_validators(feed: Feed) -> None:
    feed.etag = feed.last_modified = feed.body_hash = None
    feed.next_check_at = None
    feed.muted, feed.mute_reason, feed.error_count, feed.error_kind = False, None, 0, None


# The columns config decides for a feed it lists, in the order of `_configured_values`.
_FROM_CONFIG = ("config_url", "title", "language", "country", "tags", "interval", "enabled", "origin")


def _configured_values(fc: FeedConfig) -> tuple[Any, ...]:
    return (fc.url, fc.title, fc.language, fc.country, list(fc.tags), fc.interval, fc.enabled, "config")


def sync_feeds(session: Session, configured: Iterable[FeedConfig]) -> SyncReport:
    """Make the feed table match the config. Config is the truth for what it lists; feeds added from the CLI
    are left alone; feeds removed from config stop being polled but keep their items.

    Every cycle calls this and the config rarely changes: only the compared columns are read for all feeds,
    and only the rows that differ are loaded as objects (loading all of them was a fifth of an unchanged cycle).
    """
    report = SyncReport()
    configured = list(configured)
    columns = [col(Feed.id), *(col(getattr(Feed, name)) for name in _FROM_CONFIG)]
    stored = {row[0]: tuple(row[1:]) for row in session.execute(select(*columns)).all()}
    seen: set[str] = set()
    touched: list[FeedConfig] = []
    for fc in configured:
        seen.add(fc.id)
        current = stored.get(fc.id)
        if current is None:
            session.add(
                Feed(
                    id=fc.id,
                    url=fc.url,
                    config_url=fc.url,
                    title=fc.title,
                    language=fc.language,
                    country=fc.country,
                    tags=list(fc.tags),
                    interval=fc.interval,
                    enabled=fc.enabled,
                    origin="config",
                )
            )
            report.added.append(fc.id)
        elif current != _configured_values(fc):
            touched.append(fc)
    origin, enabled = _FROM_CONFIG.index("origin"), _FROM_CONFIG.index("enabled")
    dropped = [
        fid
        for fid, values in stored.items()
        if fid not in seen and values[origin] == "config" and values[enabled]
    ]
    rows = _load(session, [fc.id for fc in touched] + dropped)
    for fc in touched:
        row = rows[fc.id]
        if row.config_url != fc.url:
            # An edited address wins over a redirect learnt for the old one.
            row.url = fc.url
            _reset_validators(row)
        for name, value in zip(_FROM_CONFIG, _configured_values(fc), strict=True):
            setattr(row, name, value)
        session.add(row)
        report.changed.append(fc.id)
    for fid in dropped:
        row = rows[fid]
        row.enabled = False
        session.add(row)
        report.dropped.append(fid)
    return report


def _load(session: Session, ids: Sequence[str]) -> dict[str, Feed]:
    rows: dict[str, Feed] = {}
    for i in range(0, len(ids), 500):  # bounded IN lists
        chunk = list(ids[i : i + 500])
        rows.update((f.id, f) for f in session.exec(select(Feed).where(col(Feed.id).in_(chunk))).all())
    return rows


def add_feed(
    session: Session,
    *,
    id: str,
    url: str,
    title: str | None = None,
    language: str | None = None,
    country: str | None = None,
    tags: Iterable[str] = (),
) -> Feed:
    row = session.get(Feed, id)
    if row is not None and not row.removed:
        raise ValueError(f"a feed with id {id!r} already exists ({row.url})")
    if row is None:
        row = Feed(id=id, url=url, config_url=url, origin="cli")
    row.url = row.config_url = url
    row.title, row.language, row.country, row.tags = title, language, country, list(tags)
    row.removed, row.enabled = False, True
    _reset_validators(row)
    session.add(row)
    return row


def remove_feed(session: Session, feed_id: str) -> Feed:
    row = session.get(Feed, feed_id)
    if row is None or row.removed:
        raise KeyError(feed_id)
    row.removed = True
    session.add(row)
    return row
