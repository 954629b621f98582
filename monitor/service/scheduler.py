"""`monitor run`: the scheduler that decides when each stage runs, and nothing else.

Jobs (APScheduler 3, AsyncIOScheduler, in-memory job store):

    poll         every --tick seconds: claim due feeds (oldest first) in batches and poll them, until none is
                 due; then group new items into incidents and send "immediate" digests
    digest:NAME  each scheduled digest on its own CronTrigger in its time zone
    retention    prune unmatched items past settings.retention.unmatched_days
    digest-retry resend digests whose delivery failed
    feeds-health refresh the feeds-by-health gauge; every --report-every, log failing and silent feeds
    site         rebuild the static site when new items arrived
    config-watch reload the configuration when a file under the config folder changed (SIGHUP does too)

The work itself is the plain functions the CLI calls (Poller, deliver_digest, build_site...). Several workers
may share one PostgreSQL: feeds are leased per batch, and once-only work runs under advisory locks
(monitor.service.locks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, func, text, update
from sqlmodel import col, select

from monitor import __version__
from monitor.config.load import Config, collect, load_config
from monitor.errors import ConfigError
from monitor.ingest import policy
from monitor.ingest.poll import FeedResult, Poller, PollReport, warm_parse_pool
from monitor.service import stages
from monitor.service.http import HttpServer, Response, json_response
from monitor.service.locks import exclusive
from monitor.service.logs import feed_ctx
from monitor.service.metrics import ServiceMetrics
from monitor.service.retention import prune_unmatched
from monitor.service.runtime import ConfigWatcher
from monitor.store.engine import session_scope
from monitor.store.feeds import due, sync_feeds
from monitor.store.models import Feed, Item
from monitor.store.types import utcnow
from monitor.web.app import workspace_source

log = logging.getLogger("monitor.service")


@dataclass
class ServiceOptions:
    host: str = "127.0.0.1"
    port: int | None = 8080  # None: no HTTP server; 0: any free port
    tick: float = 30.0  # seconds between poll ticks
    batch: int = 200  # feeds claimed at once; a tick claims batch after batch until none is due
    lanes: int = 4  # batches polled side by side (at most settings.http.per_host, which they share)
    lease: float = 900.0  # seconds a claimed feed stays reserved to this worker
    watch_interval: float = 5.0  # seconds between config-folder checks; 0 disables the watcher
    shutdown_timeout: float = 45.0
    report_every: float = 3600.0  # the failing/silent feeds report in the log
    health_every: float = 60.0
    retention_every: float = 6 * 3600.0
    retry_every: float = 300.0
    digest_grace: float = 6 * 3600.0  # a digest slot missed by less than this (event loop stalled) still runs
    site_dir: Path | None = None
    site_every: float = 60.0
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


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


def cron_trigger(schedule: str, timezone: str = "UTC") -> CronTrigger:
    """A 5-field cron schedule in an IANA time zone (digests.yaml has validated both)."""
    return CronTrigger.from_crontab(schedule, timezone=ZoneInfo(timezone))


def previous_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time at or before `now` (the slot a run at `now` serves), or None within a year."""
    lookback = timedelta(minutes=2)
    while lookback <= timedelta(days=400):
        t = trigger.get_next_fire_time(None, now - lookback)
        if t is not None and t <= now:
            # Widening the window geometrically keeps this walk short for both minutely and yearly schedules.
            while True:
                nxt = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
                if nxt is None or nxt > now:
                    return t
                t = nxt
        lookback *= 2
    return None


class Service:
    def __init__(self, engine: Engine, config: Config, options: ServiceOptions | None = None) -> None:
        self.engine = engine
        self.config = config
        self.opts = options or ServiceOptions()
        self.metrics = ServiceMetrics()
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.http: HttpServer | None = None
        self.started = utcnow()
        self.last_poll: LastPoll | None = None
        self._lanes_active = 0  # poll lanes at work, over all running ticks
        self.last_reload_error: str | None = None
        self.stopping = False
        self.abandoned = False  # the shutdown deadline passed with work still running
        self._stop = asyncio.Event()
        self._inflight: dict[asyncio.Task[Any], str] = {}
        self._reload_lock = asyncio.Lock()
        self._site_dirty = True
        self._alerts_owed = False
        self._last_report = 0.0
        self._watcher = ConfigWatcher(config.dir) if self.opts.watch_interval > 0 else None

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`); 0 after a clean stop, 1 if the deadline cut work."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload, "SIGHUP")
        try:
            await self.start()
            await self._stop.wait()
            return await self.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def start(self) -> None:
        await asyncio.to_thread(self._sync_feeds)
        await asyncio.to_thread(warm_parse_pool)
        if self.opts.port is not None:
            self.http = HttpServer(
                health=self.health,
                metrics=self.metrics.render,
                site_dir=lambda: self.opts.site_dir,
                host=self.opts.host,
                port=self.opts.port,
                workspace=workspace_source(self),
            )
            await self.http.start()
        self._add_jobs()
        self.scheduler.start()
        self.metrics.scheduler_up.set(1)
        cfg = self.config
        log.info(
            "service started: worker %s, %d feeds, %d digests, config %s%s",
            self.opts.worker,
            len(cfg.feeds),
            len(cfg.digests),
            cfg.dir,
            f", http://{self.opts.host}:{self.http.port}/healthz" if self.http else "",
            extra={"worker": self.opts.worker, "event": "started"},
        )
        self._catch_up_digests()

    def request_stop(self, reason: str = "request") -> None:
        if self.stopping:
            if reason == "SIGINT":  # a second Ctrl-C: the user does not want to wait
                log.error("second %s: exiting now", reason)
                logging.shutdown()
                os._exit(130)
            return
        self.stopping = True
        busy = sorted(set(self._inflight.values()))
        log.info(
            "stopping (%s): %s",
            reason,
            f"finishing {', '.join(busy)} (up to {self.opts.shutdown_timeout:g}s)"
            if busy
            else "nothing running",
            extra={"event": "stopping"},
        )
        self._stop.set()

    async def shutdown(self) -> int:
        self.stopping = True
        if self.scheduler.running:
            self.scheduler.pause()  # no new job starts; running ones finish
        code = 0
        tasks = [t for t in self._inflight if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.opts.shutdown_timeout)
            if pending:
                code = 1
                self.abandoned = True
                names = ", ".join(sorted(self._inflight.get(t, "?") for t in pending))
                log.error(
                    "shutdown deadline (%gs) passed: interrupting %s; every feed stored so far is kept, "
                    "unfinished ones are released for the next run",
                    self.opts.shutdown_timeout,
                    names,
                    extra={"event": "deadline"},
                )
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=10)
        await asyncio.to_thread(self._release_leases)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.metrics.scheduler_up.set(0)
        if self.http is not None:
            await self.http.stop()
        log.info("stopped%s", " cleanly" if code == 0 else " (work interrupted)", extra={"event": "stopped"})
        return code

    def _release_leases(self) -> None:
        try:
            with session_scope(self.engine) as s:
                s.execute(
                    update(Feed)
                    .where(col(Feed.lease_owner) == self.opts.worker)
                    .values(lease_owner=None, lease_until=None)
                )
        except Exception as exc:  # the leases expire by themselves; this only saves the wait
            log.warning("could not release feed leases: %s", exc)

    # --- jobs ---------------------------------------------------------------------------------------------

    def _job(self, name: str, fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Track a job while it runs (graceful shutdown waits for it) and log, never propagate, its failure."""

        async def run(*args: Any) -> None:
            if self.stopping:
                return
            task = asyncio.current_task()
            assert task is not None
            self._inflight[task] = name
            try:
                await fn(*args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.job_errors.inc(job=name.split(":", 1)[0])
                log.exception("job %s failed: %s", name, exc, extra={"event": "job_failed"})
            finally:
                self._inflight.pop(task, None)

        return run

    def _add_jobs(self) -> None:
        o, add, now = self.opts, self.scheduler.add_job, utcnow()

        def every(
            job_id: str,
            fn: Callable[..., Awaitable[None]],
            seconds: float,
            first: float = 0,
            instances: int = 1,
        ) -> None:
            add(
                self._job(job_id, fn),
                IntervalTrigger(seconds=seconds),
                id=job_id,
                name=job_id,
                next_run_time=now + timedelta(seconds=first),
                max_instances=instances,
                coalesce=True,  # a tick that could not run on time runs once, not once per missed slot
                misfire_grace_time=None,
            )

        # One more instance than lanes: a tick that finds every lane busy returns at once (see poll_tick).
        every("poll", self.poll_tick, o.tick, instances=o.lanes + 1)
        every("feeds-health", self.health_job, o.health_every, first=min(5.0, o.health_every))
        every("retention", self.retention_job, o.retention_every, first=60)
        every("digest-retry", self.retry_job, o.retry_every, first=30)
        if o.site_dir is not None:
            every("site", self.site_job, o.site_every, first=min(10.0, o.site_every))
        if self._watcher is not None:
            every("config-watch", self.watch_job, o.watch_interval, first=o.watch_interval)
        self._schedule_digests()

    def _schedule_digests(self) -> None:
        wanted = {}
        for plan in self.config.digests:
            if not plan.immediate:
                wanted[f"digest:{plan.name}"] = plan
        for job in self.scheduler.get_jobs():
            if job.id.startswith("digest:") and job.id not in wanted:
                job.remove()
        for job_id, plan in wanted.items():
            self.scheduler.add_job(
                self._job(job_id, self.digest_job),
                cron_trigger(plan.schedule, plan.timezone),
                args=[plan.name],
                id=job_id,
                name=job_id,
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(self.opts.digest_grace),
            )

    # poll ---------------------------------------------------------------------------------------------------

    async def poll_tick(self) -> None:
        """Claim and poll due feeds batch by batch until none is due (or the service is stopping)."""
        # Ticks may overlap: a tick whose last lane waits for a feed that hangs until the fetch timeout must not
        # hold back the feeds falling due meanwhile. A tick starts only the lanes that are free (reserved here,
        # before any await), so the lanes of all ticks together stay within the concurrency limits.
        free = self._lanes(self.config) - self._lanes_active
        if free <= 0:
            return
        self._lanes_active += free
        try:
            await self._poll_lanes(free)
        finally:
            self._lanes_active -= free

    async def _poll_lanes(self, lanes: int) -> None:
        started, t0 = utcnow(), time.perf_counter()
        summary = LastPoll(started=started, finished=started)
        new_ids: list[int] = []
        # A tick polls what was due when it began. Without this bound a tick longer than the feeds' interval
        # would chase its own tail forever, and the work done after a tick (alerts, metrics) would never come.
        due = await asyncio.to_thread(self._count_due, started)
        done = 0  # lanes that have finished: free for the next tick

        async def lane(index: int) -> None:
            # Each lane claims and polls batch after batch. A batch ends with its slowest feed (one that hangs
            # until the fetch timeout), so with several lanes one slow feed holds up one lane, not the tick; and
            # the next tick does not wait for that lane either (see poll_tick).
            nonlocal done
            try:
                while not self.stopping and summary.feeds < due:
                    cfg = self.config  # a reload between batches takes effect at the next batch
                    poller = Poller(self.engine, self._lane_config(cfg), cfg.rules)
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
                    self._add_report(summary, report)
                    batch_new = [i for r in report.results for i in r.new_item_ids]
                    if batch_new:
                        new_ids.extend(batch_new)
                        await asyncio.to_thread(self._after_new_items, batch_new)
            finally:
                done += 1
                self._lanes_active -= 1

        try:
            await asyncio.gather(*(lane(i) for i in range(lanes)))
        finally:
            self._lanes_active += done  # poll_tick gives back all of this tick's lanes
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
        if (new_ids or self._alerts_owed) and not self.stopping:
            await asyncio.to_thread(self._send_immediate)

    def _lanes(self, cfg: Config) -> int:
        http = cfg.settings.http
        return max(1, min(self.opts.lanes, http.per_host, http.max_concurrency))

    def _lane_config(self, cfg: Config) -> Config:
        """The config one lane polls with: the concurrency limits split between the lanes, so all lanes
        together stay within max_concurrency and per_host (politeness to each publisher)."""
        n = self._lanes(cfg)
        if n == 1:
            return cfg
        http = cfg.settings.http
        split = http.model_copy(
            update={
                "max_concurrency": max(1, http.max_concurrency // n),
                "per_host": max(1, http.per_host // n),
            }
        )
        return dataclasses.replace(cfg, settings=cfg.settings.model_copy(update={"http": split}))

    def _count_due(self, now: datetime) -> int:
        with session_scope(self.engine) as s:
            q = select(func.count()).select_from(Feed).where(*due(now))
            return int(s.exec(q).one())

    def _add_report(self, summary: LastPoll, report: PollReport) -> None:
        counts = report.counts()
        summary.feeds += counts["feeds"]
        summary.errors += counts["error"]
        summary.ok += counts["feeds"] - counts["error"]
        summary.new_items += counts["new_items"]

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

    def _after_new_items(self, item_ids: list[int]) -> None:
        """Count new items by category. (The poller already grouped them into incidents, in each feed's
        transaction.)"""
        with session_scope(self.engine) as s:
            rows = s.exec(select(Item.categories).where(col(Item.id).in_(item_ids))).all()
        for cats in rows:
            if cats:
                self._site_dirty = True
            for c in cats or []:
                self.metrics.matches.inc(category=str(c))

    # digests --------------------------------------------------------------------------------------------------

    async def digest_job(self, name: str) -> None:
        plan = next((p for p in self.config.digests if p.name == name), None)
        if plan is None:
            return
        slot = previous_fire(cron_trigger(plan.schedule, plan.timezone), utcnow())
        await asyncio.to_thread(self._deliver_once, name, slot, "schedule")

    def _deliver_once(self, name: str, slot: datetime | None, why: str) -> str:
        """Deliver digest `name` for `slot` unless some worker already did. The advisory lock serialises the
        workers; the digest's last run time, read under the lock, tells whether this slot is served."""
        ctx = {"digest": name, "worker": self.opts.worker}
        with exclusive(self.engine, f"digest:{name}", timeout=600) as got:
            if not got:
                log.warning("digest %s: another worker has held it for 10 minutes; skipping", name, extra=ctx)
                self.metrics.digests.inc(digest=name, outcome="skipped")
                return "skipped"
            last = stages.last_run_at(self.engine, name)
            if slot is not None and last is not None and last >= slot:
                log.info(
                    "digest %s: slot %s already served (by another worker)", name, slot.isoformat(), extra=ctx
                )
                self.metrics.digests.inc(digest=name, outcome="skipped")
                return "skipped"
            result = stages.deliver_digest(self.engine, self.config, name)
        outcome = {"pending": "failed", "unavailable": "skipped"}.get(result.outcome, result.outcome)
        self.metrics.digests.inc(digest=name, outcome=outcome)
        level = logging.WARNING if outcome == "failed" else logging.INFO
        log.log(
            level,
            "digest %s (%s): %s%s",
            name,
            why,
            result.outcome,
            f" ({result.detail})" if result.detail else "",
            extra={**ctx, "outcome": result.outcome},
        )
        return result.outcome

    def _catch_up_digests(self) -> None:
        """A slot missed while the service was down is served once, now (not once per missed slot)."""
        now = utcnow()
        for plan in self.config.digests:
            if plan.immediate:
                continue
            slot = previous_fire(cron_trigger(plan.schedule, plan.timezone), now)
            try:
                last = stages.last_run_at(self.engine, plan.name)
            except Exception as exc:
                log.warning(
                    "digest %s: cannot read its state: %s", plan.name, exc, extra={"digest": plan.name}
                )
                continue
            # Never run at all: nothing was missed, the first slot comes in its time.
            if slot is None or last is None or last >= slot:
                continue
            log.info(
                "digest %s: slot %s was missed while the service was down; delivering it now",
                plan.name,
                slot.isoformat(),
                extra={"digest": plan.name},
            )

            async def catch_up(name: str = plan.name, s: datetime = slot) -> None:
                await asyncio.to_thread(self._deliver_once, name, s, "catch-up")

            self.scheduler.add_job(
                self._job(f"digest:{plan.name}", catch_up),
                id=f"catch-up:{plan.name}",
                replace_existing=True,
                misfire_grace_time=None,
            )

    def _send_immediate(self) -> None:
        plans = [p for p in self.config.digests if p.immediate]
        self._alerts_owed = False
        if not plans:
            return
        for plan in plans:
            ctx = {"digest": plan.name, "worker": self.opts.worker}
            with exclusive(self.engine, f"digest:{plan.name}", timeout=0) as got:
                if not got:
                    self._alerts_owed = True  # a peer is sending; what it did not pick up goes next tick
                    continue
                try:
                    result = stages.deliver_digest(self.engine, self.config, plan.name)
                except Exception as exc:
                    self.metrics.digests.inc(digest=plan.name, outcome="failed")
                    log.exception("alert digest %s failed: %s", plan.name, exc, extra=ctx)
                    continue
            if result.outcome != "empty":
                outcome = {"pending": "failed"}.get(result.outcome, result.outcome)
                self.metrics.digests.inc(digest=plan.name, outcome=outcome)
                log.info("alert digest %s: %s %s", plan.name, result.outcome, result.detail, extra=ctx)

    async def retry_job(self) -> None:
        def run() -> None:
            with exclusive(self.engine, "digest-retry") as got:
                if not got:
                    return  # a peer is retrying right now
                results = stages.retry_pending(self.engine, self.config)
            for r in results:
                name = r.digest
                outcome = {"pending": "failed"}.get(r.outcome, r.outcome)
                self.metrics.digests.inc(digest=name, outcome=outcome)
                log.log(
                    logging.WARNING if outcome == "failed" else logging.INFO,
                    "digest %s (retry): %s (%s)",
                    name,
                    r.outcome,
                    r.detail,
                    extra={"digest": name, "outcome": r.outcome},
                )

        await asyncio.to_thread(run)

    # housekeeping ---------------------------------------------------------------------------------------------

    async def retention_job(self) -> None:
        days = self.config.settings.retention.unmatched_days
        if not days:
            return

        def run() -> None:
            with exclusive(self.engine, "retention") as got:
                if not got:
                    return  # another worker is pruning right now
                report = prune_unmatched(self.engine, days=days)
            self.metrics.pruned.inc(report.pruned)
            if report.pruned:
                log.info(
                    "retention: pruned %d unmatched items fetched before %s",
                    report.pruned,
                    report.cutoff.date().isoformat(),
                    extra={"event": "retention"},
                )

        await asyncio.to_thread(run)

    def feed_health(self) -> list[tuple[Feed, str]]:
        now, p = utcnow(), self.config.settings.polling
        with session_scope(self.engine) as s:
            feeds = list(s.exec(select(Feed).where(col(Feed.removed).is_(False))).all())
        return [
            (
                f,
                policy.feed_health(f, now, p),
            )
            for f in feeds
        ]

    async def health_job(self) -> None:
        rows = await asyncio.to_thread(self.feed_health)
        counts: dict[str, int] = {}
        for _, h in rows:
            counts[h] = counts.get(h, 0) + 1
        self.metrics.feeds.replace(({"health": h}, n) for h, n in counts.items())
        if time.monotonic() - self._last_report < self.opts.report_every and self._last_report:
            return
        self._last_report = time.monotonic()
        bad = [(f, h) for f, h in rows if h in ("failing", "silent", "muted", "rate_limited")]
        summary = ", ".join(f"{n} {h}" for h, n in sorted(counts.items()))
        log.info("feeds report: %s", summary or "no feeds", extra={"event": "feeds_report"})
        for f, h in sorted(bad, key=lambda x: (x[1], x[0].id)):
            if h == "silent":
                since = f.last_new_item_at.date().isoformat() if f.last_new_item_at else "ever"
                why = f"no new item since {since}"
            elif h == "muted":
                why = f.mute_reason or "muted"
            else:
                why = f"{f.error_count} failures in a row, last: {f.last_error or f.error_kind}"
            log.warning("feed %s is %s: %s", f.id, h, why, extra=feed_ctx(f.id, f.url, event="feeds_report"))

    async def site_job(self) -> None:
        out = self.opts.site_dir
        if out is None or (not self._site_dirty and out.is_dir()):
            return
        self._site_dirty = False

        def run() -> None:
            with exclusive(self.engine, "site") as got:
                report = stages.build_site(self.engine, self.config, out) if got else None
            if report is not None:
                log.info("site rebuilt in %s: %s pages", out, report.pages, extra={"event": "site"})

        try:
            await asyncio.to_thread(run)
        except Exception:
            self._site_dirty = True  # try again next time
            raise

    # config reload ---------------------------------------------------------------------------------------------

    async def watch_job(self) -> None:
        if self._watcher is None:
            return
        changed = await asyncio.to_thread(self._watcher.changed)
        if changed:
            await self.reload(f"changed: {', '.join(changed[:5])}" + (" ..." if len(changed) > 5 else ""))

    def _spawn_reload(self, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(reason))
        # Keep a reference until done: the loop holds tasks weakly.
        self._inflight[task] = "reload"
        task.add_done_callback(lambda t: self._inflight.pop(t, None))

    async def reload(self, reason: str) -> bool:
        """Load the config again; a valid one replaces the running one, an invalid one is logged and dropped."""
        async with self._reload_lock:
            log.info("reloading configuration (%s)", reason, extra={"event": "reload"})
            try:
                new = await asyncio.to_thread(load_config, self.config.dir)
            except ConfigError as exc:
                errors = collect(exc)
                self.last_reload_error = "; ".join(e.describe() for e in errors)
                self.metrics.reloads.inc(outcome="rejected")
                for e in errors:
                    log.error(
                        "config rejected, the running configuration stays: %s",
                        e.describe(),
                        extra={"event": "reload_rejected", "file": e.file, "line": e.line},
                    )
                return False
            except Exception as exc:
                self.last_reload_error = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.inc(outcome="rejected")
                log.exception("config rejected, the running configuration stays: %s", exc)
                return False
            if self._watcher is not None:
                self._watcher.changed()  # the files as loaded are the new baseline
            old = self.config
            self.config = new
            await asyncio.to_thread(self._sync_feeds)
            self._schedule_digests()
            self.last_reload_error = None
            self.metrics.reloads.inc(outcome="applied")
            self._site_dirty = True
            old_feeds = {f.id: f for f in old.feeds}
            new_feeds = {f.id: f for f in new.feeds}
            log.info(
                "configuration reloaded: %d feeds (%d added, %d removed, %d changed), %d digests",
                len(new_feeds),
                len(new_feeds.keys() - old_feeds.keys()),
                len(old_feeds.keys() - new_feeds.keys()),
                sum(1 for k in new_feeds.keys() & old_feeds.keys() if new_feeds[k] != old_feeds[k]),
                len(new.digests),
                extra={"event": "reload_applied"},
            )
            if new.settings.database != old.settings.database:
                log.warning("settings.database changed: restart the service to use the new database")
            return True

    def _sync_feeds(self) -> None:
        with exclusive(self.engine, "feeds-sync", timeout=60), session_scope(self.engine) as s:
            report = sync_feeds(s, self.config.feeds)
            urls = {f.id: f.url for f in s.exec(select(Feed)).all()}
        for fid in report.added:
            log.info("feed %s added", fid, extra=feed_ctx(fid, urls.get(fid, "?"), event="feed_added"))
        for fid in report.dropped:
            log.info(
                "feed %s left the config: no longer polled (items kept)",
                fid,
                extra=feed_ctx(fid, urls.get(fid, "?"), event="feed_dropped"),
            )

    # health -------------------------------------------------------------------------------------------------

    def scheduler_state(self) -> str:
        if self.stopping:
            return "stopping"
        return {STATE_RUNNING: "running", STATE_PAUSED: "paused"}.get(self.scheduler.state, "stopped")

    def _db_facts(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        failing = sum(1 for _, h in self.feed_health() if h == "failing")
        return {"feeds_failing": failing}

    async def health(self) -> Response:
        state = self.scheduler_state()
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "worker": self.opts.worker,
            "started": self.started.isoformat(),
            "scheduler": state,
            "database": "ok",
            "last_poll": self.last_poll.to_json() if self.last_poll else None,
            "feeds_failing": None,
            "config": {
                "dir": str(self.config.dir),
                "loaded_at": self.config.loaded_at.isoformat(),
                "last_reload_error": self.last_reload_error,
            },
            "jobs": {
                j.id: j.next_run_time.isoformat() if j.next_run_time else None
                for j in (self.scheduler.get_jobs() if self.scheduler.running else [])
            },
        }
        try:
            body.update(await asyncio.wait_for(asyncio.to_thread(self._db_facts), 10))
        except Exception as exc:
            body["database"] = f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        healthy = state == "running" and body["database"] == "ok"
        body["status"] = "ok" if healthy else "unavailable"
        return json_response(200 if healthy else 503, body)
