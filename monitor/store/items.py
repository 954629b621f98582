"""Writing one feed's entries: identity, cross-feed dedup, capped content updates, classification.

Called inside the transaction that also updates the feed's polling state, so a crash either keeps
both or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from monitor.store.models import Item, ItemSource


class EntryLike(Protocol):
    """A parsed entry (monitor.ingest.parse.Entry); read-only, as the parser's frozen dataclass is."""

    @property
    def key(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def html(self) -> str: ...
    @property
    def published(self) -> datetime: ...
    @property
    def published_estimated(self) -> bool: ...
    @property
    def language(self) -> str | None: ...
    @property
    def author(self) -> str | None: ...
    @property
    def content_hash(self) -> str: ...


class ClassificationLike(Protocol):
    categories: list[str]
    countries: list[str]

    def to_json(self) -> dict[str, Any]: ...


class ClassifierLike(Protocol):
    version: str

    def classify(self, title: str, text: str, language: str | None = None) -> Any: ...


@dataclass
class StoreStats:
    new: int = 0
    updated: int = 0
    linked: int = 0  # already stored from another feed: linked, not duplicated
    unchanged: int = 0
    new_item_ids: list[int] = field(default_factory=list)
    changed_item_ids: list[int] = field(default_factory=list)


def classification_values(
    classifier: ClassifierLike, title: str, text: str, language: str | None
) -> dict[str, Any]:
    """The Item columns a classification fills, as plain values."""
    data = classifier.classify(title, text, language).to_json()
    # Each gazetteer entry once, in text order, as places.yaml spells it (grouping makes it spelling-blind), with
    # "title" as its field when the title names it: {"country": "KZ", "entry": "Almaty", "field": "title"}.
    places: dict[tuple[str, str], dict[str, str]] = {}
    for p in data.get("places", []):
        country, entry = str(p.get("country") or ""), str(p.get("entry") or p.get("name") or "")
        if country and entry:
            rec = places.setdefault((country, entry), {"country": country, "entry": entry, "field": "text"})
            if p.get("field") == "title":
                rec["field"] = "title"
    return {
        "categories": list(data.get("categories", [])),
        "countries": list(data.get("countries", [])),
        "matches": dict(data.get("matches", {})),
        "places": list(places.values()),
        "rules_version": classifier.version,
    }


def apply_classification(item: Item, classifier: ClassifierLike | None) -> None:
    if classifier is None:
        return
    for name, value in classification_values(classifier, item.title, item.text, item.language).items():
        setattr(item, name, value)


@dataclass(frozen=True, slots=True)
class _Known:
    """An entry this feed delivered before: its item and what decides whether the entry changed."""

    id: int
    content_hash: str
    pruned: bool
    hash_updates: int


@dataclass(frozen=True, slots=True)
class _Ref:
    """A stored item a new entry may turn out to be (same URL or same content)."""

    id: int


# Core tables: ORM-enabled bulk INSERTs cost several times as much per statement for the same rows.
_ITEM = Item.__table__  # type: ignore[attr-defined]
_SOURCE = ItemSource.__table__  # type: ignore[attr-defined]


def _url_taken(session: Session, url: str, by_url: dict[str, _Ref | _NewRow]) -> bool:
    if url in by_url:
        return True
    return session.execute(sa_select(col(Item.id)).where(col(Item.url) == url)).first() is not None


class _NewRow:
    """An item about to be inserted; `id` is known once the batch INSERT has returned."""

    __slots__ = ("id", "values")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.id: int | None = None


def store_entries(
    session: Session,
    feed_id: str,
    entries: Sequence[EntryLike],
    *,
    now: datetime,
    classifier: ClassifierLike | None = None,
    max_hash_updates: int = 24,
    cross_feed_window: float = 7 * 86400,
) -> StoreStats:
    stats = StoreStats()
    if not entries:
        return stats
    # What this feed already delivered, with just what tells a changed entry from an unchanged one: most fetches
    # repeat entries already stored, and loading whole rows (texts, HTML, matches) for them was most of the cost.
    keys = [e.key for e in entries]
    known: dict[str, _Known] = {}
    q = (
        sa_select(
            col(ItemSource.entry_key),
            col(Item.id),
            col(Item.content_hash),
            col(Item.pruned),
            col(Item.hash_updates),
        )
        .join(Item, col(Item.id) == col(ItemSource.item_id))
        .where(col(ItemSource.feed_id) == feed_id, col(ItemSource.entry_key).in_(keys))
    )
    for key, item_id, content_hash, pruned, hash_updates in session.execute(q):
        known[key] = _Known(item_id, content_hash, pruned, hash_updates)
    fresh = [e for e in entries if e.key not in known]
    urls = {e.url for e in fresh if e.url}
    hashes = {e.content_hash for e in fresh}
    by_url: dict[str, _Ref | _NewRow] = {}
    by_hash: dict[str, _Ref | _NewRow] = {}
    since = now - timedelta(seconds=cross_feed_window)
    conditions: list[Any] = []
    if urls:
        conditions.append(col(Item.url).in_(urls))
    if hashes:
        conditions.append(col(Item.content_hash).in_(hashes) & (col(Item.fetched) >= since))
    if conditions:
        q2 = sa_select(col(Item.id), col(Item.url), col(Item.content_hash), col(Item.fetched)).where(
            or_(*conditions)
        )
        for item_id, url, content_hash, fetched in session.execute(q2):
            ref = _Ref(item_id)
            if url:
                by_url[url] = ref
            if fetched >= since:
                by_hash.setdefault(content_hash, ref)

    handled: set[str] = set()
    new_items: list[tuple[_NewRow, EntryLike]] = []
    links: list[tuple[_Ref | _NewRow, EntryLike]] = []
    for entry in entries:
        if entry.key in handled:  # the same key twice in one document: the parser should not, but be safe
            stats.unchanged += 1
            continue
        handled.add(entry.key)
        seen = known.get(entry.key)
        if seen is not None:
            if seen.pruned or seen.content_hash == entry.content_hash:
                stats.unchanged += 1
                continue
            # Some feeds rewrite every entry on every fetch; past the cap we stop following the changes.
            if seen.hash_updates >= max_hash_updates:
                stats.unchanged += 1
                continue
            item = session.get(Item, seen.id)
            if item is None:
                stats.unchanged += 1
                continue
            item.title, item.text, item.html = entry.title, entry.text, entry.html
            item.content_hash = entry.content_hash
            item.hash_updates += 1
            item.updated = now
            if entry.url and not item.url and not _url_taken(session, entry.url, by_url):
                item.url = entry.url
                by_url[entry.url] = _Ref(seen.id)
            apply_classification(item, classifier)
            session.add(item)
            stats.updated += 1
            stats.changed_item_ids.append(seen.id)
            continue
        match = (by_url.get(entry.url) if entry.url else None) or by_hash.get(entry.content_hash)
        if match is not None:
            links.append((match, entry))
            stats.linked += 1
            continue
        values: dict[str, Any] = {
            "feed_id": feed_id,
            "url": entry.url,
            "title": entry.title,
            "text": entry.text,
            "html": entry.html,
            "author": entry.author,
            "language": entry.language,
            "published": entry.published,
            "published_estimated": entry.published_estimated,
            "fetched": now,
            "updated": None,
            "content_hash": entry.content_hash,
            "hash_updates": 0,
            "categories": [],
            "countries": [],
            "matches": {},
            "places": [],
            "rules_version": None,
            "incident_id": None,
            "pruned": False,
        }
        if classifier is not None:
            values.update(classification_values(classifier, entry.title, entry.text, entry.language))
        row = _NewRow(values)
        new_items.append((row, entry))
        # Later entries of this same document (or batch) pointing at the same story link to this item.
        if entry.url:
            by_url[entry.url] = row
        by_hash.setdefault(entry.content_hash, row)

    if new_items:
        # One INSERT ... RETURNING for the batch, without building ORM objects (most of the cost per row).
        result = session.execute(
            _ITEM.insert().returning(_ITEM.c.id, sort_by_parameter_order=True),
            [r.values for r, _ in new_items],
        )
        for (row, _), (item_id,) in zip(new_items, result.all(), strict=True):
            row.id = item_id
    rows = []
    for row, entry in new_items:
        assert row.id is not None
        stats.new += 1
        stats.new_item_ids.append(row.id)
        rows.append(
            {
                "item_id": row.id,
                "feed_id": feed_id,
                "entry_key": entry.key,
                "url": entry.url,
                "first_seen": now,
            }
        )
    for target, entry in links:
        assert target.id is not None
        rows.append(
            {
                "item_id": target.id,
                "feed_id": feed_id,
                "entry_key": entry.key,
                "url": entry.url,
                "first_seen": now,
            }
        )
    if rows:
        session.execute(_SOURCE.insert(), rows)
    return stats
