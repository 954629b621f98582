"""Feed rows: keeping them in step with config/feeds.yaml and with feeds added from the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import Session, select

from monitor.config.models import FeedConfig
from monitor.store.models import Feed


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # left config: kept with their items, not polled


def _reset_validators(feed: Feed) -> None:
    feed.etag = feed.last_modified = feed.body_hash = None
    feed.next_check_at = None
    feed.muted, feed.mute_reason, feed.error_count, feed.error_kind = False, None, 0, None


def sync_feeds(session: Session, configured: Iterable[FeedConfig]) -> SyncReport:
    """Make the feed table match the config. Config is the truth for what it lists; feeds added from the CLI
    are left alone; feeds removed from config stop being polled but keep their items."""
    report = SyncReport()
    rows = {f.id: f for f in session.exec(select(Feed)).all()}
    seen: set[str] = set()
    for fc in configured:
        seen.add(fc.id)
        row = rows.get(fc.id)
        if row is None:
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
            continue
        before = (
            row.config_url,
            row.title,
            row.language,
            row.country,
            row.tags,
            row.interval,
            row.enabled,
            row.origin,
        )
        if row.config_url != fc.url:
            # An edited address wins over a redirect learnt for the old one.
            row.url = row.config_url = fc.url
            _reset_validators(row)
        row.title, row.language, row.country = fc.title, fc.language, fc.country
        row.tags, row.interval, row.enabled, row.origin = list(fc.tags), fc.interval, fc.enabled, "config"
        if before != (
            row.config_url,
            row.title,
            row.language,
            row.country,
            row.tags,
            row.interval,
            row.enabled,
            row.origin,
        ):
            session.add(row)
            report.changed.append(fc.id)
    for fid, row in rows.items():
        if fid not in seen and row.origin == "config" and row.enabled:
            row.enabled = False
            session.add(row)
            report.dropped.append(fid)
    return report


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
