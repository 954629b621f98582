"""One polling cycle as a pipeline: claim -> fetch -> parse -> decide -> (enrich) -> classify -> store -> group.

Each stage does one thing and the data flows one way. The decisions (which request to send, whether a body needs
parsing, what the feed row becomes, which entries are new, updated, linked or skipped) are pure functions in
`monitor.ingest.decide`; this module does the I/O around them. Network I/O runs on the event loop; documents are
parsed in worker processes (on the store thread on one core), and every database write runs on that one store
thread, so writes never interleave (SQLite has one writer anyway). A bounded set of fetch-and-store workers keeps
fetching from running ahead of storing, so memory holds only a few documents at a time.

Seams: an `Enricher` runs per document between decide and store, on the entries this feed has not stored yet
(article text, language, evidence); `AfterStore` stages run inside each feed's store transaction after its entries
are written (grouping is the last of the default ones), so items and what is derived from them commit together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, bindparam, select, update
from sqlmodel import Session, col

from monitor.config.load import Config
from monitor.config.models import PollingSettings
from monitor.ingest import decide, policy, workers
from monitor.ingest.classify import ClassifierLike, classify_entries
from monitor.ingest.decide import FeedIntent
from monitor.ingest.parse import Entry, ParseOutcome
from monitor.store.engine import write_scope
from monitor.store.feeds import claim_feeds, sync_feeds
from monitor.store.items import load_known, stored_keys, write_entries
from monitor.store.models import Feed
from monitor.store.types import utcnow

if TYPE_CHECKING:
    from monitor.ingest.fetch import Fetcher, FetchLimits, FetchResult

__all__ = [
    "AfterStore",
    "Enricher",
    "FeedResult",
    "PollReport",
    "Poller",
    "StoredBatch",
    "claim_feeds",
    "group_stage",
    "poll_once",
]


@dataclass
class FeedResult:
    feed: str
    url: str
    outcome: str  # ok | not_modified | unchanged | error
    status: int | None = None
    error_kind: str | None = None
    error: str | None = None
    warning: str | None = None
    new: int = 0
    updated: int = 0
    linked: int = 0
    entries: int = 0
    elapsed: float = 0.0
    fetch_seconds: float = 0.0  # the network part of `elapsed` (waiting for a connection slot included)
    next_check_at: datetime | None = None
    new_item_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("new_item_ids")
        data["next_check_at"] = self.next_check_at.isoformat() if self.next_check_at else None
        return data


@dataclass
class PollReport:
    started: datetime
    finished: datetime | None = None
    results: list[FeedResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FeedResult]:
        return [r for r in self.results if r.outcome == "error"]

    def counts(self) -> dict[str, int]:
        out = {"feeds": len(self.results), "ok": 0, "not_modified": 0, "unchanged": 0, "error": 0}
        for r in self.results:
            out[r.outcome] = out.get(r.outcome, 0) + 1
        out["new_items"] = sum(r.new for r in self.results)
        out["updated_items"] = sum(r.updated for r in self.results)
        out["linked_items"] = sum(r.linked for r in self.results)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "summary": self.counts(),
            "feeds": [r.to_json() for r in self.results],
        }


def allow_private(config: Config) -> bool:
    return (
        config.settings.http.allow_private_networks or os.environ.get("MONITOR_ALLOW_PRIVATE_NETWORKS") == "1"
    )


# Feed columns a poll may change without storing entries; written in batches (see Poller._write_states).
STATE_COLUMNS = (
    "id",
    "url",
    "etag",
    "last_modified",
    "last_fetch_at",
    "last_success_at",
    "last_full_fetch_at",
    "next_check_at",
    "last_outcome",
    "last_status",
    "error_kind",
    "last_error",
    "last_error_at",
    "error_count",
    "muted",
    "mute_reason",
    "ttl",
    "lease_owner",
    "lease_until",
)


_FEED = Feed.__table__  # type: ignore[attr-defined]
# Core, not the ORM's bulk update: the ORM path costs several times as much per row for the same statement.
_STATE_UPDATE = (
    update(_FEED)
    .where(_FEED.c.id == bindparam("_id"))
    .values({name: bindparam(f"v_{name}") for name in STATE_COLUMNS if name != "id"})
)

# The store transaction's feed row, in Core: the ORM's get and the flush of its changes cost about 1.5 ms a feed.
_FEED_ROW = select(_FEED.c.id).where(_FEED.c.id == bindparam("_id"))
_FEED_ROW_LOCKED = _FEED_ROW.with_for_update()  # PostgreSQL: polls on other machines wait for this one
_FEED_UPDATES: dict[tuple[tuple[str, ...], bool], Any] = {}


def _feed_update(columns: tuple[str, ...], add_items: bool) -> Any:
    """UPDATE of these feed columns (parameters v_<name>, and _added for items_total), built once per shape."""
    stmt = _FEED_UPDATES.get((columns, add_items))
    if stmt is None:
        values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in columns}
        if add_items:
            values["items_total"] = _FEED.c.items_total + bindparam("_added")
        stmt = _FEED_UPDATES[(columns, add_items)] = (
            update(_FEED).where(_FEED.c.id == bindparam("_id")).values(values)
        )
    return stmt


# --- seams ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBatch:
    """What one feed's store transaction wrote, for the stages that run after it in the same transaction."""

    feed_id: str
    new_item_ids: list[int]
    changed_item_ids: list[int]  # stored before, content updated now
    now: datetime
    # the new items stored with a category; None: not known, any new item may have one
    matched_new_ids: list[int] | None = None


AfterStore = Callable[[Session, StoredBatch], None]


class Enricher(Protocol):
    """Per-document enrichment between decide and store: gets the parsed entries this feed has not stored yet
    and returns them, possibly replaced (`dataclasses.replace`) with more filled in. Runs on the event loop, so
    it may fetch; it must not raise for one entry's trouble (keep the entry as it came)."""

    async def __call__(self, feed: Feed, entries: Sequence[Entry]) -> Sequence[Entry]: ...


def group_stage(config: Config, classifier: ClassifierLike | None) -> AfterStore:
    """The grouping stage: new and changed items join or open incidents in the transaction that stored them,
    so a crash never leaves stored items ungrouped."""
    categories = getattr(classifier, "categories", None) or {}
    severity = {cid: info.severity for cid, info in categories.items()} or None
    gazetteer = getattr(classifier, "gazetteer", None)
    words = gazetteer.country_level_words() if gazetteer is not None else None
    window_hours = config.settings.grouping.window / 3600

    def group(session: Session, batch: StoredBatch) -> None:
        # A new item without a category joins nothing (most reports of a poll): only the others are grouped.
        new = batch.new_item_ids if batch.matched_new_ids is None else batch.matched_new_ids
        item_ids = new + batch.changed_item_ids
        if not item_ids:
            return
        from monitor.incidents import CountryLevel, group_items

        group_items(
            session,
            item_ids,
            now=batch.now,
            severity=severity,
            window_hours=window_hours,
            country_level=CountryLevel.of(words) if words is not None else None,
        )

    return group


# --- the pipeline -----------------------------------------------------------------------------------------


class Poller:
    """Owns what one cycle needs: the engine, the settings, the classifier, the stages, the write thread."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        classifier: ClassifierLike | None = None,
        *,
        after_store: Sequence[AfterStore] | None = None,
        enrich: Enricher | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.classifier = classifier
        self.after_store = list(after_store) if after_store is not None else [group_stage(config, classifier)]
        if enrich is None:
            # Article text for teasers and each entry's language (monitor.ingest.article); its records are
            # written by its own stage, first, in the transaction that stores the items.
            from monitor.ingest.article import ArticleEnricher

            enrich = ArticleEnricher(config)
        record = getattr(enrich, "record_stage", None)
        if record is not None:
            self.after_store.insert(0, record)
        self.enrich: Enricher | None = enrich
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-store")
        self._states: list[dict[str, Any]] = []  # touched on the event loop only

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    @property
    def polling(self) -> PollingSettings:
        return self.config.settings.polling

    def sync(self) -> None:
        with write_scope(self.engine) as s:
            sync_feeds(s, self.config.feeds)

    async def run(
        self,
        *,
        feed_ids: Sequence[str] | None = None,
        ignore_schedule: bool = False,
        worker: str | None = None,
        limit: int | None = None,
        lease_seconds: float = 900,
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[FeedResult], None] | None = None,
        now_fn: Callable[[], datetime] = utcnow,
    ) -> PollReport:
        from monitor.ingest.fetch import Fetcher

        report = PollReport(started=now_fn())
        # claim
        with write_scope(self.engine) as s:
            feeds = claim_feeds(
                s,
                now=report.started,
                feed_ids=feed_ids,
                ignore_schedule=ignore_schedule,
                worker=worker,
                limit=limit,
                lease_seconds=lease_seconds,
            )
            snapshot = {f.id: f.model_copy() for f in feeds}
        if on_start:
            on_start(len(snapshot))
        if not snapshot:
            report.finished = now_fn()
            return report
        by_url: dict[str, list[Feed]] = {}
        requests = []
        forced: set[str] = set()
        for f in snapshot.values():
            req = decide.fetch_request(f, report.started, self.polling)
            if req.force_full:
                forced.add(f.id)
            if f.url in by_url:  # two feed ids with one address: fetch once, store for both
                by_url[f.url].append(f)
                continue
            by_url[f.url] = [f]
            requests.append(req)
        todo = iter(requests)

        async def fetch_and_store(fetcher: Fetcher) -> None:
            # Each worker fetches, then waits for its document to be parsed and stored before fetching the next:
            # fetches never run ahead of the store, so memory holds a bounded number of documents.
            for req in todo:  # one shared iterator: every request is taken by exactly one worker
                fetched = await fetcher.fetch(req)
                results = await self._handle(by_url.get(fetched.url, []), fetched, forced, now_fn)
                report.results.extend(results)
                if on_result:
                    for r in results:
                        on_result(r)

        renewing = None
        if worker:
            renewing = asyncio.create_task(
                self._renew_leases(sorted(snapshot), worker, lease_seconds, now_fn)
            )
        limits = fetch_limits(self.config)
        try:
            async with Fetcher(limits) as fetcher, asyncio.TaskGroup() as tg:
                # Twice the network concurrency, so fetching goes on while some documents are being stored.
                for _ in range(min(len(requests), 2 * limits.max_concurrency)):
                    tg.create_task(fetch_and_store(fetcher))
        finally:
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            await self._flush_states_async()
        await self._retry_articles(now_fn)
        report.results.sort(key=lambda r: r.feed)
        report.finished = now_fn()
        return report

    async def _retry_articles(self, now_fn: Callable[[], datetime]) -> None:
        """Article pages whose retry is due, one per host (monitor.ingest.article.retry_articles)."""
        from monitor.ingest.article import ArticleEnricher, retry_articles

        if isinstance(self.enrich, ArticleEnricher):
            try:
                await retry_articles(self.engine, self.config, self.classifier, now=now_fn())
            except Exception:  # a retry's trouble must not fail the poll that stored the feeds
                import logging

                logging.getLogger(__name__).warning("article retries failed", exc_info=True)

    async def _renew_leases(
        self, ids: list[str], worker: str, lease_seconds: float, now_fn: Callable[[], datetime]
    ) -> None:
        """Extend, every third of a lease, the leases of this batch's feeds whose state is not written yet (a
        written state clears the lease owner): a batch that outlasts its lease (feeds hanging until the fetch
        timeout, one after another) must not let another worker claim and fetch them again. A worker that dies
        stops renewing, and its leases run out."""
        every = max(lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(every)
            until = now_fn() + timedelta(seconds=lease_seconds)
            await asyncio.to_thread(self._extend, ids, worker, until)

    def _extend(self, ids: list[str], worker: str, until: datetime) -> None:
        with write_scope(self.engine) as s:
            for i in range(0, len(ids), 500):
                s.execute(
                    update(Feed)
                    .where(col(Feed.id).in_(ids[i : i + 500]), col(Feed.lease_owner) == worker)
                    .values(lease_until=until)
                )

    async def _handle(
        self, feeds: list[Feed], fetched: FetchResult, forced: set[str], now_fn: Callable[[], datetime]
    ) -> list[FeedResult]:
        """parse -> decide -> enrich for one fetched document, then classify -> store -> group on the store
        thread, so parsing one feed overlaps with storing another."""
        now = now_fn()
        digest = decide.body_hash(fetched)
        parsed = await self._parse(feeds[0], fetched, now) if decide.needs_parse(feeds, digest) else None
        intents = []
        for f in feeds:
            intent = decide.decide_feed(
                f, fetched, parsed, digest=digest, now=now, p=self.polling, forced=f.id in forced
            )
            if self.enrich is not None and intent.store is not None:
                intent = await self._enrich(f, intent)
            intents.append((f, intent))
        results = [self._record_state(f, i, fetched, now) for f, i in intents if i.store is None]
        if len(self._states) >= policy.STATE_BATCH:
            await self._flush_states_async()
        to_store = [(f, i) for f, i in intents if i.store is not None]
        if to_store:
            loop = asyncio.get_running_loop()
            results += await loop.run_in_executor(self._writer, self._store, to_store, fetched, now)
        return results

    async def _parse(self, feed: Feed, fetched: FetchResult, now: datetime) -> ParseOutcome:
        """The parse stage: in a worker process when the machine has more than one core."""
        return await workers.parse_off_loop(
            self._writer,
            fetched.body or b"",
            fetched.final_url or fetched.url,
            dict(fetched.headers),
            now,
            feed.language,
            self.polling.max_entries_per_feed,
        )

    async def _enrich(self, feed: Feed, intent: FeedIntent) -> FeedIntent:
        """The enrichment seam: only entries this feed has not stored yet are handed over."""
        assert self.enrich is not None and intent.store is not None
        entries = intent.store.parsed.entries
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(
            self._writer, self._stored_keys, feed.id, [e.key for e in entries]
        )
        fresh = [e for e in entries if e.key not in stored]
        if not fresh:
            return intent
        enriched = {e.key: e for e in await self.enrich(feed, fresh)}
        merged = [enriched.get(e.key, e) for e in entries]
        parsed = replace(intent.store.parsed, entries=merged)
        return replace(intent, store=replace(intent.store, parsed=parsed))

    def _stored_keys(self, feed_id: str, keys: list[str]) -> set[str]:
        with self.engine.connect() as conn:
            return stored_keys(conn, feed_id, keys)

    def _result(self, feed: Feed, intent: FeedIntent) -> FeedResult:
        return FeedResult(
            feed=feed.id,
            url=feed.url,
            outcome=intent.outcome,
            status=intent.status,
            error_kind=intent.error_kind,
            error=intent.error,
            warning=intent.warning,
            entries=intent.entries,
            next_check_at=intent.schedule.next_check_at,
        )

    def _record_state(
        self, feed: Feed, intent: FeedIntent, fetched: FetchResult, now: datetime
    ) -> FeedResult:
        """Nothing to store but the feed's state (304s, errors, unchanged bodies): kept on the event loop and
        written in batches with other feeds' (one executemany), instead of a trip to the store thread each."""
        res = self._result(feed, intent)
        _apply(feed, decide.feed_columns(intent, now))
        self._states.append({name: getattr(feed, name) for name in STATE_COLUMNS})
        res.fetch_seconds = res.elapsed = round(fetched.elapsed, 4)
        return res

    async def _flush_states_async(self) -> None:
        rows, self._states = self._states, []
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write_states, rows)

    def _store(
        self, intents: list[tuple[Feed, FeedIntent]], fetched: FetchResult, now: datetime
    ) -> list[FeedResult]:
        return [self._store_one(f, intent, fetched, now) for f, intent in intents]

    def _store_one(self, feed: Feed, intent: FeedIntent, fetched: FetchResult, now: datetime) -> FeedResult:
        """The store stage for one feed; every failure becomes a recorded error, never an exception."""
        started = time.perf_counter()
        res = self._result(feed, intent)
        doc = intent.store
        assert doc is not None, "state-only intents are recorded on the event loop"
        try:
            with write_scope(self.engine) as s:
                locked = s.get_bind().dialect.name == "postgresql"
                if s.execute(_FEED_ROW_LOCKED if locked else _FEED_ROW, {"_id": feed.id}).first() is None:
                    raise LookupError(f"feed {feed.id} vanished during the poll")
                entries = doc.parsed.entries
                known = load_known(
                    s, feed.id, entries, now=now, cross_feed_window=self.polling.cross_feed_window
                )
                plan = decide.plan_entries(entries, known, max_hash_updates=self.polling.max_hash_updates)
                classes = classify_entries(self.classifier, plan.to_classify())
                stats = write_entries(s, feed.id, plan, now=now, classifications=classes)
                res.new, res.updated, res.linked = stats.new, stats.updated, stats.linked
                res.new_item_ids = stats.new_item_ids
                batch = StoredBatch(
                    feed.id, stats.new_item_ids, stats.changed_item_ids, now, stats.matched_new_ids
                )
                for stage in self.after_store:
                    stage(s, batch)
                values = decide.feed_columns(intent, now)
                values["body_hash"] = doc.body_hash
                if doc.site_url:  # else the stored one stays
                    values["site_url"] = doc.site_url
                if stats.new:
                    values["last_new_item_at"] = now
                added = stats.new + stats.linked
                params = {f"v_{name}": value for name, value in values.items()}
                params["_id"], params["_added"] = feed.id, added
                s.execute(_feed_update(tuple(values), added > 0), params)
        except Exception as exc:
            # The transaction rolled back: nothing half-written. Record the failure on the feed in a new one.
            error = f"{feed.url}: could not store: {type(exc).__name__}: {exc}"
            failed = decide.decide_store_failure(feed, fetched, error, now=now, p=self.polling)
            res.outcome, res.error_kind, res.error = "error", "store", error
            res.new = res.updated = res.linked = 0
            res.new_item_ids = []
            res.next_check_at = failed.schedule.next_check_at
            with write_scope(self.engine) as s:
                row = s.get(Feed, feed.id)
                if row is not None:
                    _apply(row, decide.feed_columns(failed, now))
                    s.add(row)
        res.fetch_seconds = round(fetched.elapsed, 4)
        res.elapsed = round(fetched.elapsed + (time.perf_counter() - started), 4)
        return res

    def _write_states(self, rows: list[dict[str, Any]]) -> None:
        """Write the batched state of feeds that brought no entries: one UPDATE, executed for every row."""
        if not rows:
            return
        with write_scope(self.engine) as s:
            s.execute(_STATE_UPDATE, [{f"v_{k}": v for k, v in r.items()} | {"_id": r["id"]} for r in rows])


def _apply(row: Feed, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(row, name, value)


def fetch_limits(config: Config) -> FetchLimits:
    """The fetcher's limits from the http settings."""
    from monitor.ingest.fetch import FetchLimits

    http = config.settings.http
    return FetchLimits(
        max_concurrency=http.max_concurrency,
        per_host=http.per_host,
        connect_timeout=http.connect_timeout,
        total_timeout=http.total_timeout,
        max_bytes=http.max_bytes,
        max_decompressed=http.max_decompressed_bytes,
        max_redirects=http.max_redirects,
        user_agent=http.user_agent,
        allow_private=allow_private(config),
    )


async def poll_once(
    engine: Engine,
    config: Config,
    classifier: ClassifierLike | None = None,
    *,
    feed_ids: Iterable[str] | None = None,
    ignore_schedule: bool = False,
    **kwargs: Any,
) -> PollReport:
    """Sync the feed list from config and run one cycle. The CLI, the scheduler and tests all call this."""
    poller = Poller(engine, config, classifier)
    try:
        poller.sync()
        return await poller.run(
            feed_ids=list(feed_ids) if feed_ids else None, ignore_schedule=ignore_schedule, **kwargs
        )
    finally:
        poller.close()
