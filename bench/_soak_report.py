"""What the soak reads back after the run: the service's CPU and memory, a bare round of fetches as the baseline,
entries served against items stored, the fetch schedule kept, and how the events were grouped."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from _soak_feeds import BIG_STORY_KEY, WINDOW, big_story_feed, civic_slot

# --- measuring the service --------------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return cpu, rss


def baseline_round(base: str, count: int, failing: set[int]) -> tuple[float, float]:
    """CPU and wall seconds for one bare round of GETs of every healthy feed: httpx, 20 at a time."""
    import httpx

    async def run() -> None:
        sem = asyncio.Semaphore(20)
        async with httpx.AsyncClient(headers={"X-Soak-Baseline": "1"}, timeout=10) as client:

            async def one(i: int) -> None:
                async with sem:
                    r = await client.get(f"{base}/f{i}.xml")
                    r.raise_for_status()

            await asyncio.gather(*(one(i) for i in range(count) if i not in failing))

    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(run())
    return time.process_time() - cpu0, time.perf_counter() - t0


def http_get(url: str, timeout: float = 10) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def write_config(folder: Path, base: str, count: int, period: float, window: str | None = None) -> Path:
    import yaml

    from monitor.config.load import packaged_dir

    cfg = folder / "config"
    shutil.copytree(packaged_dir("config"), cfg)
    interval = f"{int(period)}s"
    feeds = [{"id": f"soak-{i:04d}", "url": f"{base}/f{i}.xml", "interval": interval} for i in range(count)]
    (cfg / "feeds.yaml").write_text(yaml.safe_dump({"feeds": feeds}), encoding="utf-8")
    settings = yaml.safe_load((cfg / "settings.yaml").read_text(encoding="utf-8"))
    settings["database"]["url"] = None
    settings["http"].update(
        {"allow_private_networks": True, "per_host": 20, "max_concurrency": 20, "total_timeout": "10s"}
    )
    settings["polling"].update({"min_interval": interval, "default_interval": interval})
    if window:
        settings.setdefault("grouping", {})["window"] = window
    (cfg / "settings.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    (cfg / "digests.yaml").unlink(missing_ok=True)  # no SMTP here: the soak is about ingestion
    return cfg


def db_facts(db_url: str) -> tuple[list[str | None], dict[str, datetime | None]]:
    from sqlmodel import Session, select

    from monitor.store import make_engine
    from monitor.store.models import Feed, Item

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            urls = list(s.exec(select(Item.url)).all())
            fetched = {f.id: f.last_success_at for f in s.exec(select(Feed)).all()}
        return urls, fetched
    finally:
        engine.dispose()


def last_success(db_url: str) -> dict[str, datetime | None]:
    from sqlmodel import Session, select

    from monitor.store import make_engine
    from monitor.store.models import Feed

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return {f.id: f.last_success_at for f in s.exec(select(Feed)).all()}
    finally:
        engine.dispose()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def served_entries(served: dict[str, list[int]]) -> Iterator[tuple[int, int]]:
    """(feed, item index) of every entry in the versions the server sent."""
    for i, versions in served.items():
        seen: set[int] = set()
        for k in versions:
            seen.update(range(max(0, k - WINDOW + 1), k + 1))
        for j in seen:
            yield int(i), j


def expected_entries(served: dict[str, list[int]]) -> Iterator[str]:
    for i, j in served_entries(served):
        yield f"https://soak{i % 50}.example.org/{i}/{j}"


LATE = 10.0  # a fetch this much past its due time is late (the service's tick is 2 s)


def fetch_schedule(stats: dict[str, Any], healthy: list[int], period: float) -> dict[str, Any]:
    """How well the service kept each healthy feed's cadence, from when the server saw it fetch each one (up to
    the freeze): a feed first fetched at t0 is due at t0 + n * period, whatever the server's own clock. A fetch
    due less than LATE before the freeze is not counted as due: it may be on its way."""
    frozen_t = float(stats["frozen_t"])
    hits = {i: [t for t in stats["hits"].get(str(i), []) if t < frozen_t] for i in healthy}
    made = [len(v) for v in hits.values()]
    due = [max(int((frozen_t - LATE - v[0]) // period) + 1, 1) if v else 1 for v in hits.values()]
    pairs = [(a, b) for v in hits.values() for a, b in itertools.pairwise(v)]
    gaps = sorted(b - a for a, b in pairs)
    late = [b for a, b in pairs if b - a > period + LATE]
    return {
        "rounds": min(made, default=0),
        "expected": min(due, default=0),
        "due": sum(due),
        "behind": sum(max(0, d - m) for d, m in zip(due, made, strict=True)),
        "median": statistics.median(gaps) if gaps else 0.0,
        "p99": gaps[int(0.99 * (len(gaps) - 1))] if gaps else 0.0,
        "max": gaps[-1] if gaps else 0.0,
        "late": len(late),
        "last_late": max(late, default=0.0),
    }


def story_of(i: int, j: int) -> tuple[int, int] | None:
    """What feed i's entry j reports: (m, j) for an event of triplet m, BIG_STORY_KEY, or None (everyday news)."""
    if big_story_feed(i):
        return BIG_STORY_KEY
    return (i // 3, j) if civic_slot(i // 3, j) else None


def grouping_facts(db_url: str) -> tuple[list[int], str, list[tuple[int, int, int]]]:
    """Sizes of the incidents (ascending), the largest one's title, and (incident, feed, item index) of every
    report in an incident."""
    from sqlmodel import Session, col, select

    from monitor.store import make_engine
    from monitor.store.models import Incident, Item

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            sizes = sorted(s.exec(select(Incident.item_count).where(col(Incident.item_count) > 0)).all())
            largest = s.exec(
                select(Incident.title).order_by(col(Incident.item_count).desc(), col(Incident.id)).limit(1)
            ).first()
            rows = s.exec(select(Item.incident_id, Item.url).where(col(Item.incident_id).is_not(None))).all()
    finally:
        engine.dispose()
    members = []
    for inc, url in rows:
        if inc is not None and url is not None:  # https://soak{i % 50}.example.org/{i}/{j}
            i, j = url.rsplit("/", 2)[1:]
            members.append((inc, int(i), int(j)))
    return sizes, largest or "", members
