"""The service in-process: scheduler ticks against a loopback feed server, /healthz, /metrics, the site, reload,
retention, digest slots. Subprocess behaviour (signals, logs, second instance) is in test_service_process.py."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from sqlalchemy import Engine, update
from sqlmodel import Session, col, func, select

from monitor.config.load import load_config
from monitor.service.config_watch import ConfigWatcher
from monitor.service.http import resolve_static
from monitor.service.retention import prune_unmatched
from monitor.service.scheduler import Service, ServiceOptions, cron_trigger, previous_fire
from monitor.service.worker_locks import InstanceLock, InstanceLocked, exclusive
from monitor.store import make_engine
from monitor.store.models import Feed, Item, ItemSource
from tests.support.builders import It, dated, rss
from tests.support.feedserver import FeedServer

# --- helpers ----------------------------------------------------------------------------------------------


def write_config(config_dir: Path, feeds: list[dict[str, Any]], **polling: Any) -> None:
    """Feeds on loopback (allowed for this config only) and polling bounds short enough for a test."""
    (config_dir / "feeds.yaml").write_text(yaml.safe_dump({"feeds": feeds}), encoding="utf-8")
    settings = yaml.safe_load((config_dir / "settings.yaml").read_text(encoding="utf-8"))
    settings["http"]["allow_private_networks"] = True
    settings["http"]["per_host"] = 20
    settings["polling"].update({"min_interval": "1s", **polling})
    (config_dir / "settings.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")


def options(**kw: Any) -> ServiceOptions:
    base: dict[str, Any] = {"port": 0, "tick": 0.2, "watch_interval": 0, "shutdown_timeout": 10}
    base.update(kw)
    return ServiceOptions(**base)


async def until(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Wait for `cond()` to be truthy (a generous deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(cond)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def run_with_service(
    engine: Engine, config_dir: Path, scenario: Callable[[Service], Awaitable[None]], **opts: Any
) -> None:
    async def main() -> None:
        service = Service(engine, load_config(config_dir), options(**opts))
        await service.start()
        try:
            await scenario(service)
        finally:
            await service.shutdown()

    asyncio.run(main())


def items(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(Item)).one()


def base_url(service: Service) -> str:
    assert service.http is not None
    return f"http://127.0.0.1:{service.http.port}"


@pytest.fixture
def server() -> Any:
    with FeedServer() as srv:
        yield srv


# --- scheduler ------------------------------------------------------------------------------------------


def test_scheduler_polls_due_feeds_on_its_tick_and_again_when_they_are_due(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/a.xml", body=rss(dated(3, prefix="A")))
    server.add(
        "/b.xml",
        body=rss(
            [It("Activists detained at a rally in Almaty", "Police detained 5.", "https://x.example/1")]
        ),
    )
    write_config(
        config_dir,
        [
            {"id": "a", "url": server.url("/a.xml"), "interval": "1s"},
            {"id": "b", "url": server.url("/b.xml"), "interval": "1h"},
        ],
    )

    async def scenario(service: Service) -> None:
        await until(lambda: items(engine) == 4, what="first poll")
        # Feed a is due again every second: a new entry appears without any call from the test.
        server.add("/a.xml", body=rss(dated(4, prefix="A")))
        await until(lambda: items(engine) == 5, what="second poll of a")
        assert len(server.requests_for("/b.xml")) == 1  # b is not due for an hour
        assert service.metrics.items_new.get() == 5
        assert service.metrics.polls.get(outcome="ok") >= 3
        assert service.metrics.matches.get(category="protest_crackdown") == 1
        async with httpx.AsyncClient() as client:
            health = await client.get(base_url(service) + "/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok" and body["scheduler"] == "running" and body["database"] == "ok"
        assert body["last_poll"]["feeds"] >= 1 and body["feeds_failing"] == 0

    run_with_service(engine, config_dir, scenario)
    with Session(engine) as s:
        assert s.exec(select(Feed).where(col(Feed.lease_owner).is_not(None))).all() == []


def test_a_feed_that_hangs_does_not_hold_back_feeds_falling_due_meanwhile(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    hang = 5.0
    server.add("/slow.xml", body=rss(dated(1, prefix="S")), delay=hang)
    server.add("/fast.xml", body=rss(dated(1, prefix="F")))
    write_config(
        config_dir,
        [
            {"id": "slow", "url": server.url("/slow.xml"), "interval": "1h"},
            {"id": "fast", "url": server.url("/fast.xml"), "interval": "1s"},
        ],
    )

    async def scenario(service: Service) -> None:
        await until(lambda: server.requests_for("/slow.xml"), what="the slow feed's fetch")
        await until(lambda: items(engine) == 2, what="the slow feed's answer")
        (slow,) = server.requests_for("/slow.xml")
        during = [r for r in server.requests_for("/fast.xml") if slow.at < r.at < slow.at + hang]
        # Due every second, the fast feed is fetched again while the slow one hangs (before: only after it).
        assert len(during) >= 2, [round(r.at - slow.at, 2) for r in server.requests_for("/fast.xml")]

    run_with_service(engine, config_dir, scenario)


def test_healthz_is_503_when_the_database_is_unreachable_or_the_scheduler_stopped(
    sqlite_url: str, config_dir: Path
) -> None:
    engine = make_engine(sqlite_url)
    from monitor.store import ensure_schema

    ensure_schema(engine)
    write_config(config_dir, [])

    async def scenario(service: Service) -> None:
        async with httpx.AsyncClient() as client:
            url = base_url(service) + "/healthz"
            assert (await client.get(url)).status_code == 200
            good = service.engine
            # A server that refuses connections: the same as a database that went away.
            service.engine = make_engine("postgresql+psycopg://monitor@127.0.0.1:9/nowhere?connect_timeout=2")
            resp = await client.get(url)
            assert resp.status_code == 503
            assert resp.json()["database"].startswith("unreachable")
            assert resp.json()["status"] == "unavailable"
            service.engine = good
            assert (await client.get(url)).status_code == 200
            service.scheduler.pause()
            resp = await client.get(url)
            assert resp.status_code == 503 and resp.json()["scheduler"] == "paused"

    run_with_service(engine, config_dir, scenario)
    engine.dispose()


PROM_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>[-+]?(?:[0-9.eE+-]+|Inf|NaN))$"
)
PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_prometheus(textdoc: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the text exposition format 0.0.4: every sample belongs to a declared metric,
    labels are well-formed, histogram buckets are cumulative and end with +Inf == _count."""
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in textdoc.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        m = PROM_LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels: dict[str, str] = {}
        if m["labels"]:
            pos = 0
            for lm in PROM_LABEL.finditer(m["labels"]):
                assert lm.start() == pos, f"bad labels in {line!r}"
                labels[lm[1]] = lm[2]
                pos = lm.end()
            assert pos == len(m["labels"]), f"bad labels in {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} has no TYPE line"
        samples.setdefault(name, []).append((labels, float(m["value"])))
    for name, kind in types.items():
        if kind != "histogram" or f"{name}_count" not in samples:
            continue
        buckets = samples[f"{name}_bucket"]
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{name} buckets are not cumulative"
        assert buckets[-1][0]["le"] == "+Inf" and math.isclose(buckets[-1][1], samples[f"{name}_count"][0][1])
    return samples


def test_metrics_are_prometheus_text_and_count_polls_errors_and_matches(
    sqlite_url: str, server: FeedServer, config_dir: Path
) -> None:
    engine = make_engine(sqlite_url)
    server.add(
        "/ok.xml",
        body=rss(
            [It('Newspaper "Dala" fined in libel suit by akim', "The editor...", "https://x.example/2")]
        ),
    )
    server.add("/down.xml", status=503)
    write_config(
        config_dir,
        [{"id": "ok", "url": server.url("/ok.xml")}, {"id": "down", "url": server.url("/down.xml")}],
    )
    from monitor.store import ensure_schema

    ensure_schema(engine)

    async def scenario(service: Service) -> None:
        await until(
            lambda: service.metrics.cycles.get() >= 1 and service.last_poll and service.last_poll.feeds == 2
        )
        await service.health_job()
        async with httpx.AsyncClient() as client:
            resp = await client.get(base_url(service) + "/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse_prometheus(resp.text)
        polls = {lbl["outcome"]: v for lbl, v in samples["monitor_feed_polls_total"]}
        assert polls == {"ok": 1.0, "error": 1.0}
        assert samples["monitor_feed_errors_total"] == [({"kind": "http_5xx"}, 1.0)]
        assert samples["monitor_items_new_total"] == [({}, 1.0)]
        assert ({"category": "defamation"}, 1.0) in samples["monitor_matches_total"]
        assert samples["monitor_fetch_duration_seconds_count"] == [({}, 2.0)]
        assert samples["monitor_poll_cycle_duration_seconds_count"][0][1] >= 1
        health = {lbl["health"]: v for lbl, v in samples["monitor_feeds"]}
        assert health == {"ok": 1.0, "failing": 1.0}
        assert samples["monitor_scheduler_running"] == [({}, 1.0)]

    run_with_service(engine, config_dir, scenario)
    engine.dispose()


def test_site_is_served_without_ever_leaving_its_folder(
    sqlite_url: str, config_dir: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "incidents").mkdir(parents=True)
    (site / "index.html").write_text("<h1>incidents</h1>", encoding="utf-8")
    (site / "feed.atom").write_text("<feed/>", encoding="utf-8")
    (site / "incidents" / "index.html").write_text("list", encoding="utf-8")
    (site / ".secret").write_text("no", encoding="utf-8")
    (tmp_path / "private.txt").write_text("outside", encoding="utf-8")
    (site / "escape.txt").symlink_to(tmp_path / "private.txt")
    engine = make_engine(sqlite_url)
    from monitor.store import ensure_schema

    ensure_schema(engine)
    write_config(config_dir, [])

    async def scenario(service: Service) -> None:
        async with httpx.AsyncClient() as client:
            url = base_url(service)
            index = await client.get(url + "/")
            assert index.status_code == 200 and "<h1>incidents</h1>" in index.text
            assert index.headers["content-type"].startswith("text/html")
            assert index.headers["x-content-type-options"] == "nosniff"
            atom = await client.get(url + "/feed.atom")
            assert atom.headers["content-type"].startswith("application/atom+xml")
            assert (await client.get(url + "/incidents/")).text == "list"
            head = await client.head(url + "/index.html")
            assert head.status_code == 200 and head.content == b""
            assert (await client.post(url + "/index.html")).status_code == 405
            # Raw request targets, not normalised by the client.
            for target in (
                "/../private.txt",
                "/%2e%2e/private.txt",
                "/incidents/..%2f..%2fprivate.txt",
                "/.secret",
                "/escape.txt",
                "/%00index.html",
                "/..%5cprivate.txt",
                "/nope.html",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", service.http.port)  # type: ignore[union-attr]
                writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await writer.drain()
                status = (await reader.readline()).decode()
                writer.close()
                assert " 404 " in status, (target, status)

    run_with_service(engine, config_dir, scenario, site_dir=site)
    engine.dispose()
    assert resolve_static(site, "/incidents") == (site / "incidents" / "index.html").resolve()
    assert resolve_static(site, "/../private.txt") is None


# --- reload -----------------------------------------------------------------------------------------------


def test_a_valid_config_change_takes_effect_and_an_invalid_one_keeps_the_running_config(
    sqlite_url: str, server: FeedServer, config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(sqlite_url)
    from monitor.store import ensure_schema

    ensure_schema(engine)
    server.add("/a.xml", body=rss(dated(2, prefix="A")))
    server.add("/b.xml", body=rss(dated(2, prefix="B")))
    write_config(config_dir, [{"id": "a", "url": server.url("/a.xml")}])

    async def scenario(service: Service) -> None:
        await until(lambda: items(engine) == 2)
        # Valid: a new feed, noticed by the watcher (no signal needed) and polled.
        write_config(
            config_dir, [{"id": "a", "url": server.url("/a.xml")}, {"id": "b", "url": server.url("/b.xml")}]
        )
        await until(lambda: items(engine) == 4, what="the new feed to be polled")
        assert len(service.config.feeds) == 2
        # Invalid: the old config keeps running, the error names file and line.
        (config_dir / "settings.yaml").write_text("polling:\n  min_interval: soon\n", encoding="utf-8")
        await until(lambda: service.last_reload_error is not None, what="the rejection")
        assert "settings.yaml:2" in service.last_reload_error
        assert len(service.config.feeds) == 2
        assert service.metrics.reloads.get(outcome="rejected") == 1
        async with httpx.AsyncClient() as client:
            health = (await client.get(base_url(service) + "/healthz")).json()
        assert health["status"] == "ok" and "settings.yaml:2" in health["config"]["last_reload_error"]

    caplog.set_level("INFO", logger="monitor")
    run_with_service(engine, config_dir, scenario, watch_interval=0.1)
    engine.dispose()
    assert any(
        "config rejected" in r.getMessage() and "settings.yaml:2" in r.getMessage() for r in caplog.records
    )


def test_config_watcher_sees_edits_additions_and_removals_but_not_editor_droppings(tmp_path: Path) -> None:
    (tmp_path / "feeds.yaml").write_text("feeds: []\n")
    w = ConfigWatcher(tmp_path)
    assert w.changed() == []
    (tmp_path / "feeds.yaml").write_text("feeds: [] # edited, longer\n")
    (tmp_path / ".feeds.yaml.swp").write_text("x")
    (tmp_path / "digests.yaml~").write_text("x")
    assert w.changed() == ["feeds.yaml"]
    (tmp_path / "digests.yaml").write_text("digests: []\n")
    (tmp_path / "feeds.yaml").unlink()
    assert w.changed() == ["digests.yaml", "feeds.yaml"]


# --- retention --------------------------------------------------------------------------------------------


def test_retention_prunes_only_old_unmatched_items_and_they_are_not_ingested_again(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    entries = [
        It(
            "Police detain protesters at Almaty rally",
            "Police detained twenty protesters at a rally.",
            "https://n.example/1",
        ),
        It(
            "Wheat harvest beats forecast",
            "Farmers harvested more wheat than expected.",
            "https://n.example/2",
        ),
        It("Chess championship opens", "Young players gather for a chess tournament.", "https://n.example/3"),
    ]
    server.add("/n.xml", body=rss(entries))
    write_config(config_dir, [{"id": "n", "url": server.url("/n.xml")}])
    config = load_config(config_dir)
    from monitor.ingest.poll import poll_once

    asyncio.run(poll_once(engine, config, config.rules, ignore_schedule=True))
    assert items(engine) == 3
    old = datetime.now(UTC) - timedelta(days=40)
    with Session(engine) as s:
        s.execute(update(Item).where(col(Item.url) != "https://n.example/3").values(fetched=old))
        s.commit()

    report = prune_unmatched(engine, days=30)
    assert report.pruned == 1  # the harvest story: old and unmatched; the chess story is recent
    with Session(engine) as s:
        rows = {i.url: i for i in s.exec(select(Item))}
        sources = s.exec(select(func.count()).select_from(ItemSource)).one()
    assert rows["https://n.example/2"].pruned and rows["https://n.example/2"].text == ""
    assert rows["https://n.example/2"].title == "Wheat harvest beats forecast"
    kept = rows["https://n.example/1"]
    assert not kept.pruned and kept.categories and "twenty protesters" in kept.text
    assert not rows["https://n.example/3"].pruned
    assert sources == 3  # identities stay
    assert prune_unmatched(engine, days=30).pruned == 0  # idempotent

    # The publisher still lists the pruned story (with a fresh body): it must not come back as new.
    server.add("/n.xml", body=rss([*entries, It("A new story", "Text.", "https://n.example/4")]))
    report2 = asyncio.run(poll_once(engine, config, config.rules, ignore_schedule=True))
    assert [(r.new, r.updated) for r in report2.results] == [(1, 0)]
    assert items(engine) == 4
    with Session(engine) as s:
        assert s.exec(select(Item).where(Item.url == "https://n.example/2")).one().pruned


# --- digests: slots, exclusivity -----------------------------------------------------------------------


def test_previous_fire_is_the_slot_a_run_serves_in_the_digest_time_zone() -> None:
    daily = cron_trigger("0 8 * * *", "Asia/Almaty")
    almaty = ZoneInfo("Asia/Almaty")
    now = datetime(2026, 11, 20, 7, 59, tzinfo=almaty)
    assert previous_fire(daily, now) == datetime(2026, 11, 19, 8, 0, tzinfo=almaty)
    at = datetime(2026, 11, 20, 8, 0, tzinfo=almaty)
    assert previous_fire(daily, at) == at
    minutely = cron_trigger("* * * * *")
    t = datetime(2026, 11, 20, 12, 34, 56, tzinfo=UTC)
    assert previous_fire(minutely, t) == datetime(2026, 11, 20, 12, 34, tzinfo=UTC)
    yearly = cron_trigger("0 0 1 1 *")
    assert previous_fire(yearly, t) == datetime(2026, 1, 1, tzinfo=UTC)


def test_advisory_lock_admits_one_holder_at_a_time(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with exclusive(engine, "digest:daily") as first:
            assert first
            with exclusive(engine, "digest:daily", timeout=0.3) as second:
                # PostgreSQL: a second session is refused while the first holds it. SQLite: one process
                # per database (InstanceLock), so the lock is always granted.
                assert second is (engine.dialect.name == "sqlite")
            with exclusive(engine, "digest:other") as other:
                assert other
        with exclusive(engine, "digest:daily", timeout=0) as again:
            assert again
    finally:
        engine.dispose()


def test_sqlite_instance_lock_refuses_a_second_holder_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with InstanceLock(db):
        with pytest.raises(InstanceLocked) as exc:
            InstanceLock(db).acquire()
        assert str(db) in str(exc.value) and "PostgreSQL" in str(exc.value)
    with InstanceLock(db):  # released on exit
        pass
