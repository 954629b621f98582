"""The decider: pure functions from a feed's state and what a fetch brought to small frozen intents.

Nothing here touches the network or the database. The pipeline (`monitor.ingest.poll`) gathers the inputs, asks
these functions what to do, and applies the answers: which request to send, whether a body needs parsing, what
the feed row becomes (next check, backoff, mute, redirect, validators), and which entries are new, updated,
linked to a story already stored, or skipped. Timing rules (intervals, backoff, caps) live in `policy`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from monitor.config.models import PollingSettings
from monitor.ingest import policy
from monitor.ingest.parse import ParsedFeed, ParseFailure, ParseOutcome
from monitor.store.items import (
    EntryLike,
    EntryPlan,
    Known,
    KnownEntry,
    LinkItem,
    NewItem,
    SkipEntry,
    SkipReason,
    UpdateItem,
)

if TYPE_CHECKING:  # the fetcher (and httpx) is imported when a poll starts, not with this module
    from monitor.ingest.fetch import FetchRequest, FetchResult


class FeedView(Protocol):
    """What the decider reads of a feed row (monitor.store.models.Feed satisfies it)."""

    id: str
    url: str
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    error_count: int
    interval: float | None
    publish_interval: float | None
    next_check_at: datetime | None
    last_full_fetch_at: datetime | None


# --- before the fetch -------------------------------------------------------------------------------------


def fetch_request(feed: FeedView, now: datetime, p: PollingSettings) -> FetchRequest:
    """The conditional GET for `feed`, or now and then a full one (see policy.wants_full_fetch)."""
    from monitor.ingest.fetch import FetchRequest

    full = policy.wants_full_fetch(feed.last_full_fetch_at, now, p)
    return FetchRequest(
        url=feed.url,
        etag=None if full else feed.etag,
        last_modified=None if full else feed.last_modified,
        force_full=full,
    )


# --- after the fetch --------------------------------------------------------------------------------------


def body_hash(fetched: FetchResult) -> str | None:
    """What tells a 200 with the same bytes as last time from a changed document; None unless a body came."""
    return hashlib.sha256(fetched.body or b"").hexdigest() if fetched.outcome == "ok" else None


def needs_parse(feeds: Iterable[FeedView], digest: str | None) -> bool:
    """A body is parsed only when it differs from what one of the feeds sharing its address stored last."""
    return digest is not None and any(f.body_hash != digest for f in feeds)


@dataclass(frozen=True)
class StoreEntries:
    """Intent: store the parsed document's entries, and what the document says about the feed."""

    parsed: ParsedFeed
    body_hash: str
    publish_interval: float | None  # the new estimate, or the stored one when the entries cannot tell
    site_url: str | None


@dataclass(frozen=True)
class FeedIntent:
    """What one poll does to one feed. `outcome` is the word recorded (ok | not_modified | unchanged | error)."""

    outcome: str
    status: int | None
    schedule: policy.StateChange  # next check, error counters, mute
    ttl: float | None = None  # seconds the publisher asked for, to remember; None: keep the stored one
    store_validators: bool = False  # remember the response's ETag / Last-Modified
    etag: str | None = None
    last_modified: str | None = None
    full_fetch: bool = False  # this was the periodic fetch without validators, and it succeeded
    redirect: str | None = None  # 301/308 chain: the feed's new address
    store: StoreEntries | None = None
    error_kind: str | None = None
    error: str | None = None
    warning: str | None = None

    @property
    def entries(self) -> int:
        return len(self.store.parsed.entries) if self.store is not None else 0


def decide_feed(
    feed: FeedView,
    fetched: FetchResult,
    parsed: ParseOutcome | None,
    *,
    digest: str | None,
    now: datetime,
    p: PollingSettings,
    forced: bool,
) -> FeedIntent:
    """The intent for `feed` after `fetched` (and, for a changed body, its parse)."""
    ttl = policy.publisher_ttl(fetched.fresh_for, None)
    store: StoreEntries | None = None
    warning = None
    publish_interval = feed.publish_interval
    if fetched.outcome == "error":
        return _intent(
            feed,
            fetched,
            policy.Outcome(
                kind="error",
                error_kind=fetched.error_kind,
                error=fetched.error,
                retry_after=fetched.retry_after,
            ),
            "error",
            now,
            p,
            forced,
            publish_interval,
        )
    if fetched.outcome == "ok" and (digest == feed.body_hash or parsed is None):
        outcome, word = policy.Outcome(kind="unchanged", ttl=ttl), "unchanged"  # same bytes: nothing to parse
    elif fetched.outcome == "ok" and isinstance(parsed, ParseFailure):
        error = f"{feed.url}: {parsed.message}"
        return _intent(
            feed,
            fetched,
            policy.Outcome(kind="error", error_kind=parsed.kind, error=error),
            "error",
            now,
            p,
            forced,
            publish_interval,
        )
    elif fetched.outcome == "ok":
        assert isinstance(parsed, ParsedFeed) and digest is not None
        dates = [e.published for e in parsed.entries if not e.published_estimated]
        # The schedule follows the publishing rate these entries show.
        publish_interval = policy.estimate_publish_interval(dates) or feed.publish_interval
        store = StoreEntries(parsed, digest, publish_interval, parsed.link)
        warning = parsed.warning
        outcome, word = (
            policy.Outcome(kind="ok", ttl=policy.publisher_ttl(fetched.fresh_for, parsed.ttl_minutes)),
            "ok",
        )
    else:
        outcome, word = policy.Outcome(kind=fetched.outcome, ttl=ttl), fetched.outcome
    intent = _intent(feed, fetched, outcome, word, now, p, forced, publish_interval)
    return replace(intent, store=store, warning=warning)


def decide_store_failure(
    feed: FeedView, fetched: FetchResult, error: str, *, now: datetime, p: PollingSettings
) -> FeedIntent:
    """The intent after storing failed (the transaction rolled back): an error of kind "store", counted."""
    outcome = policy.Outcome(kind="error", error_kind="store", error=error)
    return _intent(feed, fetched, outcome, "error", now, p, False, feed.publish_interval)


def _intent(
    feed: FeedView,
    fetched: FetchResult,
    outcome: policy.Outcome,
    word: str,
    now: datetime,
    p: PollingSettings,
    forced: bool,
    publish_interval: float | None,
) -> FeedIntent:
    change = policy.decide(
        feed_id=feed.id,
        outcome=outcome,
        now=now,
        error_count=feed.error_count,
        override=feed.interval,
        publish_interval=publish_interval,
        p=p,
        scheduled=feed.next_check_at,
    )
    # A 304 leaves the stored validators alone; a 200 (changed or not) brings the ones to send next time.
    validators = change.success and fetched.outcome == "ok"
    return FeedIntent(
        outcome=word,
        status=fetched.status,
        schedule=change,
        ttl=outcome.ttl,
        store_validators=validators,
        etag=fetched.etag if validators else None,
        last_modified=fetched.last_modified if validators else None,
        full_fetch=validators and forced,
        redirect=fetched.permanent_url if fetched.outcome != "error" else None,
        error_kind=outcome.error_kind if outcome.kind == "error" else None,
        error=outcome.error if outcome.kind == "error" else None,
    )


def feed_columns(intent: FeedIntent, now: datetime) -> dict[str, Any]:
    """The feed row's columns after `intent`, as plain values (entry counts and the body hash excepted: those
    follow from storing, see monitor.ingest.poll). Leases are released: the poll of this feed is over."""
    change = intent.schedule
    values: dict[str, Any] = {
        "last_fetch_at": now,
        "last_status": intent.status,
        "last_outcome": intent.outcome,
        "next_check_at": change.next_check_at,
        "error_count": change.error_count,
        "error_kind": change.error_kind,
        "lease_owner": None,
        "lease_until": None,
    }
    if intent.ttl is not None:
        values["ttl"] = intent.ttl
    if change.error is not None:
        values["last_error"], values["last_error_at"] = change.error, now
    if change.muted:
        values["muted"], values["mute_reason"] = True, change.mute_reason
    if change.success:
        values["last_success_at"] = now
    if intent.store_validators:
        values["etag"], values["last_modified"] = intent.etag, intent.last_modified
    if intent.full_fetch:
        values["last_full_fetch_at"] = now
    if intent.redirect:
        values["url"] = intent.redirect  # 301/308: the publisher moved the feed for good
    if intent.store is not None:
        values["publish_interval"] = intent.store.publish_interval
    return values


# --- entries ----------------------------------------------------------------------------------------------


def skip_known(known: KnownEntry, content_hash: str, max_hash_updates: int) -> SkipReason | None:
    """Why an entry this feed delivered before is not updated, or None when it should be."""
    if known.pruned:
        return "pruned"  # retention emptied it on purpose; a feed repeating it must not bring the text back
    if known.content_hash == content_hash:
        return "same_content"
    if known.hash_updates >= max_hash_updates:
        # Some feeds rewrite every entry on every fetch; past the cap we stop following the changes.
        return "hash_update_cap"
    return None


def plan_entries(entries: Sequence[EntryLike], known: Known, *, max_hash_updates: int) -> EntryPlan:
    """Sort a document's entries into new, updated, linked (a story already stored, from another feed or earlier
    in this document) and skipped, in document order."""
    by_url: dict[str, int | NewRef] = dict(known.by_url)
    by_hash: dict[str, int | NewRef] = dict(known.by_hash)
    seen: set[str] = set()
    new: list[NewItem] = []
    updates: list[UpdateItem] = []
    links: list[LinkItem] = []
    skipped: list[SkipEntry] = []
    for entry in entries:
        if entry.key in seen:  # the same key twice in one document: the parser should not, but be safe
            skipped.append(SkipEntry(entry, "duplicate_key"))
            continue
        seen.add(entry.key)
        mine = known.entries.get(entry.key)
        if mine is not None:
            reason = skip_known(mine, entry.content_hash, max_hash_updates)
            if reason is not None:
                skipped.append(SkipEntry(entry, reason))
                continue
            adopt = bool(entry.url) and not mine.has_url and entry.url not in by_url
            if adopt and entry.url:
                by_url[entry.url] = mine.item_id
            updates.append(UpdateItem(mine.item_id, entry, adopt))
            continue
        match = match_stored(entry, by_url, by_hash)
        if match is not None:
            if isinstance(match, NewRef):
                links.append(LinkItem(entry, new_index=match.index))
            else:
                links.append(LinkItem(entry, item_id=match))
            continue
        ref = NewRef(len(new))
        new.append(NewItem(entry))
        # Later entries of this same document pointing at the same story link to this item.
        if entry.url:
            by_url[entry.url] = ref
        by_hash.setdefault(entry.content_hash, ref)
    return EntryPlan(tuple(new), tuple(updates), tuple(links), tuple(skipped))


@dataclass(frozen=True, slots=True)
class NewRef:
    """An item this plan inserts, by its position among the new ones."""

    index: int


def match_stored(
    entry: EntryLike, by_url: Mapping[str, int | NewRef], by_hash: Mapping[str, int | NewRef]
) -> int | NewRef | None:
    """The story a new entry already is: same URL first, else same content (within the cross-feed window)."""
    if entry.url and entry.url in by_url:
        return by_url[entry.url]
    return by_hash.get(entry.content_hash)
