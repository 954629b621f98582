"""Writing one feed's entries: what the store already holds for them, and applying the plan made from that.

The store only reads and writes. Which entries are new, updated, linked or skipped is decided by
`monitor.ingest.decide.plan_entries` from what `load_known` returns; classification happens in the pipeline
before `write_entries` is called. Everything runs inside the transaction that also updates the feed's polling
state, so a crash either keeps both or neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, bindparam, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from monitor.search.index import index_items
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


# --- what the store knows about a document's entries ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownEntry:
    """An entry this feed delivered before: its item and what decides whether the entry changed."""

    item_id: int
    content_hash: str
    pruned: bool
    hash_updates: int
    has_url: bool


@dataclass(frozen=True)
class Known:
    """What `load_known` found for one document: this feed's entries by key, and stored items that a new entry
    may turn out to be, by URL and (within the cross-feed window) by content hash."""

    entries: Mapping[str, KnownEntry] = field(default_factory=dict)
    by_url: Mapping[str, int] = field(default_factory=dict)
    by_hash: Mapping[str, int] = field(default_factory=dict)


# --- what the store can be asked to write (made by monitor.ingest.decide) ---------------------------------


@dataclass(frozen=True, slots=True)
class NewItem:
    entry: EntryLike


@dataclass(frozen=True, slots=True)
class UpdateItem:
    item_id: int
    entry: EntryLike
    adopt_url: bool  # the item has no URL yet and the entry brings one nobody in this document took


@dataclass(frozen=True, slots=True)
class LinkItem:
    """The entry is a story already stored (from another feed, or earlier in this document): link, do not copy.
    `item_id` is a stored item; `new_index` the position in `EntryPlan.new` of an item this plan inserts."""

    entry: EntryLike
    item_id: int | None = None
    new_index: int | None = None


SkipReason = Literal["duplicate_key", "pruned", "same_content", "hash_update_cap"]


@dataclass(frozen=True, slots=True)
class SkipEntry:
    entry: EntryLike
    reason: SkipReason


@dataclass(frozen=True)
class EntryPlan:
    new: tuple[NewItem, ...] = ()
    updates: tuple[UpdateItem, ...] = ()
    links: tuple[LinkItem, ...] = ()
    skipped: tuple[SkipEntry, ...] = ()

    def to_classify(self) -> list[EntryLike]:
        """The entries whose text will be stored, so the classifier must see them."""
        return [n.entry for n in self.new] + [u.entry for u in self.updates]


@dataclass
class StoreStats:
    new: int = 0
    updated: int = 0
    linked: int = 0  # already stored from another feed: linked, not duplicated
    unchanged: int = 0
    new_item_ids: list[int] = field(default_factory=list)
    changed_item_ids: list[int] = field(default_factory=list)
    matched_new_ids: list[int] = field(default_factory=list)  # the new items stored with a category


# Item columns a classification fills; rows without one get these empty values.
UNCLASSIFIED: Mapping[str, Any] = {
    "categories": [],
    "countries": [],
    "matches": {},
    "places": [],
    "rules_version": None,
}

# Core tables: ORM-enabled bulk INSERTs cost several times as much per statement for the same rows.
_ITEM = Item.__table__  # type: ignore[attr-defined]
_SOURCE = ItemSource.__table__  # type: ignore[attr-defined]


# Core statements built once, run on a plain connection: building them for every feed's store and running them
# through the ORM cost more than SQLite's answer.
_FEED_KEYS = (_SOURCE.c.feed_id == bindparam("feed")) & _SOURCE.c.entry_key.in_(
    bindparam("keys", expanding=True)
)
_STORED_KEYS = sa_select(_SOURCE.c.entry_key).where(_FEED_KEYS)
_KNOWN_BY_KEY = (
    sa_select(
        _SOURCE.c.entry_key,
        _ITEM.c.id,
        _ITEM.c.content_hash,
        _ITEM.c.pruned,
        _ITEM.c.hash_updates,
        _ITEM.c.url.is_not(None),
    )
    .join(_ITEM, _ITEM.c.id == _SOURCE.c.item_id)
    .where(_FEED_KEYS)
)
# Stored items a new entry may be a copy of: the same canonical URL, or the same content within the window.
_BY_URL = _ITEM.c.url.in_(bindparam("urls", expanding=True))
_BY_HASH = _ITEM.c.content_hash.in_(bindparam("hashes", expanding=True)) & (
    _ITEM.c.fetched >= bindparam("since")
)
_SAME = sa_select(_ITEM.c.id, _ITEM.c.url, _ITEM.c.content_hash, _ITEM.c.fetched)
_SAME_URL_OR_HASH = _SAME.where(or_(_BY_URL, _BY_HASH))
_SAME_URL = _SAME.where(_BY_URL)
_SAME_HASH = _SAME.where(_BY_HASH)


def stored_keys(conn: Connection, feed_id: str, keys: Sequence[str]) -> set[str]:
    """Which of these entry keys `feed_id` has stored already."""
    return set(conn.execute(_STORED_KEYS, {"feed": feed_id, "keys": list(keys)}).scalars())


def load_known(
    session: Session,
    feed_id: str,
    entries: Sequence[EntryLike],
    *,
    now: datetime,
    cross_feed_window: float = 7 * 86400,
) -> Known:
    """What the store holds for these entries. Only what tells a changed entry from an unchanged one is loaded:
    most fetches repeat entries already stored, and loading whole rows (texts, HTML, matches) was most of the
    cost."""
    if not entries:
        return Known()
    conn = session.connection()
    known: dict[str, KnownEntry] = {}
    rows = conn.execute(_KNOWN_BY_KEY, {"feed": feed_id, "keys": [e.key for e in entries]})
    for key, item_id, content_hash, pruned, hash_updates, has_url in rows:
        known[key] = KnownEntry(item_id, content_hash, pruned, hash_updates, bool(has_url))
    fresh = [e for e in entries if e.key not in known]
    urls = list(dict.fromkeys(e.url for e in fresh if e.url))
    hashes = list(dict.fromkeys(e.content_hash for e in fresh))
    by_url: dict[str, int] = {}
    by_hash: dict[str, int] = {}
    since = now - timedelta(seconds=cross_feed_window)
    if urls or hashes:
        q = _SAME_URL_OR_HASH if urls and hashes else _SAME_URL if urls else _SAME_HASH
        for item_id, url, content_hash, fetched in conn.execute(
            q, {"urls": urls, "hashes": hashes, "since": since}
        ):
            if url:
                by_url[url] = item_id
            if fetched >= since:
                by_hash.setdefault(content_hash, item_id)
    return Known(known, by_url, by_hash)


def _url_taken(session: Session, url: str) -> bool:
    return session.execute(sa_select(col(Item.id)).where(col(Item.url) == url)).first() is not None


def write_entries(
    session: Session,
    feed_id: str,
    plan: EntryPlan,
    *,
    now: datetime,
    classifications: Mapping[str, Mapping[str, Any]] | None = None,
) -> StoreStats:
    """Apply `plan`. `classifications` holds, by entry key, the Item columns the classifier filled for the
    entries of `plan.to_classify()`; an entry missing from it is stored unclassified."""
    stats = StoreStats(unchanged=len(plan.skipped))
    classes = classifications or {}
    for up in plan.updates:
        entry = up.entry
        item = session.get(Item, up.item_id)
        if item is None:
            stats.unchanged += 1
            continue
        item.title, item.text, item.html = entry.title, entry.text, entry.html
        item.content_hash = entry.content_hash
        item.hash_updates += 1
        item.updated = now
        if up.adopt_url and entry.url and not _url_taken(session, entry.url):
            item.url = entry.url
        for name, value in classes.get(entry.key, {}).items():
            setattr(item, name, value)
        session.add(item)
        stats.updated += 1
        stats.changed_item_ids.append(up.item_id)

    new_ids: list[int] = []
    if plan.new:
        rows = []
        for n in plan.new:
            e = n.entry
            values: dict[str, Any] = {
                "feed_id": feed_id,
                "url": e.url,
                "title": e.title,
                "text": e.text,
                "html": e.html,
                "author": e.author,
                "language": e.language,
                "published": e.published,
                "published_estimated": e.published_estimated,
                "fetched": now,
                "updated": None,
                "content_hash": e.content_hash,
                "hash_updates": 0,
                **UNCLASSIFIED,
                **classes.get(e.key, {}),
                "incident_id": None,
                "pruned": False,
            }
            rows.append(values)
        new_ids = _insert_items(session, rows)
    sources = []
    for n, item_id in zip(plan.new, new_ids, strict=True):
        stats.new += 1
        stats.new_item_ids.append(item_id)
        if classes.get(n.entry.key, {}).get("categories"):
            stats.matched_new_ids.append(item_id)
        sources.append(_source(item_id, feed_id, n.entry, now))
    for link in plan.links:
        target = link.item_id if link.new_index is None else new_ids[link.new_index]
        assert target is not None
        stats.linked += 1
        sources.append(_source(target, feed_id, link.entry, now))
    if sources:
        _insert_many(session.connection(), _SOURCE, sources)
    # Search index entries are written in this same transaction, so an item is findable once it is stored.
    # Documents made ahead (the poll's language worker) are used when they fit what was written.
    made = {}
    for n, item_id in zip(plan.new, new_ids, strict=True):
        e = n.entry
        prepared = getattr(e, "prepared", None)
        if prepared is not None and prepared.fits(e.title, e.text, e.language):
            made[item_id] = prepared.document
    index_items(session, stats.new_item_ids + stats.changed_item_ids, made)
    return stats


def _insert_items(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the rows, without building ORM objects (most of the cost per row); their ids, in order."""
    if session.get_bind().dialect.name != "sqlite":
        # One INSERT ... RETURNING for the batch (PostgreSQL keeps it one statement, in parameter order).
        result = session.execute(_ITEM.insert().returning(_ITEM.c.id, sort_by_parameter_order=True), rows)
        return [item_id for (item_id,) in result.all()]
    # SQLite cannot promise RETURNING's order, so SQLAlchemy sends such an insert one row at a time: 50
    # statements for a feed of 50 new entries. Instead the ids are given: the next ones after the highest, which
    # is what SQLite itself would pick (item.id is a rowid without AUTOINCREMENT), in one executemany. Safe
    # against another writer: a write from a stale snapshot fails in WAL mode, and a taken id fails the insert.
    top = session.execute(sa_select(func.max(_ITEM.c.id))).scalar() or 0
    ids = list(range(top + 1, top + 1 + len(rows)))
    _insert_many(session.connection(), _ITEM, [{"id": i, **r} for i, r in zip(ids, rows, strict=True)])
    return ids


_INSERTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[Any]] | None] = {}


def _insert_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT the rows in one executemany on the DBAPI cursor, each value converted by its column's own bind
    processor as SQLAlchemy's execute would, but a value every row shares (the same object: the feed, the fetch
    time, the empty classification) converted once: SQLAlchemy's per-row, per-column parameter handling cost
    more than SQLite's insert of the rows. Other databases, and rows of more than one shape, go through
    SQLAlchemy's own executemany."""
    keys = tuple(rows[0])
    if conn.dialect.name != "sqlite" or any(tuple(r) != keys for r in rows):
        conn.execute(table.insert(), rows)
        return
    shape = (conn.dialect.name, table.name, keys)
    if shape not in _INSERTS:
        compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(keys))
        procs = [table.c[k].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for k in keys]
        # Our tuples fill positional parameters in the rows' key order: a statement whose parameters come in
        # another order or count (a column default SQLAlchemy would fill in) goes through SQLAlchemy instead.
        _INSERTS[shape] = (str(compiled), procs) if compiled.positiontup == list(keys) else None
    cached = _INSERTS[shape]
    if cached is None:
        conn.execute(table.insert(), rows)
        return
    sql, procs = cached
    columns: list[list[Any]] = []
    for key, proc in zip(keys, procs, strict=True):
        values = [r[key] for r in rows]
        if proc is not None:
            first = values[0]
            shared = all(v is first for v in values)
            values = [proc(first)] * len(rows) if shared else [proc(v) for v in values]
        columns.append(values)
    conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


def _source(item_id: int, feed_id: str, entry: EntryLike, now: datetime) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "feed_id": feed_id,
        "entry_key": entry.key,
        "url": entry.url,
        "first_seen": now,
    }
