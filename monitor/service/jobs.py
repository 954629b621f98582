"""The work of the scheduler's jobs other than polling, as ordinary functions the scheduler calls and tests can
call directly: digests (each slot served once across workers), retention, the feeds report, the site.

Several workers may share one PostgreSQL: once-only work runs under an advisory lock named after it
(monitor.service.worker_locks.exclusive).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine
from sqlmodel import col, select

from monitor.config.load import Config
from monitor.config.models import PollingSettings
from monitor.incidents.display import refresh_displays
from monitor.ingest import policy
from monitor.service import stages
from monitor.service.logs import feed_ctx
from monitor.service.metrics import ServiceMetrics
from monitor.service.retention import prune_unmatched
from monitor.service.worker_locks import exclusive
from monitor.store.engine import session_scope
from monitor.store.models import Feed
from monitor.store.types import utcnow

log = logging.getLogger("monitor.service")

PROBLEM_HEALTH = ("failing", "silent", "muted", "rate_limited")


# --- digests ------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Worker:
    """What every job needs: the database, the metrics it counts into, and this worker's name for the logs."""

    engine: Engine
    metrics: ServiceMetrics
    name: str


def deliver_once(w: Worker, config: Config, name: str, slot: datetime | None, why: str) -> str:
    """Deliver digest `name` for `slot` unless some worker already did. The advisory lock serialises the
    workers; the digest's last run time, read under the lock, tells whether this slot is served."""
    ctx = {"digest": name, "worker": w.name}
    with exclusive(w.engine, f"digest:{name}", timeout=600) as got:
        if not got:
            log.warning("digest %s: another worker has held it for 10 minutes; skipping", name, extra=ctx)
            w.metrics.digests.inc(digest=name, outcome="skipped")
            return "skipped"
        last = stages.last_run_at(w.engine, name)
        if slot is not None and last is not None and last >= slot:
            log.info(
                "digest %s: slot %s already served (by another worker)", name, slot.isoformat(), extra=ctx
            )
            w.metrics.digests.inc(digest=name, outcome="skipped")
            return "skipped"
        result = stages.deliver_digest(w.engine, config, name)
    outcome = {"pending": "failed"}.get(result.outcome, result.outcome)
    w.metrics.digests.inc(digest=name, outcome=outcome)
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


def missed_slots(engine: Engine, config: Config, now: datetime) -> list[tuple[str, datetime]]:
    """Scheduled digests whose latest slot passed while the service was down (served once, not once per slot).
    A digest that never ran missed nothing: its first slot comes in its time."""
    out = []
    for d in config.digests:
        if d.immediate:
            continue
        slot = previous_fire(cron_trigger(d.schedule, d.timezone), now)
        try:
            last = stages.last_run_at(engine, d.name)
        except Exception as exc:
            log.warning("digest %s: cannot read its state: %s", d.name, exc, extra={"digest": d.name})
            continue
        if slot is not None and last is not None and last < slot:
            out.append((d.name, slot))
    return out


def send_immediate(w: Worker, config: Config) -> bool:
    """Deliver the "immediate" digests (alerts) now; True when one was left for next time because a peer held
    its lock (what the peer did not pick up goes with the next tick)."""
    owed = False
    for d in config.digests:
        if not d.immediate:
            continue
        ctx = {"digest": d.name, "worker": w.name}
        with exclusive(w.engine, f"digest:{d.name}", timeout=0) as got:
            if not got:
                owed = True
                continue
            try:
                result = stages.deliver_digest(w.engine, config, d.name)
            except Exception as exc:
                w.metrics.digests.inc(digest=d.name, outcome="failed")
                log.exception("alert digest %s failed: %s", d.name, exc, extra=ctx)
                continue
        if result.outcome != "empty":
            outcome = {"pending": "failed"}.get(result.outcome, result.outcome)
            w.metrics.digests.inc(digest=d.name, outcome=outcome)
            log.info("alert digest %s: %s %s", d.name, result.outcome, result.detail, extra=ctx)
    return owed


def retry_digests(w: Worker, config: Config) -> None:
    with exclusive(w.engine, "digest-retry") as got:
        if not got:
            return  # a peer is retrying right now
        results = stages.retry_pending(w.engine, config)
    for r in results:
        outcome = {"pending": "failed"}.get(r.outcome, r.outcome)
        w.metrics.digests.inc(digest=r.digest, outcome=outcome)
        log.log(
            logging.WARNING if outcome == "failed" else logging.INFO,
            "digest %s (retry): %s (%s)",
            r.digest,
            r.outcome,
            r.detail,
            extra={"digest": r.digest, "outcome": r.outcome},
        )


# --- housekeeping -------------------------------------------------------------------------------------------


def prune(w: Worker, days: int) -> None:
    with exclusive(w.engine, "retention") as got:
        if not got:
            return  # another worker is pruning right now
        report = prune_unmatched(w.engine, days=days)
    w.metrics.pruned.inc(report.pruned)
    if report.pruned:
        log.info(
            "retention: pruned %d unmatched items fetched before %s",
            report.pruned,
            report.cutoff.date().isoformat(),
            extra={"event": "retention"},
        )


def refresh_site_records(w: Worker) -> None:
    """What the site shows of each report (monitor.incidents.display), worked out again where it went stale (after
    an upgrade, or for reports stored before there were records), so site builds need not."""
    with exclusive(w.engine, "site-records") as got:
        written = refresh_displays(w.engine) if got else 0
    if written:
        log.info("site records: %d reports worked out again", written, extra={"event": "site"})


def feed_health(engine: Engine, polling: PollingSettings) -> list[tuple[Feed, str]]:
    now = utcnow()
    with session_scope(engine) as s:
        feeds = list(s.exec(select(Feed).where(col(Feed.removed).is_(False))).all())
    return [(f, policy.feed_health(f, now, polling)) for f in feeds]


def count_health(metrics: ServiceMetrics, rows: list[tuple[Feed, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, h in rows:
        counts[h] = counts.get(h, 0) + 1
    metrics.feeds.replace(({"health": h}, n) for h, n in counts.items())
    return counts


def log_feeds_report(rows: list[tuple[Feed, str]], counts: dict[str, int]) -> None:
    """The periodic report: how many feeds are in each state, then why each problem feed is in its state."""
    summary = ", ".join(f"{n} {h}" for h, n in sorted(counts.items()))
    log.info("feeds report: %s", summary or "no feeds", extra={"event": "feeds_report"})
    bad = [(f, h) for f, h in rows if h in PROBLEM_HEALTH]
    for f, h in sorted(bad, key=lambda x: (x[1], x[0].id)):
        if h == "silent":
            since = f.last_new_item_at.date().isoformat() if f.last_new_item_at else "ever"
            why = f"no new item since {since}"
        elif h == "muted":
            why = f.mute_reason or "muted"
        else:
            why = f"{f.error_count} failures in a row, last: {f.last_error or f.error_kind}"
        log.warning("feed %s is %s: %s", f.id, h, why, extra=feed_ctx(f.id, f.url, event="feeds_report"))


def rebuild_site(engine: Engine, config: Config, out: Path) -> None:
    with exclusive(engine, "site") as got:
        report = stages.build_site(engine, config, out) if got else None
    if report is not None:
        log.info("site rebuilt in %s: %s pages", out, report.pages, extra={"event": "site"})
