"""Schemas of config/feeds.yaml and config/settings.yaml."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.config.durations import Duration

FEED_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedConfig(Strict):
    id: str
    url: str
    title: str | None = None
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}$")] | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    interval: Duration | None = None
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    # Article pages (monitor.ingest.article): "auto" fetches the page when the entry's text is a teaser.
    full_text: Literal["auto", "always", "never"] = "auto"
    archive: bool = False  # keep the raw HTML of matching items' pages, compressed, as evidence

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not FEED_ID.match(v):
            raise ValueError("feed id must be 1-64 characters: lower-case letters, digits, '-', '_', '.'")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not re.match(r"^https?://[^\s/?#]+", v, re.I):
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v


class FeedsFile(Strict):
    feeds: list[FeedConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> FeedsFile:
        seen: set[str] = set()
        for f in self.feeds:
            if f.id in seen:
                raise ValueError(f"feed id {f.id!r} is used twice")
            seen.add(f.id)
        return self


class DatabaseSettings(Strict):
    url: str | None = None  # overridden by --db / MONITOR_DB


class HttpSettings(Strict):
    user_agent: str = "civic-space-monitor/0.1 (+https://github.com/civic-space-monitor; monitor@example.org)"
    connect_timeout: Duration = 10
    total_timeout: Duration = 60
    max_bytes: int = Field(15 * 1024 * 1024, gt=0)
    max_decompressed_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_concurrency: int = Field(20, ge=1, le=500)
    per_host: int = Field(2, ge=1, le=50)
    max_redirects: int = Field(5, ge=0, le=20)
    allow_private_networks: bool = False


class PollingSettings(Strict):
    min_interval: Duration = 600
    max_interval: Duration = 86400
    default_interval: Duration = 3600
    full_fetch_every: Duration = 86400
    max_backoff: Duration = 86400
    retry_after_cap: Duration = 6 * 3600
    max_entries_per_feed: int = Field(500, ge=1)
    max_hash_updates: int = Field(24, ge=0)
    cross_feed_window: Duration = 7 * 86400
    silent_after: Duration = 7 * 86400

    @model_validator(mode="after")
    def _bounds(self) -> PollingSettings:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval is larger than max_interval")
        return self


class ArticleSettings(Strict):
    # Politeness: at most one article request per host per this many seconds (0: no pacing).
    per_host_interval: Duration = Field(1.0, ge=0)
    # Pages fetched while a feed is stored, per fetch of the feed; more teasers than this are read by the retries.
    max_inline: int = Field(10, ge=0)


class RetentionSettings(Strict):
    unmatched_days: int | None = Field(30, ge=1)


class GroupingSettings(Strict):
    # Reports join an incident whose reports lie within this much time of theirs; later, a new incident opens.
    window: Duration = Field(72 * 3600, gt=0)


class Settings(Strict):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    grouping: GroupingSettings = Field(default_factory=GroupingSettings)
    articles: ArticleSettings = Field(default_factory=ArticleSettings)
