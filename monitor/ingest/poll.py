"""One polling cycle: pick the due feeds, fetch them concurrently, parse, store each feed in one transaction.

The pipeline is storage -> fetch -> parse -> decide -> store. Network I/O runs on the event loop; large
documents are parsed in worker processes, small ones on the store thread, and every database write runs on that
one store thread, so writes never interleave (SQLite has one writer anyway). A bounded set of fetch-and-store
workers keeps fetching from running ahead of storing, so memory holds only a few documents at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, update
from sqlmodel import Session, col, select

from monitor.config.load import Config
from monitor.config.models import PollingSettings
from monitor.ingest import policy
from monitor.ingest.parse import ParseFailure, ParseOutcome, parse_job, worker_init
from monitor.store.engine import write_scope
from monitor.store.feeds import sync_feeds
from monitor.store.items import ClassifierLike, store_entries
from monitor.store.models import Feed
from monitor.store.types import utcnow


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


def claim_feeds(
    session: Session,
    *,
    now: datetime,
    feed_ids: Sequence[str] | None = None,
    ignore_schedule: bool = False,
    worker: str | None = None,
    lease_seconds: float = 900,
    limit: int | None = None,
) -> list[Feed]:
    """The feeds to poll now, oldest check first, leased to `worker` so no other worker polls them meanwhile.

    On PostgreSQL the rows are locked with SKIP LOCKED while the lease is written, so workers racing for the
    same due feeds each get a different share.
    """
    q = select(Feed).where(col(Feed.removed).is_(False))
    if feed_ids:
        q = q.where(col(Feed.id).in_(list(feed_ids)))  # named feeds are polled even if muted or not due
    else:
        q = q.where(col(Feed.enabled).is_(True), col(Feed.muted).is_(False))
        if not ignore_schedule:
            q = q.where(or_(col(Feed.next_check_at).is_(None), col(Feed.next_check_at) <= now))
    q = q.where(or_(col(Feed.lease_until).is_(None), col(Feed.lease_until) < now))
    q = q.order_by(col(Feed.next_check_at).asc().nulls_first(), col(Feed.id))
    if limit:
        q = q.limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    feeds = list(session.exec(q).all())
    if worker:
        for f in feeds:
            f.lease_owner, f.lease_until = worker, now + timedelta(seconds=lease_seconds)
            session.add(f)
    return feeds


# Feed columns a poll may change without storing entries; written in batches (see Poller._flush_states).
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
STATE_BATCH = 200


_POOL: ProcessPoolExecutor | None = None


def _workers() -> int:
    """How many parse workers to start; 0: parse in this process (one core, or MONITOR_PARSE_WORKERS=0)."""
    wanted = os.environ.get("MONITOR_PARSE_WORKERS")
    if wanted and wanted.isdigit():
        return int(wanted)
    cores = min(4, os.cpu_count() or 1)
    return cores if cores >= 2 else 0


def _parse_pool() -> ProcessPoolExecutor | None:
    """Worker processes for parsing, shared by every cycle of this process; None on one core or when
    MONITOR_PARSE_WORKERS=0. forkserver, because forking a process with threads (ours, the DB pool's)
    can copy a held lock into the child."""
    global _POOL
    workers = _workers()
    if workers < 1:
        return None
    if _POOL is None:
        ctx = multiprocessing.get_context("forkserver")
        _POOL = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(),)
        )
        atexit.register(_reset_parse_pool)
    return _POOL


def warm_parse_pool() -> None:
    """Start the parse workers now: a service does this before it claims feeds, so that no feed's lease runs
    out while the first poll waits for worker processes to start and import the parser."""
    pool = _parse_pool()
    if pool is None:
        return
    now = utcnow()
    # As many jobs at once as there are workers: the pool starts one process for each.
    jobs = [
        pool.submit(parse_job, b"", "http://warm-up.invalid/", {}, now, None, 1) for _ in range(_workers())
    ]
    for job in jobs:
        job.result(timeout=120)


def _reset_parse_pool() -> None:
    global _POOL
    pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def _ttl(result: Any, parsed_ttl_minutes: int | None) -> float | None:
    values = []
    fresh = getattr(result, "fresh_for", None)
    if fresh:
        values.append(float(fresh))
    if parsed_ttl_minutes:
        values.append(parsed_ttl_minutes * 60.0)
    return max(values) if values else None


class Poller:
    """Owns what one cycle needs: the engine, the settings, the classifier, the write thread."""

    def __init__(self, engine: Engine, config: Config, classifier: ClassifierLike | None = None) -> None:
        self.engine = engine
        self.config = config
        self.classifier = classifier
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-store")
        self._states: list[dict[str, Any]] = []  # touched by the store thread only

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
        from monitor.ingest.fetch import Fetcher, FetchLimits, FetchRequest

        report = PollReport(started=now_fn())
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
        http = self.config.settings.http
        limits = FetchLimits(
            max_concurrency=http.max_concurrency,
            per_host=http.per_host,
            connect_timeout=http.connect_timeout,
            total_timeout=http.total_timeout,
            max_bytes=http.max_bytes,
            max_decompressed=http.max_decompressed_bytes,
            max_redirects=http.max_redirects,
            user_agent=http.user_agent,
            allow_private=allow_private(self.config),
        )
        by_url: dict[str, list[Feed]] = {}
        requests = []
        forced: set[str] = set()
        for f in snapshot.values():
            full = policy.wants_full_fetch(f.last_full_fetch_at, report.started, self.polling)
            if full:
                forced.add(f.id)
            if f.url in by_url:  # two feed ids with one address: fetch once, store for both
                by_url[f.url].append(f)
                continue
            by_url[f.url] = [f]
            requests.append(
                FetchRequest(
                    url=f.url,
                    etag=None if full else f.etag,
                    last_modified=None if full else f.last_modified,
                    force_full=full,
                )
            )
        loop = asyncio.get_running_loop()
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
            await loop.run_in_executor(self._writer, self._flush_states)
        report.results.sort(key=lambda r: r.feed)
        report.finished = now_fn()
        return report

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
        self, feeds: list[Feed], fetched: Any, forced: set[str], now_fn: Callable[[], datetime]
    ) -> list[FeedResult]:
        """Parse (in a worker process when the machine has more than one core) then store, so parsing one feed overlaps
        with storing another and the store thread only does database work."""
        loop = asyncio.get_running_loop()
        now = now_fn()
        body_hash = hashlib.sha256(fetched.body or b"").hexdigest() if fetched.outcome == "ok" else None
        parsed: ParseOutcome | None = None
        if body_hash is not None and any(f.body_hash != body_hash for f in feeds):
            args = (
                fetched.body or b"",
                fetched.final_url or fetched.url,
                dict(fetched.headers),
                now,
                feeds[0].language,
                self.polling.max_entries_per_feed,
            )
            # Even a small document goes to a worker: for ten entries, shipping it there and back costs this
            # process about 0.2 ms of CPU where parsing costs 7 ms, and this process's Python runs on one core.
            pool = _parse_pool()
            if pool is not None:
                try:
                    parsed = await loop.run_in_executor(pool, parse_job, *args)
                except (
                    BrokenProcessPool
                ):  # a worker died (OOM killer...): parse here and start afresh next time
                    _reset_parse_pool()
            if parsed is None:
                parsed = await loop.run_in_executor(self._writer, parse_job, *args)
        return await loop.run_in_executor(
            self._writer, self._process, feeds, fetched, forced, now, body_hash, parsed
        )

    def _process(
        self,
        feeds: list[Feed],
        fetched: Any,
        forced: set[str],
        now: datetime,
        body_hash: str | None,
        parsed: ParseOutcome | None,
    ) -> list[FeedResult]:
        return [self._process_one(f, fetched, f.id in forced, now, body_hash, parsed) for f in feeds]

    def _process_one(
        self,
        feed: Feed,
        fetched: Any,
        forced: bool,
        now: datetime,
        body_hash: str | None,
        parse_outcome: ParseOutcome | None,
    ) -> FeedResult:
        """Store one feed's result; every failure becomes a recorded error, never an exception."""
        started = time.perf_counter()
        res = FeedResult(feed=feed.id, url=feed.url, outcome=fetched.outcome, status=fetched.status)
        parsed = None
        outcome = policy.Outcome(kind=fetched.outcome, ttl=_ttl(fetched, None))
        if fetched.outcome == "error":
            res.error_kind, res.error = fetched.error_kind, fetched.error
            outcome = policy.Outcome(
                kind="error",
                error_kind=fetched.error_kind,
                error=fetched.error,
                retry_after=fetched.retry_after,
            )
        elif fetched.outcome == "ok":
            if body_hash == feed.body_hash or parse_outcome is None:
                res.outcome = "unchanged"  # a 200 with the same bytes: nothing to parse
                outcome = policy.Outcome(kind="unchanged", ttl=_ttl(fetched, None))
            elif isinstance(parse_outcome, ParseFailure):
                res.outcome, res.error_kind = "error", parse_outcome.kind
                res.error = f"{feed.url}: {parse_outcome.message}"
                outcome = policy.Outcome(kind="error", error_kind=parse_outcome.kind, error=res.error)
            else:
                parsed = parse_outcome
                res.warning = parsed.warning
                res.entries = len(parsed.entries)
                outcome = policy.Outcome(kind="ok", ttl=_ttl(fetched, parsed.ttl_minutes))
        if parsed is None:
            # Nothing to store but the feed's state: batched with other feeds' into one transaction.
            self._apply_state(feed, fetched, outcome, res, now, forced)
            self._states.append({col_name: getattr(feed, col_name) for col_name in STATE_COLUMNS})
            if len(self._states) >= STATE_BATCH:
                self._flush_states()
            res.fetch_seconds = round(fetched.elapsed, 4)
            res.elapsed = round(fetched.elapsed + (time.perf_counter() - started), 4)
            return res
        try:
            with write_scope(self.engine) as s:
                row = s.get(Feed, feed.id, with_for_update=s.get_bind().dialect.name == "postgresql")
                if row is None:
                    raise LookupError(f"feed {feed.id} vanished during the poll")
                if parsed is not None:
                    stats = store_entries(
                        s,
                        row.id,
                        parsed.entries,
                        now=now,
                        classifier=self.classifier,
                        max_hash_updates=self.polling.max_hash_updates,
                        cross_feed_window=self.polling.cross_feed_window,
                    )
                    res.new, res.updated, res.linked = stats.new, stats.updated, stats.linked
                    res.new_item_ids = stats.new_item_ids
                    self._group(s, stats.new_item_ids + stats.changed_item_ids, now)
                    if stats.new:
                        row.items_total += stats.new + stats.linked
                        row.last_new_item_at = now
                    elif stats.linked:
                        row.items_total += stats.linked
                    dates = [e.published for e in parsed.entries if not e.published_estimated]
                    row.publish_interval = policy.estimate_publish_interval(dates) or row.publish_interval
                    row.site_url = parsed.link or row.site_url
                    row.body_hash = body_hash
                self._apply_state(row, fetched, outcome, res, now, forced)
                s.add(row)
        except Exception as exc:
            # The transaction rolled back: nothing half-written. Record the failure on the feed in a new one.
            res.outcome, res.error_kind, res.new, res.updated, res.linked = "error", "store", 0, 0, 0
            res.error = f"{feed.url}: could not store: {type(exc).__name__}: {exc}"
            res.new_item_ids = []
            with write_scope(self.engine) as s:
                row = s.get(Feed, feed.id)
                if row is not None:
                    self._apply_state(
                        row,
                        fetched,
                        policy.Outcome(kind="error", error_kind="store", error=res.error),
                        res,
                        now,
                        False,
                    )
                    s.add(row)
        res.fetch_seconds = round(fetched.elapsed, 4)
        res.elapsed = round(fetched.elapsed + (time.perf_counter() - started), 4)
        return res

    def _flush_states(self) -> None:
        """Write the batched state of feeds that brought no entries (304s, errors): one statement for all."""
        if not self._states:
            return
        rows, self._states = self._states, []
        with write_scope(self.engine) as s:
            s.execute(update(Feed), rows)

    def _group(self, session: Session, item_ids: list[int], now: datetime) -> None:
        """Items and their incidents commit together, so a crash never leaves stored items ungrouped."""
        if not item_ids:
            return
        from monitor.incidents import CountryLevel, group_items

        categories = getattr(self.classifier, "categories", None) or {}
        severity = {cid: info.severity for cid, info in categories.items()} or None
        gazetteer = getattr(self.classifier, "gazetteer", None)
        words = gazetteer.country_level_words() if gazetteer is not None else None
        window_hours = self.config.settings.grouping.window / 3600
        group_items(
            session,
            item_ids,
            now=now,
            severity=severity,
            window_hours=window_hours,
            country_level=CountryLevel.of(words) if words is not None else None,
        )

    def _apply_state(
        self, row: Feed, fetched: Any, outcome: policy.Outcome, res: FeedResult, now: datetime, forced: bool
    ) -> None:
        change = policy.decide(
            feed_id=row.id,
            outcome=outcome,
            now=now,
            error_count=row.error_count,
            override=row.interval,
            publish_interval=row.publish_interval,
            p=self.polling,
            scheduled=row.next_check_at,
        )
        row.last_fetch_at = now
        row.last_status = fetched.status
        row.last_outcome = res.outcome
        row.next_check_at = change.next_check_at
        row.error_count = change.error_count
        row.error_kind = change.error_kind
        row.lease_owner = row.lease_until = None
        if outcome.ttl is not None:
            row.ttl = outcome.ttl
        if change.error is not None:
            row.last_error, row.last_error_at = change.error, now
        if change.muted:
            row.muted, row.mute_reason = True, change.mute_reason
        if change.success:
            row.last_success_at = now
            if fetched.outcome == "ok":
                row.etag, row.last_modified = fetched.etag, fetched.last_modified
                if forced:
                    row.last_full_fetch_at = now
        if getattr(fetched, "permanent_url", None) and fetched.outcome != "error":
            row.url = fetched.permanent_url  # 301/308: the publisher moved the feed for good
        res.next_check_at = change.next_check_at


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
