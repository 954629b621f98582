"""Article pages and evidence: what was read for an item, so an analyst can prove what was published.

One row per item whose article page was fetched (or is to be). It says which text was classified (the article,
or the feed's teaser while the page could not be had), why a page was refused and when it is tried again, the
language decision, and for items that matched a category the evidence: the extracted text, the SHA-256 of the
raw page, the time and final URL fetched, and with the feed's `archive: true` the raw page, zlib-compressed.
Retention leaves the evidence of items in an incident alone unless told otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Integer, LargeBinary, Text
from sqlmodel import Field, SQLModel

from monitor.store.types import UTCDateTime


def _dt(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class ItemArticle(SQLModel, table=True):
    __tablename__ = "item_article"
    item_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    url: str = Field(max_length=2048)  # the entry's link, as asked for
    # ok: the article text is the item's text | retry: the teaser is, another try is due | failed: given up
    state: str = Field(default="retry", max_length=8, index=True)
    classified: str = Field(default="teaser", max_length=8)  # which text the rules read: article | teaser
    teaser: str = Field(default="", sa_column=Column(Text, nullable=False))  # the feed's own text, kept
    reason: str | None = Field(
        default=None, max_length=16
    )  # monitor.ingest.article.Reason of the last failure
    detail: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    next_attempt_at: datetime | None = _dt(index=True)
    last_attempt_at: datetime | None = _dt()
    etag: str | None = Field(default=None, max_length=1024)
    last_modified: str | None = Field(default=None, max_length=256)
    # {"language": "kk", "source": "detected", "rules": ["kk", "ru"], "detected": "kk", "confidence": .9, ...}
    language: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))

    # evidence of the last page read
    fetched_at: datetime | None = _dt()
    final_url: str | None = Field(default=None, max_length=2048)
    http_status: int | None = None
    sha256: str | None = Field(default=None, max_length=64)
    encoding: str | None = Field(default=None, max_length=32)
    text: str | None = Field(default=None, sa_column=Column(Text))  # extracted text, kept for matching items
    raw_zlib: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary)
    )  # the page, with `archive: true`
    raw_size: int | None = None
    evidence: bool = False  # the item matched a category when this was read: keep it
