"""Writing and reading article records and evidence (tables in monitor.store.evidence_models).

`record_articles` runs inside a feed's store transaction, after its entries are written, so an item and the
record of what was read for it commit together. `evidence_of` is what `explain --item` and the item page show.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col, select

from monitor.store.evidence_models import ItemArticle
from monitor.store.models import Item, ItemSource

if TYPE_CHECKING:
    from monitor.ingest.article import ArticleResult, Pending

_ITEM = Item.__table__  # type: ignore[attr-defined]


def _fill_evidence(row: ItemArticle, art: ArticleResult, *, matched: bool, archive: bool) -> None:
    row.fetched_at = art.fetched_at
    row.final_url = art.final_url
    row.http_status = art.status
    row.encoding = art.encoding
    if art.sha256 is not None:
        row.sha256 = art.sha256
    row.evidence = matched
    if matched and art.ok and art.text:
        row.text = art.text
    if matched and archive and art.raw is not None:
        row.raw_zlib = zlib.compress(art.raw, 6)
        row.raw_size = len(art.raw)


def record_articles(
    session: Session,
    feed_id: str,
    item_ids: Iterable[int],
    pending: dict[tuple[str, str], Pending],
    *,
    now: datetime,
) -> int:
    """Write the article records of the items just stored from `feed_id`; returns how many."""

    ids = list(item_ids)
    if not ids or not any(f == feed_id for f, _ in pending):
        return 0
    q = select(ItemSource.item_id, ItemSource.entry_key).where(
        col(ItemSource.feed_id) == feed_id, col(ItemSource.item_id).in_(ids)
    )
    todo: list[tuple[int, Pending]] = []
    for item_id, key in session.exec(q).all():
        p = pending.pop((feed_id, key), None)
        if p is None:
            continue
        if p.article is None:
            continue  # only the language changed, and that is on the item
        todo.append((item_id, p))
    if not todo:
        return 0
    # The items' categories and their article rows (new items have none), each in one query for the feed:
    # fetched one by one (two ORM gets an article, the item's text and HTML loaded too) they cost more than
    # storing the feed's items.
    wanted = [item_id for item_id, _ in todo]
    categories: dict[int, Any] = {
        item_id: cats
        for item_id, cats in session.execute(
            sa_select(_ITEM.c.id, _ITEM.c.categories).where(_ITEM.c.id.in_(wanted))
        )
    }
    existing = {
        row.item_id: row
        for row in session.exec(select(ItemArticle).where(col(ItemArticle.item_id).in_(wanted))).all()
    }
    written = 0
    for item_id, p in todo:
        if item_id not in categories:
            continue
        art = p.article
        assert art is not None
        row = existing.get(item_id) or ItemArticle(item_id=item_id, url=art.url)
        existing[item_id] = row  # two entries of the document may be one item: one row, as the ORM's get gave
        row.teaser, row.language = p.teaser, dict(p.language)
        if art.reason == "deferred":  # not tried: due at once, for the retries of this or the next poll
            row.state, row.classified, row.reason, row.detail, row.next_attempt_at = (
                "retry",
                "teaser",
                art.reason,
                art.detail,
                now,
            )
            session.add(row)
            written += 1
            continue
        row.attempts += 1
        row.last_attempt_at = now
        row.etag, row.last_modified = art.etag, art.last_modified
        matched = bool(categories[item_id])
        _fill_evidence(row, art, matched=matched, archive=p.archive)
        if art.ok:
            _mark_read(row)
        else:
            row.classified, row.reason, row.detail = "teaser", art.reason, art.detail
            _schedule_retry(row, now)
        session.add(row)
        written += 1
    return written


def _mark_read(row: ItemArticle) -> None:
    row.state, row.classified, row.reason, row.detail, row.next_attempt_at = "ok", "article", None, None, None


def _schedule_retry(row: ItemArticle, now: datetime) -> None:
    """After a failed attempt: due again after its attempt count's delay, or failed for good once none is left."""
    from monitor.ingest.article import retry_delay

    delay = retry_delay(row.attempts)
    row.state = "retry" if delay is not None else "failed"
    row.next_attempt_at = now + timedelta(seconds=delay) if delay is not None else None


# A claimed retry is pushed this far ahead, so another poll running meanwhile does not fetch the same page; the
# outcome, recorded right after, sets the real next time.
RETRY_LEASE = timedelta(minutes=15)


def due_retries(
    session: Session, now: datetime, limit: int = 100, host_of: Any | None = None
) -> list[ItemArticle]:
    """The article records whose retry is due, claimed (see RETRY_LEASE); with `host_of`, the first due of each
    host only (the others stay due for the next poll)."""
    q = (
        select(ItemArticle)
        .where(col(ItemArticle.state) == "retry", col(ItemArticle.next_attempt_at) <= now)
        .order_by(col(ItemArticle.next_attempt_at), col(ItemArticle.item_id))
        .limit(limit * 10 if host_of else limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = list(session.exec(q).all())
    if host_of is not None:
        first: dict[str, ItemArticle] = {}
        for row in rows:
            first.setdefault(host_of(row.url), row)
        rows = list(first.values())[:limit]
    for row in rows:
        row.next_attempt_at = now + RETRY_LEASE
        session.add(row)
    return rows


def apply_retry(
    session: Session,
    row: ItemArticle,
    art: ArticleResult,
    *,
    now: datetime,
    archive: bool,
    classify: Any | None = None,
) -> bool:
    """Record one retried fetch; on success the item's text becomes the article and it is classified again
    (`classify(item)` fills its classification). Returns whether the item's text changed."""

    row.attempts += 1
    row.last_attempt_at = now
    item = session.get(Item, row.item_id)
    changed = False
    if art.ok and not art.not_modified and art.text and item is not None and not item.pruned:
        item.text = art.text
        item.updated = now
        if classify is not None:
            classify(item)
        session.add(item)
        _mark_read(row)
        row.etag, row.last_modified = art.etag, art.last_modified
        _fill_evidence(row, art, matched=bool(item.categories), archive=archive)
        changed = True
    else:  # refused again, or a 304: the page that could not be read has not changed
        if art.not_modified:
            row.detail = f"{row.url}: unchanged since the last try (304)"
        else:
            row.reason, row.detail = art.reason, art.detail
        _schedule_retry(row, now)
    session.add(row)
    return changed


def evidence_of(session: Session, item_id: int) -> dict[str, Any] | None:
    """What was read for an item, for `explain --item` and the item page; None when no page was fetched."""
    row = session.get(ItemArticle, item_id)
    if row is None:
        return None
    return {
        "url": row.url,
        "state": row.state,
        "classified": row.classified,
        "reason": row.reason,
        "detail": row.detail,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "language": row.language,
        "fetched_at": row.fetched_at.isoformat() if row.fetched_at else None,
        "final_url": row.final_url,
        "http_status": row.http_status,
        "sha256": row.sha256,
        "encoding": row.encoding,
        "evidence": row.evidence,
        "text": row.text,
        "teaser": row.teaser,
        "archived_bytes": row.raw_size if row.raw_zlib is not None else None,
    }


def archived_page(session: Session, item_id: int) -> bytes | None:
    """The raw page kept with `archive: true`, decompressed; None when none was kept."""
    row = session.get(ItemArticle, item_id)
    if row is None or row.raw_zlib is None:
        return None
    return zlib.decompress(row.raw_zlib)


def forget_articles(session: Session, item_ids: list[int]) -> None:
    """Clear the texts kept for items that retention pruned (the record of the fetch stays)."""
    if item_ids:
        session.execute(
            update(ItemArticle)
            .where(col(ItemArticle.item_id).in_(item_ids))
            .values(teaser="", text=None, raw_zlib=None, evidence=False)
        )


def options_by_feed(config: Any) -> Mapping[str, bool]:
    return {f.id: bool(getattr(f, "archive", False)) for f in getattr(config, "feeds", [])}


def source_of(session: Session, item: Item) -> dict[str, Any]:
    """Which text the rules read for a stored item, and the article record when a page was fetched for it."""
    article = evidence_of(session, item.id) if item.id is not None else None
    if article is None:
        return {"classified": "feed", "language": None, "article": None}
    language = article.pop("language")
    return {"classified": article["classified"], "language": language, "article": article}


def protected_item_ids(session: Session, item_ids: list[int]) -> set[int]:
    """Of `item_ids`, those whose evidence retention must keep: items in an incident."""
    if not item_ids:
        return set()
    q = select(Item.id).where(col(Item.id).in_(item_ids), col(Item.incident_id).is_not(None))
    return {i for i in session.exec(q).all() if i is not None}


def prune_evidence(
    session: Session, *, before: datetime, include_incidents: bool = False, after: int = 0, batch: int = 1000
) -> tuple[int, int | None]:
    """Drop the kept text and raw page of evidence read before `before`, for one batch of item ids above
    `after`; items in an incident keep theirs unless `include_incidents`. The record (URL, SHA-256, time) stays,
    so what was read can still be named. Returns (how many pruned, the last id looked at or None when done)."""
    q = (
        select(ItemArticle.item_id)
        .where(col(ItemArticle.fetched_at) < before, col(ItemArticle.item_id) > after)
        .where((col(ItemArticle.text).is_not(None)) | (col(ItemArticle.raw_zlib).is_not(None)))
        .order_by(col(ItemArticle.item_id))
        .limit(batch)
    )
    seen = list(session.exec(q).all())
    if not seen:
        return 0, None
    ids = seen
    if not include_incidents:
        keep = protected_item_ids(session, seen)
        ids = [i for i in seen if i not in keep]
    if ids:
        session.execute(
            update(ItemArticle).where(col(ItemArticle.item_id).in_(ids)).values(text=None, raw_zlib=None)
        )
    return len(ids), seen[-1]
