"""The decider with plain values: no server, no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.config.models import PollingSettings
from monitor.ingest import decide
from monitor.ingest.fetch import FetchResult
from monitor.ingest.parse import Entry, ParsedFeed, ParseFailure
from monitor.store.items import Known, KnownEntry

P = PollingSettings()
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
URL = "https://news.example/feed.xml"


@dataclass
class FeedRow:
    id: str = "f"
    url: str = URL
    etag: str | None = '"v1"'
    last_modified: str | None = None
    body_hash: str | None = None
    error_count: int = 0
    interval: float | None = None
    publish_interval: float | None = None
    next_check_at: datetime | None = None
    last_full_fetch_at: datetime | None = NOW - timedelta(hours=1)


def fetched(outcome: str = "ok", **kw: object) -> FetchResult:
    return FetchResult(url=URL, final_url=URL, outcome=outcome, **kw)  # type: ignore[arg-type]


def entry(key: str, *, url: str | None = None, content: str = "c", published: datetime = NOW) -> Entry:
    return Entry(
        key=key,
        guid=key,
        url=url,
        title=key,
        text="",
        html="",
        published=published,
        published_estimated=False,
        language="en",
        author=None,
        content_hash=content,
    )


def parsed(*entries: Entry) -> ParsedFeed:
    return ParsedFeed(
        title="News",
        link="https://news.example/",
        language="en",
        ttl_minutes=None,
        entries=list(entries),
        warning=None,
        dropped=0,
    )


def feed_intent(
    row: FeedRow, result: FetchResult, doc: object = None, forced: bool = False
) -> decide.FeedIntent:
    digest = decide.body_hash(result)
    return decide.decide_feed(row, result, doc, digest=digest, now=NOW, p=P, forced=forced)  # type: ignore[arg-type]


# --- requests -----------------------------------------------------------------------------------------------


def test_a_feed_is_asked_conditionally_until_its_full_fetch_is_due() -> None:
    req = decide.fetch_request(FeedRow(), NOW, P)
    assert req.etag == '"v1"' and not req.force_full
    stale = FeedRow(last_full_fetch_at=NOW - timedelta(seconds=P.full_fetch_every))
    full = decide.fetch_request(stale, NOW, P)
    assert full.force_full and full.etag is None


# --- the feed row -------------------------------------------------------------------------------------------


def test_304_schedules_the_next_check_and_keeps_the_stored_validators() -> None:
    intent = feed_intent(FeedRow(error_count=2), fetched("not_modified", status=304, etag='"v2"'))
    assert intent.outcome == "not_modified" and intent.store is None
    cols = decide.feed_columns(intent, NOW)
    assert "etag" not in cols and cols["error_count"] == 0 and cols["last_success_at"] == NOW
    assert cols["next_check_at"] == NOW + timedelta(seconds=P.default_interval)
    assert cols["lease_owner"] is None and cols["last_outcome"] == "not_modified"


def test_the_same_bytes_again_are_not_parsed_and_count_as_unchanged() -> None:
    body = b"<rss/>"
    result = fetched(status=200, body=body, etag='"v2"')
    row = FeedRow(body_hash=decide.body_hash(result))
    assert not decide.needs_parse([row], decide.body_hash(result))
    assert decide.needs_parse([row, FeedRow(id="g")], decide.body_hash(result))  # a second id, never stored
    intent = feed_intent(row, result)
    assert intent.outcome == "unchanged" and intent.store is None
    assert decide.feed_columns(intent, NOW)["etag"] == '"v2"'  # a 200 brings the validators to send next


def test_a_changed_document_is_stored_and_the_schedule_follows_its_publishing_rate() -> None:
    hourly = [entry(f"e{i}", published=NOW - timedelta(hours=i)) for i in range(6)]
    result = fetched(status=200, body=b"<rss>new</rss>")
    intent = feed_intent(FeedRow(body_hash="old"), result, parsed(*hourly), forced=True)
    assert intent.outcome == "ok" and intent.store is not None and intent.entries == 6
    assert intent.store.publish_interval == 3600 and intent.store.site_url == "https://news.example/"
    cols = decide.feed_columns(intent, NOW)
    assert cols["next_check_at"] == NOW + timedelta(seconds=max(P.min_interval, 1800))
    assert cols["last_full_fetch_at"] == NOW and cols["publish_interval"] == 3600


def test_a_parse_failure_is_an_error_naming_the_feed() -> None:
    intent = feed_intent(
        FeedRow(), fetched(status=200, body=b"<html>"), ParseFailure("not_a_feed", "HTML page")
    )
    assert intent.outcome == "error" and intent.error_kind == "not_a_feed"
    assert intent.error == f"{URL}: HTML page" and intent.schedule.error_count == 1
    assert "etag" not in decide.feed_columns(intent, NOW)


def test_410_mutes_the_feed_with_the_reason() -> None:
    gone = fetched("error", status=410, error_kind="gone", error=f"{URL}: gone: removed for good")
    cols = decide.feed_columns(feed_intent(FeedRow(), gone), NOW)
    assert cols["muted"] is True and "removed for good" in cols["mute_reason"]
    assert cols["last_error"] == gone.error and cols["last_error_at"] == NOW


def test_failures_back_off_and_honour_retry_after() -> None:
    failing = fetched("error", status=503, error_kind="http_5xx", error="x", retry_after=5 * 3600)
    intent = feed_intent(FeedRow(error_count=1), failing)
    assert intent.schedule.error_count == 2 and intent.schedule.next_check_at >= NOW + timedelta(hours=5)


def test_only_a_permanent_redirect_moves_the_address() -> None:
    moved = feed_intent(FeedRow(), fetched("not_modified", status=304, permanent_url="https://new.example/f"))
    assert decide.feed_columns(moved, NOW)["url"] == "https://new.example/f"
    failed = fetched("error", error_kind="http_4xx", error="x", permanent_url="https://new.example/f")
    assert "url" not in decide.feed_columns(feed_intent(FeedRow(), failed), NOW)


def test_a_store_failure_is_counted_as_an_error_of_kind_store() -> None:
    intent = decide.decide_store_failure(FeedRow(), fetched(status=200, body=b"x"), "disk full", now=NOW, p=P)
    assert intent.outcome == "error" and intent.schedule.error_kind == "store"
    assert intent.schedule.error_count == 1 and not intent.store_validators


# --- entries ------------------------------------------------------------------------------------------------


def test_entries_are_sorted_into_new_updated_linked_and_skipped() -> None:
    known = Known(
        entries={
            "same": KnownEntry(1, "c", pruned=False, hash_updates=0, has_url=True),
            "edited": KnownEntry(2, "old", pruned=False, hash_updates=3, has_url=True),
            "capped": KnownEntry(3, "old", pruned=False, hash_updates=P.max_hash_updates, has_url=True),
            "pruned": KnownEntry(4, "old", pruned=True, hash_updates=0, has_url=True),
        },
        by_url={"https://other.example/story": 10},
        by_hash={"reprinted": 11},
    )
    plan = decide.plan_entries(
        [
            entry("same"),
            entry("edited", content="new"),
            entry("capped", content="new"),
            entry("pruned", content="new"),
            entry("elsewhere", url="https://other.example/story"),
            entry("reprint", content="reprinted"),
            entry("fresh", url="https://news.example/a", content="a"),
            entry("fresh-again", url="https://news.example/a", content="a2"),
            entry("fresh"),
        ],
        known,
        max_hash_updates=P.max_hash_updates,
    )
    assert [n.entry.key for n in plan.new] == ["fresh"]
    assert [(u.item_id, u.entry.key) for u in plan.updates] == [(2, "edited")]
    assert [(lk.entry.key, lk.item_id, lk.new_index) for lk in plan.links] == [
        ("elsewhere", 10, None),
        ("reprint", 11, None),
        ("fresh-again", None, 0),  # the same story earlier in this document
    ]
    assert {s.entry.key: s.reason for s in plan.skipped} == {
        "same": "same_content",
        "capped": "hash_update_cap",
        "pruned": "pruned",
        "fresh": "duplicate_key",
    }
    assert [e.key for e in plan.to_classify()] == ["fresh", "edited"]


def test_an_updated_entry_adopts_a_url_only_when_its_item_has_none_and_nobody_took_it() -> None:
    known = Known(entries={"k": KnownEntry(5, "old", pruned=False, hash_updates=0, has_url=False)})
    plan = decide.plan_entries(
        [entry("k", url="https://n.example/k", content="new")], known, max_hash_updates=24
    )
    assert plan.updates[0].adopt_url
    taken = Known(entries=known.entries, by_url={"https://n.example/k": 9})
    plan = decide.plan_entries(
        [entry("k", url="https://n.example/k", content="new")], taken, max_hash_updates=24
    )
    assert not plan.updates[0].adopt_url


def test_skip_known_names_why_an_entry_is_left_alone() -> None:
    base = KnownEntry(1, "h", pruned=False, hash_updates=0, has_url=True)
    assert decide.skip_known(base, "h", 24) == "same_content"
    assert decide.skip_known(base, "other", 24) is None
    assert decide.skip_known(KnownEntry(1, "h", False, 24, True), "other", 24) == "hash_update_cap"
