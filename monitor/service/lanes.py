"""The poll job's lanes: a tick claims due feeds batch by batch on a few lanes side by side, within the
concurrency limits, and says what it found.

    PollLanes(engine, options, metrics, config=, stopping=).tick() -> new item ids | None (every lane busy)
    lane_config(config, lanes) -> Config     the HTTP limits split between the lanes

A batch ends with its slowest feed (one that hangs until the fetch timeout), so with several lanes one slow feed
holds up one lane, not the tick; and ticks may overlap, each starting only the lanes that are free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func
from sqlmodel import col, select

from monitor.config.load import Config
from monitor.ingest.poll import FeedResult, Poller, PollReport
from monitor.service.logs import feed_ctx
from monitor.service.metrics import ServiceMetrics
from monitor.store.engine import session_scope
from monitor.store.feeds import due
from monitor.store.models import Feed, Item
from monitor.store.types import utcnow

if TYPE_CHECKING:
    from monitor.service.scheduler import ServiceOptions

log = logging.getLogger("monitor.service")


@dataclass
class LastPoll:
    started: datetime
    finished: datetime
    feeds: int = 0
    ok: int = 0
    errors: int = 0
    new_items: int = 0
    batches: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "feeds": self.feeds,
            "ok": self.ok,
            "errors": self.errors,
            "new_items": self.new_items,
            "seconds": round(self.seconds, 3),
        }

    def add(self, report: PollReport) -> None:
        counts = report.counts()
        self.feeds += counts["feeds"]
        self.errors += counts["error"]
        self.ok += counts["feeds"] - counts["error"]
        self.new_items += counts["new_items"]


def lane_count(config: Config, wanted: int) -> int:
    http = config.settings.http
    return max(1, min(wanted, http.per_host, http.max_concurrency))


def lane_config(config: Config, lanes: int) -> Config:
    """The config one lane polls with: the concurrency limits split between the lanes, so all lanes together
    stay within max_concurrency and per_host (politeness to each publisher)."""
    if lanes == 1:
        return config
    http = config.settings.http
    split = http.model_copy(
        update={
            "max_concurrency": max(1, http.max_concurrency // lanes),
            "per_host": max(1, http.per_host // lanes),
        }
    )
    return dataclasses.replace(config, settings=config.settings.model_copy(update={"http": split}))


def count_due(engine: Engine, now: datetime) -> int:
    """How many feeds are due (the same condition claim_feeds uses: monitor.store.feeds.due)."""
    with session_scope(engine) as s:
        q = select(func.count()).select_from(Feed).where(*due(now))
        return int(s.exec(q).one())


class PollLanes:
    def __init__(
        self,
        engine: Engine,
        options: ServiceOptions,
        metrics: ServiceMetrics,
        *,
        config: Callable[[], Config],
        stopping: Callable[[], bool],
    ) -> None:
        self.engine = engine
        self.opts = options
        self.metrics = metrics
        self._config = config  # read per batch: a reload between batches takes effect at the next batch
        self._stopping = stopping
        self.active = 0  # lanes at work, over all running ticks
        self.last_poll: LastPoll | None = None
        self.site_dirty = False  # new matched items since the site job last looked

    async def tick(self) -> list[int] | None:
        """Claim and poll due feeds batch by batch until none is due (or the service is stopping); the new
        item ids, or None when every lane was busy and this tick did nothing."""
        # Lanes are reserved here, before any await, so the lanes of all ticks together stay within the limits.
        free = lane_count(self._config(), self.opts.lanes) - self.active
        if free <= 0:
            return None
        self.active += free
        try:
            return await self._run(free)
        finally:
            self.active -= free

    async def _run(self, lanes: int) -> list[int]:
        started, t0 = utcnow(), time.perf_counter()
        summary = LastPoll(started=started, finished=started)
        new_ids: list[int] = []
        # A tick polls what was due when it began. Without this bound a tick longer than the feeds' interval
        # would chase its own tail forever, and the work done after a tick (alerts, metrics) would never come.
        due = await asyncio.to_thread(count_due, self.engine, started)
        done = 0  # lanes that have finished: free for the next tick

        async def lane() -> None:
            nonlocal done
            try:
                while not self._stopping() and summary.feeds < due:
                    cfg = self._config()
                    poller = Poller(
                        self.engine, lane_config(cfg, lane_count(cfg, self.opts.lanes)), cfg.rules
                    )
                    try:
                        report = await poller.run(
                            worker=self.opts.worker,
                            limit=self.opts.batch,
                            lease_seconds=self.opts.lease,
                            on_result=self._on_feed_result,
                        )
                    finally:
                        await asyncio.to_thread(poller.close)
                    if not report.results:
                        return
                    summary.batches += 1
                    summary.add(report)
                    batch_new = [i for r in report.results for i in r.new_item_ids]
                    if batch_new:
                        new_ids.extend(batch_new)
                        await asyncio.to_thread(self._count_matches, batch_new)
            finally:
                done += 1
                self.active -= 1

        try:
            await asyncio.gather(*(lane() for _ in range(lanes)))
        finally:
            self.active += done  # tick() gives back all of this tick's lanes
        summary.finished, summary.seconds = utcnow(), time.perf_counter() - t0
        self.metrics.cycles.inc()
        self.metrics.last_poll.set(time.time())
        if summary.feeds:
            self.metrics.cycle_seconds.observe(summary.seconds)
            self.last_poll = summary
            log.info(
                "poll: %d feeds (%d ok, %d failed), %d new items in %.1fs",
                summary.feeds,
                summary.ok,
                summary.errors,
                summary.new_items,
                summary.seconds,
                extra={"event": "poll", "worker": self.opts.worker},
            )
        elif self.last_poll is None:
            self.last_poll = summary
        else:
            self.last_poll.finished = summary.finished  # the last tick with work stays visible
        return new_ids

    def _on_feed_result(self, r: FeedResult) -> None:
        m = self.metrics
        m.polls.inc(outcome=r.outcome)
        m.fetch_seconds.observe(r.fetch_seconds)
        if r.new:
            m.items_new.inc(r.new)
        if r.linked:
            m.items_linked.inc(r.linked)
        ctx = feed_ctx(r.feed, r.url, outcome=r.outcome)
        if r.outcome == "error":
            m.poll_errors.inc(kind=r.error_kind or "error")
            log.warning(
                "feed %s failed (%s): %s", r.feed, r.error_kind, r.error, extra={**ctx, "kind": r.error_kind}
            )
        elif r.new or r.updated:
            log.info("feed %s: %d new, %d updated items", r.feed, r.new, r.updated, extra=ctx)
        else:
            log.debug("feed %s: %s", r.feed, r.outcome, extra=ctx)
        if r.warning:
            log.info("feed %s: %s", r.feed, r.warning, extra=ctx)

    def _count_matches(self, item_ids: list[int]) -> None:
        """Count new items by category. (The poller already grouped them into incidents, in each feed's
        transaction.)"""
        with session_scope(self.engine) as s:
            rows = s.exec(select(Item.categories).where(col(Item.id).in_(item_ids))).all()
        for cats in rows:
            if cats:
                self.site_dirty = True
            for c in cats or []:
                self.metrics.matches.inc(category=str(c))
