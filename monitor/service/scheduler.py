"""`monitor run`: the scheduler that decides when each stage runs, and nothing else.

Jobs (APScheduler 3, AsyncIOScheduler, in-memory job store):

    poll         every --tick seconds: claim due feeds (oldest first) in batches and poll them, until none is
                 due; then group new items into incidents and send "immediate" digests
    digest:NAME  each scheduled digest on its own CronTrigger in its time zone
    retention    prune unmatched items past settings.retention.unmatched_days; work out again what the site shows
                 of reports whose record went stale (monitor.incidents.display)
    digest-retry resend digests whose delivery failed
    feeds-health refresh the feeds-by-health gauge; every --report-every, log failing and silent feeds
    site         rebuild the static site when new items arrived
    config-watch reload the configuration when a file under the config folder changed (SIGHUP does too)

This module is the glue: lifecycle, the job table, reload and /healthz. The poll job's lanes are in
monitor.service.lanes, the other jobs' work in monitor.service.jobs (plain functions over the stages the CLI
calls too), the signals in monitor.service.signals. Several workers may share one PostgreSQL: feeds are leased
per batch, and once-only work runs under advisory locks (monitor.service.worker_locks).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, text, update
from sqlmodel import col, select

from monitor import __version__
from monitor.config.load import Config, collect, load_config
from monitor.errors import ConfigError
from monitor.ingest.workers import warm_workers
from monitor.service import jobs, signals
from monitor.service.config_watch import ConfigWatcher
from monitor.service.http import HttpServer, Response, json_response
from monitor.service.jobs import Worker, cron_trigger, previous_fire
from monitor.service.lanes import LastPoll, PollLanes
from monitor.service.logs import feed_ctx
from monitor.service.metrics import ServiceMetrics
from monitor.service.worker_locks import exclusive
from monitor.store.engine import session_scope
from monitor.store.feeds import sync_feeds
from monitor.store.models import Feed
from monitor.store.types import utcnow
from monitor.web.app import workspace_source

__all__ = ["LastPoll", "Service", "ServiceOptions", "cron_trigger", "previous_fire"]

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


class Service:
    def __init__(self, engine: Engine, config: Config, options: ServiceOptions | None = None) -> None:
        self.engine = engine
        self.config = config
        self.opts = options or ServiceOptions()
        self.metrics = ServiceMetrics()
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.http: HttpServer | None = None
        self.started = utcnow()
        self.lanes = PollLanes(
            engine, self.opts, self.metrics, config=lambda: self.config, stopping=lambda: self.stopping
        )
        self.worker = Worker(engine, self.metrics, self.opts.worker)
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
        with signals.handled(loop, stop=self.request_stop, reload=self._spawn_reload):
            await self.start()
            await self._stop.wait()
            return await self.shutdown()

    async def start(self) -> None:
        await asyncio.to_thread(self._sync_feeds)
        await asyncio.to_thread(warm_workers)
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
            signals.exit_now_on_second_interrupt(reason)
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

    @property
    def last_poll(self) -> LastPoll | None:
        return self.lanes.last_poll

    async def poll_tick(self) -> None:
        """Claim and poll due feeds batch by batch until none is due; then send the "immediate" digests."""
        new_ids = await self.lanes.tick()
        if new_ids is None:
            return  # every lane busy: the running ticks carry on
        if self.lanes.site_dirty:
            self._site_dirty, self.lanes.site_dirty = True, False
        if (new_ids or self._alerts_owed) and not self.stopping:
            await asyncio.to_thread(self._send_immediate)

    # digests --------------------------------------------------------------------------------------------------

    async def digest_job(self, name: str) -> None:
        plan = next((p for p in self.config.digests if p.name == name), None)
        if plan is None:
            return
        slot = previous_fire(cron_trigger(plan.schedule, plan.timezone), utcnow())
        await asyncio.to_thread(self._deliver_once, name, slot, "schedule")

    def _deliver_once(self, name: str, slot: datetime | None, why: str) -> str:
        return jobs.deliver_once(self.worker, self.config, name, slot, why)

    def _catch_up_digests(self) -> None:
        """A slot missed while the service was down is served once, now (not once per missed slot)."""
        for name, slot in jobs.missed_slots(self.engine, self.config, utcnow()):
            log.info(
                "digest %s: slot %s was missed while the service was down; delivering it now",
                name,
                slot.isoformat(),
                extra={"digest": name},
            )

            async def catch_up(name: str = name, s: datetime = slot) -> None:
                await asyncio.to_thread(self._deliver_once, name, s, "catch-up")

            self.scheduler.add_job(
                self._job(f"digest:{name}", catch_up),
                id=f"catch-up:{name}",
                replace_existing=True,
                misfire_grace_time=None,
            )

    def _send_immediate(self) -> None:
        self._alerts_owed = False
        self._alerts_owed = jobs.send_immediate(self.worker, self.config)

    async def retry_job(self) -> None:
        await asyncio.to_thread(jobs.retry_digests, self.worker, self.config)

    # housekeeping ---------------------------------------------------------------------------------------------

    async def retention_job(self) -> None:
        days = self.config.settings.retention.unmatched_days
        if days:
            await asyncio.to_thread(jobs.prune, self.worker, days)
        await asyncio.to_thread(jobs.refresh_site_records, self.worker)

    def feed_health(self) -> list[tuple[Feed, str]]:
        return jobs.feed_health(self.engine, self.config.settings.polling)

    async def health_job(self) -> None:
        rows = await asyncio.to_thread(self.feed_health)
        counts = jobs.count_health(self.metrics, rows)
        if time.monotonic() - self._last_report < self.opts.report_every and self._last_report:
            return
        self._last_report = time.monotonic()
        jobs.log_feeds_report(rows, counts)

    async def site_job(self) -> None:
        out = self.opts.site_dir
        if out is None or (not self._site_dirty and out.is_dir()):
            return
        self._site_dirty = False

        try:
            await asyncio.to_thread(jobs.rebuild_site, self.engine, self.config, out)
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
