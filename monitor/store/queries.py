"""Reads shared by the CLI, exports and pages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from monitor.store.models import Item, ItemSource


def iter_items(
    session: Session,
    *,
    since: datetime | None = None,
    limit: int | None = None,
    matched_only: bool = False,
    batch: int = 1000,
) -> Iterator[tuple[Item, list[str]]]:
    """Items newest first with the ids of every feed that carried them, in batches to keep memory flat."""
    q = select(Item).where(col(Item.pruned).is_(False))
    if since is not None:
        q = q.where(col(Item.fetched) >= since)
    q = q.order_by(col(Item.published).desc(), col(Item.id).desc())
    if limit:
        q = q.limit(limit)
    offset = 0
    seen = 0
    while True:
        rows = list(session.exec(q.offset(offset).limit(min(batch, (limit - seen) if limit else batch))))
        if not rows:
            return
        offset += len(rows)
        feeds: dict[int, list[str]] = defaultdict(list)
        ids = [r.id for r in rows]
        for src in session.exec(
            select(ItemSource).where(col(ItemSource.item_id).in_(ids)).order_by(col(ItemSource.id))
        ):
            feeds[src.item_id].append(src.feed_id)
        for r in rows:
            if matched_only and not r.categories:
                continue
            assert r.id is not None
            seen += 1
            yield r, feeds.get(r.id, [r.feed_id])
            if limit and seen >= limit:
                return


def item_json(item: Item, feeds: list[str]) -> dict[str, Any]:
    """The export record (DESIGN.md): stable field names other tools rely on."""
    return {
        "id": item.id,
        "feed": item.feed_id,
        "feeds": feeds,
        "url": item.url,
        "title": item.title,
        "text": item.text,
        "language": item.language,
        "author": item.author,
        "published": item.published.isoformat(),
        "published_estimated": item.published_estimated,
        "fetched": item.fetched.isoformat(),
        "updated": item.updated.isoformat() if item.updated else None,
        "categories": list(item.categories),
        "countries": list(item.countries),
        "incident": item.incident_id,
        "grouping": item.grouping,  # why it is in that incident
        "matches": item.matches,
        "rules_version": item.rules_version,
    }
