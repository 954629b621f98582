"""Writing one feed's entries: identity, cross-feed dedup, capped content updates, classification.

Called inside the transaction that also updates the feed's polling state, so a crash either keeps
both or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, or_
from sqlmodel import Session, col, select

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
    keys = [e.key for e in entries]
    sources = {
        s.entry_key: s
        for s in session.exec(
            select(ItemSource).where(ItemSource.feed_id == feed_id, col(ItemSource.entry_key).in_(keys))
        )
    }
    known_ids = {s.item_id for s in sources.values()}
    fresh = [e for e in entries if e.key not in sources]
    urls = {e.url for e in fresh if e.url}
    hashes = {e.content_hash for e in fresh}
    by_id: dict[int, Item] = {}
    by_url: dict[str, Item | _NewRow] = {}
    by_hash: dict[str, Item | _NewRow] = {}
    conditions: list[Any] = []
    if known_ids:
        conditions.append(col(Item.id).in_(known_ids))
    if urls:
        conditions.append(col(Item.url).in_(urls))
    since = now - timedelta(seconds=cross_feed_window)
    if hashes:
        conditions.append(col(Item.content_hash).in_(hashes) & (col(Item.fetched) >= since))
    if conditions:
        for item in session.exec(select(Item).where(or_(*conditions))):
            assert item.id is not None
            by_id[item.id] = item
            if item.url:
                by_url[item.url] = item
            if item.fetched >= since:
                by_hash.setdefault(item.content_hash, item)

    handled: set[str] = set()
    new_items: list[tuple[_NewRow, EntryLike]] = []
    links: list[tuple[Item | _NewRow, EntryLike]] = []
    for entry in entries:
        if entry.key in handled:  # the same key twice in one document: the parser should not, but be safe
            stats.unchanged += 1
            continue
        handled.add(entry.key)
        src = sources.get(entry.key)
        if src is not None:
            known = by_id.get(src.item_id)
            if known is None or known.pruned or known.content_hash == entry.content_hash:
                stats.unchanged += 1
                continue
            # Some feeds rewrite every entry on every fetch; past the cap we stop following the changes.
            if known.hash_updates >= max_hash_updates:
                stats.unchanged += 1
                continue
            known.title, known.text, known.html = entry.title, entry.text, entry.html
            known.content_hash = entry.content_hash
            known.hash_updates += 1
            known.updated = now
            if entry.url and not known.url and entry.url not in by_url:
                known.url = entry.url
            apply_classification(known, classifier)
            session.add(known)
            stats.updated += 1
            assert known.id is not None
            stats.changed_item_ids.append(known.id)
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
            insert(Item).returning(col(Item.id), sort_by_parameter_order=True),
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
        session.execute(insert(ItemSource), rows)
    return stats
