"""Polling policy in one place: when to check a feed next, how to back off, what a result does to its state.

Pure functions over plain values, so every rule can be tested without a network or a database.
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from monitor.backoff import exponential_backoff
from monitor.config.models import PollingSettings

# Errors that say nothing about the feed being broken: the server asked us to slow down.
NOT_COUNTED = frozenset({"rate_limited"})


def jitter(feed_id: str, salt: int, spread: float = 0.1) -> float:
    """A factor in [1 - spread, 1 + spread], stable for a feed and attempt, so feeds that failed together
    do not all retry in the same second, yet a test sees the same value every run."""
    digest = hashlib.blake2b(f"{feed_id}:{salt}".encode(), digest_size=4).digest()
    unit = int.from_bytes(digest, "big") / 0xFFFFFFFF
    return 1 - spread + 2 * spread * unit


def backoff_seconds(error_count: int, feed_id: str, p: PollingSettings) -> float:
    """Exponential from the minimum interval, capped (24 h by default)."""
    n = max(1, error_count)
    return exponential_backoff(n, base=p.min_interval, cap=p.max_backoff, spread=jitter(feed_id, n))


def estimate_publish_interval(dates: Iterable[datetime], keep: int = 20) -> float | None:
    """Median gap between the newest entries' dates, in seconds; None when there are too few to tell."""
    ordered = sorted(set(dates), reverse=True)[:keep]
    if len(ordered) < 3:
        return None
    gaps = [(a - b).total_seconds() for a, b in itertools.pairwise(ordered)]
    gaps = [g for g in gaps if g > 0]
    return statistics.median(gaps) if gaps else None


def success_interval(
    *, override: float | None, publish_interval: float | None, ttl: float | None, p: PollingSettings
) -> float:
    """Seconds until the next check of a healthy feed.

    A configured interval wins; else check about twice per typical gap between posts, so a feed that
    posts hourly is read every half hour and a weekly one about twice a day (within the bounds).
    TTL and Cache-Control are the publisher asking us not to come back sooner; honoured within the bounds.
    """
    if override is not None:
        base = override
    elif publish_interval is not None:
        base = publish_interval / 2
    else:
        base = p.default_interval
    if ttl is not None:
        base = max(base, ttl)
    return min(p.max_interval, max(p.min_interval, base))


@dataclass(frozen=True)
class Outcome:
    """What one poll of a feed produced, stripped to what the policy needs."""

    kind: str  # ok | not_modified | unchanged | error
    error_kind: str | None = None
    error: str | None = None
    retry_after: float | None = None
    ttl: float | None = None  # seconds the publisher asks us to wait (<ttl>, Cache-Control max-age)


@dataclass(frozen=True)
class StateChange:
    """What the store should write to the feed row after a poll."""

    next_check_at: datetime
    error_count: int
    error_kind: str | None
    error: str | None
    muted: bool
    mute_reason: str | None
    success: bool


def decide(
    *,
    feed_id: str,
    outcome: Outcome,
    now: datetime,
    error_count: int,
    override: float | None,
    publish_interval: float | None,
    p: PollingSettings,
    scheduled: datetime | None = None,
) -> StateChange:
    """The feed's next check and error state after a poll. `scheduled` is when the poll was due: a healthy feed
    polled late by less than an interval keeps its cadence (the next check is counted from when it was due), so
    time spent waiting for a free lane or for the store does not push every later poll back."""
    if outcome.kind != "error":
        wait = success_interval(override=override, publish_interval=publish_interval, ttl=outcome.ttl, p=p)
        start = now
        if scheduled is not None and scheduled <= now < scheduled + timedelta(seconds=wait):
            start = scheduled
        return StateChange(start + timedelta(seconds=wait), 0, None, None, False, None, True)
    kind = outcome.error_kind or "error"
    if kind == "gone":
        # 410 is the publisher saying the feed will not come back; polling it again is noise.
        reason = outcome.error or "the server answered 410 Gone"
        return StateChange(
            now + timedelta(seconds=p.max_backoff), error_count + 1, kind, outcome.error, True, reason, False
        )
    if kind in NOT_COUNTED:
        asked = outcome.retry_after if outcome.retry_after is not None else p.min_interval
        wait = min(p.retry_after_cap, max(p.min_interval, asked)) * jitter(feed_id, error_count, 0.05)
        return StateChange(
            now + timedelta(seconds=wait), error_count, kind, outcome.error, False, None, False
        )
    count = error_count + 1
    wait = backoff_seconds(count, feed_id, p)
    if outcome.retry_after is not None:  # a 503 may say when to return; never sooner than our backoff
        wait = max(wait, min(p.retry_after_cap, outcome.retry_after))
    return StateChange(now + timedelta(seconds=wait), count, kind, outcome.error, False, None, False)


def publisher_ttl(fresh_for: float | None, ttl_minutes: int | None) -> float | None:
    """Seconds the publisher asks us to wait: the longer of the HTTP freshness (Cache-Control max-age, Expires)
    and the feed's own <ttl>; None when neither says."""
    values = []
    if fresh_for:
        values.append(float(fresh_for))
    if ttl_minutes:
        values.append(ttl_minutes * 60.0)
    return max(values) if values else None


# Feed rows whose new state is written in one statement (304s, errors, unchanged bodies): fewer transactions,
# and a crash loses at most this many feeds' state, which only means polling them again.
STATE_BATCH = 200


def wants_full_fetch(last_full_fetch_at: datetime | None, now: datetime, p: PollingSettings) -> bool:
    """Some servers answer 304 for content that changed; a fetch without validators now and then catches it."""
    return last_full_fetch_at is None or (now - last_full_fetch_at).total_seconds() >= p.full_fetch_every


def health(
    *,
    enabled: bool,
    removed: bool,
    muted: bool,
    error_count: int,
    error_kind: str | None,
    last_fetch_at: datetime | None,
    last_new_item_at: datetime | None,
    created_at: datetime | None,
    now: datetime,
    p: PollingSettings,
) -> str:
    """One word a person can act on: ok, failing, muted, rate_limited, silent, new, disabled, removed."""
    if removed:
        return "removed"
    if not enabled:
        return "disabled"
    if muted:
        return "muted"
    if error_kind == "rate_limited":
        return "rate_limited"
    if error_count > 0:
        return "failing"
    if last_fetch_at is None:
        return "new"
    since = last_new_item_at or created_at
    if since is not None and (now - since).total_seconds() > p.silent_after:
        return "silent"
    return "ok"


class FeedState(Protocol):
    enabled: bool
    removed: bool
    muted: bool
    error_count: int
    error_kind: str | None
    last_fetch_at: datetime | None
    last_new_item_at: datetime | None
    created_at: datetime


def feed_health(feed: FeedState, now: datetime, p: PollingSettings) -> str:
    """`health` of a stored feed row."""
    return health(
        enabled=feed.enabled,
        removed=feed.removed,
        muted=feed.muted,
        error_count=feed.error_count,
        error_kind=feed.error_kind,
        last_fetch_at=feed.last_fetch_at,
        last_new_item_at=feed.last_new_item_at,
        created_at=feed.created_at,
        now=now,
        p=p,
    )
