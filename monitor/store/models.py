"""Tables. Policy about feeds (when to poll, backoff) lives in monitor.ingest.policy; these are the facts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlalchemy import text as sa_text
from sqlmodel import Field, SQLModel

from monitor.store.types import UTCDateTime, utcnow


def _dt(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class Feed(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2048)  # current address; a 301/308 moves it
    config_url: str = Field(max_length=2048)  # as configured, so an edited config wins over an old redirect
    title: str | None = Field(default=None, max_length=500)
    site_url: str | None = Field(default=None, max_length=2048)
    language: str | None = Field(default=None, max_length=8)
    country: str | None = Field(default=None, max_length=2)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    interval: float | None = None  # seconds; None = adaptive
    enabled: bool = True
    origin: str = Field(default="config", max_length=16)  # config | cli
    removed: bool = False  # `feeds remove` on a configured feed: kept with its items, no longer polled

    # polling state
    etag: str | None = Field(default=None, max_length=1024)
    last_modified: str | None = Field(default=None, max_length=256)
    body_hash: str | None = Field(default=None, max_length=64)
    last_fetch_at: datetime | None = _dt()
    last_success_at: datetime | None = _dt()
    last_full_fetch_at: datetime | None = _dt()
    last_new_item_at: datetime | None = _dt()
    next_check_at: datetime | None = _dt(index=True)
    last_outcome: str | None = Field(default=None, max_length=32)  # ok | not_modified | unchanged | error
    last_status: int | None = None
    error_kind: str | None = Field(default=None, max_length=32)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_error_at: datetime | None = _dt()
    error_count: int = 0  # consecutive failures; rate limiting is not counted
    muted: bool = False
    mute_reason: str | None = Field(default=None, sa_column=Column(Text))
    publish_interval: float | None = None  # seconds between posts, estimated from entry dates
    ttl: float | None = None  # seconds, from <ttl> or Cache-Control
    items_total: int = 0
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = _dt()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Item(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    feed_id: str = Field(max_length=64, index=True)  # the feed it first came from
    url: str | None = Field(default=None, max_length=2048)  # canonical
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    html: str = Field(default="", sa_column=Column(Text, nullable=False))
    author: str | None = Field(default=None, max_length=500)
    language: str | None = Field(default=None, max_length=8)
    published: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    published_estimated: bool = False
    fetched: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    updated: datetime | None = _dt()
    content_hash: str = Field(max_length=64, index=True)
    hash_updates: int = 0
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    countries: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    matches: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The gazetteer entries found, [{"country": "KZ", "entry": "Almaty", "field": "title"}, ...] once each: what
    # grouping compares across languages (rows stored before revision 0004 have []).
    places: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=sa_text("'[]'"))
    )
    rules_version: str | None = Field(default=None, max_length=64)
    incident_id: int | None = Field(default=None, index=True)
    # Why grouping put it in its incident ({"reason": "names", "similar_to": 12, ...}), or None: kept on the item
    # so that a report joining a large incident writes one small row, not the incident's whole history.
    grouping: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    pruned: bool = False  # text dropped by retention; identity kept so it is not ingested again
    # What the site shows of it that grouping works out once (monitor.incidents.display: the actors its export
    # names, whether its HTML is sanitised already), keyed by what it was worked out from; None before 0011.
    display: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )

    __table_args__ = (Index("ix_item_url", "url", unique=True),)


class ItemSource(SQLModel, table=True):
    """One entry of one feed. The same story in two feeds is one Item with two sources."""

    __tablename__ = "item_source"
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    feed_id: str = Field(foreign_key="feed.id", max_length=64)
    entry_key: str = Field(max_length=1100)
    url: str | None = Field(default=None, max_length=2048)  # the link as that feed gave it (canonical)
    first_seen: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))

    __table_args__ = (UniqueConstraint("feed_id", "entry_key", name="uq_item_source_feed_entry"),)


class Incident(SQLModel, table=True):
    """One event reported by one or more items (several outlets, languages, days)."""

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    countries: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    severity: str = Field(default="medium", max_length=16)
    first_seen: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    last_seen: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))  # last change
    item_count: int = 0
    # The grouping call that last changed it (one more than the highest stored when that call began): what
    # tells another process's cache which incidents changed since it last looked.
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0", index=True))
    # What grouping matched on (names, places, key terms), kept so `explain --item` can say why.
    signature: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The grouping rule in words ({"rule": ...}); each report's own reason is Item.grouping (since revision 0005).
    explanation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
