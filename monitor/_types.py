"""What the public API returns: small frozen dataclasses, each with `to_json()` giving the record the CLI prints
with `--json` (the same field names, so a script can move between the two)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.errors import DeliveryError


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d is not None else None


@dataclass(frozen=True)
class Hit:
    """One matched term: `term` as written in the rule, `form` as found, at [start:end] of `field`."""

    term: str
    field: str  # "title" | "text"
    start: int
    end: int
    form: str
    snippet: str
    set: str | None = None
    language: str = ""


@dataclass(frozen=True)
class Match:
    """Why one category matched: the rule that fired (or the weights summary), its score and the words."""

    category: str
    title: str
    severity: str  # high | medium | low
    rule: str
    score: float
    hits: tuple[Hit, ...] = ()


@dataclass(frozen=True)
class Place:
    """A gazetteer entry found in the text: the country it tells, the text as found and where."""

    country: str
    name: str
    field: str
    start: int
    end: int
    entry: str = ""


@dataclass(frozen=True)
class Classification:
    """Categories (most severe first) and countries (ISO 3166-1 alpha-2) of a text."""

    categories: tuple[str, ...]
    countries: tuple[str, ...]
    rules_version: str


@dataclass(frozen=True)
class Explanation:
    """A classification with its reasons; for a stored item also the incident it is in and why."""

    categories: tuple[str, ...]
    countries: tuple[str, ...]
    matches: tuple[Match, ...]
    places: tuple[Place, ...]
    rules_version: str
    item: int | None = None
    incident: dict[str, Any] | None = None  # {"incident": {...}, "reason": ..., "text": ...}
    title: str = ""  # the headline classified with the text (a stored item's own)
    # For a stored item: which text the rules read ("feed", "article" or "teaser"), the language decision and
    # the evidence kept of its article page (monitor.store.evidence.evidence_of), when one was fetched.
    source: dict[str, Any] | None = None

    def match(self, category: str) -> Match:
        for m in self.matches:
            if m.category == category:
                return m
        raise KeyError(category)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "categories": list(self.categories),
            "countries": list(self.countries),
            "matches": {
                m.category: {
                    "rule": m.rule,
                    "score": m.score,
                    "hits": [{k: v for k, v in asdict(h).items() if k != "set" or v} for h in m.hits],
                }
                for m in self.matches
            },
            "places": [asdict(p) for p in self.places],
            "rules_version": self.rules_version,
        }
        if self.item is not None:
            data["item"] = self.item
            data["incident"] = self.incident
            data["source"] = self.source
        return data


@dataclass(frozen=True)
class Item:
    """A stored news item (the `export --format json` record)."""

    id: int
    feed: str  # the feed it first came from
    feeds: tuple[str, ...]  # every feed that carried it
    url: str | None
    title: str
    text: str
    language: str | None
    author: str | None
    published: datetime
    published_estimated: bool
    fetched: datetime
    updated: datetime | None
    categories: tuple[str, ...]
    countries: tuple[str, ...]
    incident: int | None
    matches: dict[str, Any] = field(default_factory=dict, compare=False)
    grouping: dict[str, Any] | None = field(default=None, compare=False)
    rules_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            feeds=list(self.feeds),
            categories=list(self.categories),
            countries=list(self.countries),
            published=self.published.isoformat(),
            fetched=self.fetched.isoformat(),
            updated=_iso(self.updated),
        )
        return data


@dataclass(frozen=True)
class Incident:
    """Reports of one event grouped together; `items` are their ids in publication order."""

    id: int
    title: str
    severity: str
    categories: tuple[str, ...]
    countries: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    updated_at: datetime
    item_count: int
    items: tuple[int, ...]
    explanation: dict[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            categories=list(self.categories),
            countries=list(self.countries),
            items=list(self.items),
            first_seen=self.first_seen.isoformat(),
            last_seen=self.last_seen.isoformat(),
            updated_at=self.updated_at.isoformat(),
        )
        return data


@dataclass(frozen=True)
class FeedPoll:
    """What polling one feed did. outcome: ok | not_modified | unchanged | error."""

    feed: str
    url: str
    outcome: str
    status: int | None = None
    error_kind: str | None = None  # dns, connect, timeout, tls, http_4xx, not_a_feed, ...
    error: str | None = None
    warning: str | None = None
    new: int = 0
    updated: int = 0
    linked: int = 0  # already stored from another feed
    entries: int = 0
    elapsed: float = 0.0
    fetch_seconds: float = 0.0
    next_check_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["next_check_at"] = _iso(self.next_check_at)
        return data


@dataclass(frozen=True)
class PollResult:
    started: datetime
    finished: datetime | None
    feeds: tuple[FeedPoll, ...]

    @property
    def failed(self) -> tuple[FeedPoll, ...]:
        return tuple(f for f in self.feeds if f.outcome == "error")

    @property
    def new_items(self) -> int:
        return sum(f.new for f in self.feeds)

    def counts(self) -> dict[str, int]:
        out = {"feeds": len(self.feeds), "ok": 0, "not_modified": 0, "unchanged": 0, "error": 0}
        for f in self.feeds:
            out[f.outcome] = out.get(f.outcome, 0) + 1
        out["new_items"] = self.new_items
        out["updated_items"] = sum(f.updated for f in self.feeds)
        out["linked_items"] = sum(f.linked for f in self.feeds)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "finished": _iso(self.finished),
            "summary": self.counts(),
            "feeds": [f.to_json() for f in self.feeds],
        }


@dataclass(frozen=True)
class DigestResult:
    """One digest run. status: delivered | pending (failed, retried later) | empty | dry_run | busy."""

    digest: str
    status: str
    message_id: str | None = None
    subject: str = ""
    incidents: int = 0
    updates: int = 0
    recipients: tuple[str, ...] = ()
    attempts: int = 0
    error: str | None = None
    next_attempt_at: datetime | None = None
    maybe_sent: bool = False  # resent after an interrupted attempt: recipients may see it twice (same id)
    refused: dict[str, str] = field(default_factory=dict)  # recipients the server refused, and why
    eml_path: Path | None = None
    html_path: Path | None = None
    previous: DigestResult | None = None  # an older undelivered message of this digest, retried first
    message: bytes | None = field(default=None, repr=False)  # a dry run without `out`: the RFC 5322 message
    page: str | None = field(default=None, repr=False)  # ... and the digest page (HTML)
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("delivered", "empty", "dry_run") and (
            self.previous is None or self.previous.ok
        )

    def raise_for_status(self) -> DigestResult:
        """DeliveryError when the digest (or an older message retried first) could not be delivered."""
        for r in (self.previous, self):
            if r is not None and not r.ok and r.status != "busy":
                raise DeliveryError(r.error or r.status, digest=r.digest, channel="email")
        return self

    def to_json(self) -> dict[str, Any]:
        return dict(self.record)


@dataclass(frozen=True)
class SiteResult:
    out: Path
    incidents: int
    items: int
    pages: int
    digests: int
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    unchanged: int = 0  # of the pages, those whose file held the same bytes already (not written again)

    def to_json(self) -> dict[str, Any]:
        return dict(self.record)


@dataclass(frozen=True)
class ItemChange:
    id: int
    title: str
    gained: tuple[str, ...]
    lost: tuple[str, ...]


@dataclass(frozen=True)
class ReclassifyResult:
    """What re-running the current rules over stored items changed (or would change, with dry_run)."""

    dry_run: bool
    rules_version: str
    items: int
    countries_changed: int
    changes: tuple[ItemChange, ...]
    gained: dict[str, int]  # per category, every configured one listed
    lost: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rules_version": self.rules_version,
            "items": self.items,
            "changed": len(self.changes),
            "countries_changed": self.countries_changed,
            "categories": {c: {"gained": self.gained[c], "lost": self.lost[c]} for c in self.gained},
            "changed_items": [
                {"id": c.id, "title": c.title, "gained": list(c.gained), "lost": list(c.lost)}
                for c in self.changes
            ],
        }
