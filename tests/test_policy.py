"""Polling policy as plain values: backoff, adaptive intervals, health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.config.models import PollingSettings
from monitor.ingest import policy

P = PollingSettings()
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def decide(
    kind: str,
    *,
    error_kind: str | None = None,
    errors: int = 0,
    retry_after: float | None = None,
    **kw: object,
) -> policy.StateChange:
    outcome = policy.Outcome(
        kind=kind, error_kind=error_kind, error="boom" if error_kind else None, retry_after=retry_after
    )
    args = {"override": None, "publish_interval": None, **kw}
    return policy.decide(feed_id="f", outcome=outcome, now=NOW, error_count=errors, p=P, **args)  # type: ignore[arg-type]


def test_backoff_doubles_and_is_capped_at_a_day() -> None:
    waits = [policy.backoff_seconds(n, "f", P) for n in range(1, 12)]
    assert waits[1] > waits[0] * 1.6 and waits[2] > waits[1] * 1.6
    assert max(waits) <= 86400
    assert waits[-1] >= 86400 * 0.9


def test_jitter_is_stable_per_feed_and_differs_between_feeds() -> None:
    assert policy.jitter("a", 3) == policy.jitter("a", 3)
    assert len({round(policy.jitter(f"feed-{i}", 3), 6) for i in range(20)}) > 10
    assert all(0.9 <= policy.jitter(f"feed-{i}", 1) <= 1.1 for i in range(100))


def test_failure_counts_and_success_resets() -> None:
    failed = decide("error", error_kind="http_5xx", errors=2)
    assert failed.error_count == 3 and not failed.success and failed.error_kind == "http_5xx"
    ok = decide("ok", errors=3)
    assert ok.error_count == 0 and ok.success and ok.error is None


def test_rate_limiting_is_not_counted_and_retry_after_is_capped() -> None:
    change = decide("error", error_kind="rate_limited", errors=1, retry_after=10 * 86400)
    assert change.error_count == 1
    assert change.next_check_at - NOW <= timedelta(seconds=P.retry_after_cap * 1.05)


def test_503_retry_after_longer_than_backoff_is_honoured() -> None:
    change = decide("error", error_kind="http_5xx", errors=0, retry_after=3 * 3600)
    assert change.next_check_at - NOW >= timedelta(hours=3)


def test_gone_mutes() -> None:
    change = decide("error", error_kind="gone")
    assert change.muted and change.mute_reason


def test_success_interval_follows_the_publishing_rate_within_bounds() -> None:
    assert policy.success_interval(override=None, publish_interval=7200, ttl=None, p=P) == 3600
    assert policy.success_interval(override=None, publish_interval=60, ttl=None, p=P) == P.min_interval
    assert (
        policy.success_interval(override=None, publish_interval=30 * 86400, ttl=None, p=P) == P.max_interval
    )
    assert policy.success_interval(override=None, publish_interval=7200, ttl=5 * 3600, p=P) == 5 * 3600
    assert policy.success_interval(override=900, publish_interval=7200, ttl=None, p=P) == 900


def test_publish_interval_is_the_median_gap() -> None:
    dates = [NOW - timedelta(hours=h) for h in (0, 1, 2, 3, 30)]
    assert policy.estimate_publish_interval(dates) == 3600
    assert policy.estimate_publish_interval(dates[:2]) is None


def test_health_words() -> None:
    base = {
        "enabled": True,
        "removed": False,
        "muted": False,
        "error_count": 0,
        "error_kind": None,
        "last_fetch_at": NOW,
        "last_new_item_at": NOW,
        "created_at": NOW - timedelta(days=30),
        "now": NOW,
        "p": P,
    }
    assert policy.health(**base) == "ok"  # type: ignore[arg-type]
    assert policy.health(**{**base, "error_count": 2}) == "failing"  # type: ignore[arg-type]
    assert policy.health(**{**base, "muted": True}) == "muted"  # type: ignore[arg-type]
    assert policy.health(**{**base, "last_new_item_at": NOW - timedelta(days=8)}) == "silent"  # type: ignore[arg-type]
    assert policy.health(**{**base, "last_fetch_at": None}) == "new"  # type: ignore[arg-type]


def test_full_fetch_comes_due_once_a_day() -> None:
    assert policy.wants_full_fetch(None, NOW, P)
    assert not policy.wants_full_fetch(NOW - timedelta(hours=23), NOW, P)
    assert policy.wants_full_fetch(NOW - timedelta(hours=25), NOW, P)


def test_a_poll_made_late_keeps_the_feeds_cadence() -> None:
    hour = timedelta(hours=1)
    # due 40 s ago (waiting for a lane, storing): the next check is an hour after it was due, not after now
    assert decide(
        "ok", override=3600.0, scheduled=NOW - timedelta(seconds=40)
    ).next_check_at == NOW + hour - timedelta(seconds=40)
    # after downtime longer than the interval the cadence starts again from now (no burst of catch-up polls)
    assert decide("ok", override=3600.0, scheduled=NOW - 3 * hour).next_check_at == NOW + hour
    # polled before it was due (poll --all): from now
    assert decide("ok", override=3600.0, scheduled=NOW + timedelta(minutes=5)).next_check_at == NOW + hour
    # failures back off from now, whatever the schedule said
    failed = decide("error", error_kind="http_5xx", override=3600.0, scheduled=NOW - timedelta(seconds=40))
    assert failed.next_check_at > NOW
