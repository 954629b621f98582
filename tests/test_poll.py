"""The poll cycle end to end: a real loopback HTTP server, real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from monitor.config.load import Config, load_config
from monitor.config.models import FeedConfig
from monitor.ingest.poll import PollReport, poll_once
from monitor.store.models import Feed, Item, ItemSource
from tests.support.builders import It, dated, rss
from tests.support.feedserver import FeedServer


@pytest.fixture
def server() -> FeedServer:
    with FeedServer() as srv:
        yield srv


def make_config(config_dir: Path, feeds: list[tuple[str, str]], **http: object) -> Config:
    base = load_config(config_dir)
    settings = base.settings.model_copy(
        update={"http": base.settings.http.model_copy(update={"allow_private_networks": True, **http})}
    )
    return dataclasses.replace(
        base, settings=settings, feeds=tuple(FeedConfig(id=i, url=u) for i, u in feeds)
    )


def poll(engine: Engine, cfg: Config, **kw: object) -> PollReport:
    return asyncio.run(poll_once(engine, cfg, None, ignore_schedule=True, **kw))  # type: ignore[arg-type]


def count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def feed_row(engine: Engine, fid: str) -> Feed:
    with Session(engine) as s:
        row = s.get(Feed, fid)
        assert row is not None
        return row


def by_feed(report: PollReport) -> dict[str, object]:
    return {r.feed: r for r in report.results}


def test_new_items_are_stored_once_and_an_unchanged_feed_is_not_parsed_again(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/a.xml", body=rss(dated(5)), etag='"v1"', content_type="application/rss+xml")
    cfg = make_config(config_dir, [("a", server.url("/a.xml"))])

    first = poll(engine, cfg)
    assert [(r.outcome, r.new) for r in first.results] == [("ok", 5)]
    assert count(engine, Item) == 5

    second = poll(engine, cfg)
    assert [(r.outcome, r.new) for r in second.results] == [("not_modified", 0)]
    assert server.requests_for("/a.xml")[-1].headers.get("if-none-match") == '"v1"'
    assert count(engine, Item) == 5
    with Session(engine) as s:
        urls = sorted(i.url or "" for i in s.exec(select(Item)))
    assert all("utm_source" not in u for u in urls)  # canonical URLs


def test_same_story_in_two_feeds_is_stored_once_and_linked_to_both(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    shared = It(
        "Activist detained in Almaty", "Police detained an activist.", link="https://news.example.org/story/1"
    )
    server.add("/a.xml", body=rss([shared, *dated(2, prefix="A")]))
    server.add(
        "/b.xml",
        body=rss(
            [dataclasses.replace(shared, link=shared.link + "?utm_medium=feed#top"), *dated(1, prefix="B")]
        ),
    )
    cfg = make_config(config_dir, [("a", server.url("/a.xml")), ("b", server.url("/b.xml"))])

    poll(engine, cfg)
    assert count(engine, Item) == 4  # 1 shared + 2 + 1
    with Session(engine) as s:
        item = s.exec(select(Item).where(Item.url == "https://news.example.org/story/1")).one()
        sources = s.exec(select(ItemSource.feed_id).where(ItemSource.item_id == item.id)).all()
    assert sorted(sources) == ["a", "b"]


def test_changed_entry_is_updated_in_place_up_to_the_cap(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    cfg = make_config(config_dir, [("a", server.url("/a.xml"))])
    cfg = dataclasses.replace(
        cfg,
        settings=cfg.settings.model_copy(
            update={"polling": cfg.settings.polling.model_copy(update={"max_hash_updates": 2})}
        ),
    )
    for version in range(4):
        server.add("/a.xml", body=rss([It("Court hearing", f"Version {version} of the text.", guid="g-1")]))
        report = poll(engine, cfg)
        assert report.results[0].outcome == "ok"
    with Session(engine) as s:
        items = s.exec(select(Item)).all()
    assert len(items) == 1
    assert items[0].hash_updates == 2
    assert items[0].text == "Version 2 of the text."  # the third change is past the cap


def test_one_bad_feed_never_affects_another_and_each_failure_is_classified(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/good.xml", body=rss(dated(3)))
    server.add("/missing.xml", status=404)
    server.add("/broken.xml", status=500)
    server.add(
        "/page.html",
        body=b'<html><head><link rel="alternate" type="application/rss+xml" href="/real.xml"></head><body>hi</body></html>',
        content_type="text/html",
    )
    server.add("/empty.xml", body=b"")
    server.add("/hang.xml", hang=True)
    server.gzip_bomb("/bomb.xml")
    server.huge("/huge.xml", size=3 * 1024 * 1024)
    server.redirect_loop("/loop1", "/loop2")
    feeds = [
        ("good", "/good.xml"),
        ("missing", "/missing.xml"),
        ("broken", "/broken.xml"),
        ("page", "/page.html"),
        ("empty", "/empty.xml"),
        ("hang", "/hang.xml"),
        ("bomb", "/bomb.xml"),
        ("huge", "/huge.xml"),
        ("loop", "/loop1"),
    ]
    cfg = make_config(
        config_dir,
        [(i, server.url(p)) for i, p in feeds],
        total_timeout=2,
        max_bytes=1024 * 1024,
        max_decompressed_bytes=4 * 1024 * 1024,
    )
    report = poll(engine, cfg)
    got = {r.feed: (r.outcome, r.error_kind) for r in report.results}
    assert got["good"] == ("ok", None)
    assert got["missing"] == ("error", "http_4xx")
    assert got["broken"] == ("error", "http_5xx")
    assert got["page"] == ("error", "not_a_feed")
    assert got["empty"][1] == "empty"
    assert got["hang"] == ("error", "timeout")
    assert got["bomb"] == ("error", "decompression_bomb")
    assert got["huge"] == ("error", "too_large")
    assert got["loop"][1] in ("redirect_loop", "too_many_redirects")
    page_error = next(r.error for r in report.results if r.feed == "page")
    assert page_error and server.url("/real.xml") in page_error  # names the feed the page advertises
    assert count(engine, Item) == 3
    broken = feed_row(engine, "broken")
    assert broken.error_count == 1 and broken.last_error and "500" in broken.last_error
    assert broken.next_check_at is not None and broken.next_check_at > datetime.now(UTC) + timedelta(
        minutes=5
    )


def test_410_gone_mutes_the_feed_with_a_reason(engine: Engine, server: FeedServer, config_dir: Path) -> None:
    server.add("/gone.xml", status=410)
    cfg = make_config(config_dir, [("gone", server.url("/gone.xml"))])
    poll(engine, cfg)
    row = feed_row(engine, "gone")
    assert row.muted and row.mute_reason and "410" in row.mute_reason
    assert poll(engine, cfg).results == []  # muted feeds are not polled even with --all


def test_429_with_retry_after_is_honoured_and_not_counted_as_broken(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/busy.xml", status=429, headers={"Retry-After": "7200"})
    cfg = make_config(config_dir, [("busy", server.url("/busy.xml"))])
    before = datetime.now(UTC)
    poll(engine, cfg)
    row = feed_row(engine, "busy")
    assert row.error_count == 0 and row.error_kind == "rate_limited"
    assert row.next_check_at is not None
    wait = (row.next_check_at - before).total_seconds()
    assert 7200 * 0.9 <= wait <= 7200 * 1.1 + 60


def test_301_moves_the_stored_address_and_302_does_not(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/new.xml", body=rss(dated(1, prefix="Moved")))
    server.redirect("/old.xml", "/new.xml", status=301)
    server.add("/target.xml", body=rss(dated(1, prefix="Temp")))
    server.redirect("/temp.xml", "/target.xml", status=302)
    cfg = make_config(config_dir, [("moved", server.url("/old.xml")), ("temp", server.url("/temp.xml"))])
    poll(engine, cfg)
    assert feed_row(engine, "moved").url == server.url("/new.xml")
    assert feed_row(engine, "temp").url == server.url("/temp.xml")


def test_loopback_feed_is_refused_unless_private_networks_are_allowed(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/a.xml", body=rss(dated(1)))
    cfg = make_config(config_dir, [("a", server.url("/a.xml"))], allow_private_networks=False)
    report = poll(engine, cfg)
    assert [(r.outcome, r.error_kind) for r in report.results] == [("error", "private_address")]
    assert server.requests_for("/a.xml") == []


def test_periodic_full_fetch_catches_a_server_that_wrongly_answers_304(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/a.xml", body=rss(dated(2)), etag='"stale"')
    cfg = make_config(config_dir, [("a", server.url("/a.xml"))])
    poll(engine, cfg)
    # The content changes but the server keeps its old ETag, so a conditional GET gets 304.
    server.add("/a.xml", body=rss(dated(4)), etag='"stale"')
    assert poll(engine, cfg).results[0].outcome == "not_modified"
    with Session(engine) as s:
        row = s.get(Feed, "a")
        assert row is not None
        row.last_full_fetch_at = datetime.now(UTC) - timedelta(days=2)
        s.add(row)
        s.commit()
    report = poll(engine, cfg)
    assert report.results[0].outcome == "ok" and report.results[0].new == 2
    assert "if-none-match" not in server.requests_for("/a.xml")[-1].headers


def test_next_check_adapts_to_publishing_rate_and_ttl(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    server.add("/hourly.xml", body=rss(dated(10, hours=1)))
    server.add("/ttl.xml", body=rss(dated(10, prefix="T", hours=1), ttl=300))  # asks for 5 hours
    cfg = make_config(config_dir, [("hourly", server.url("/hourly.xml")), ("ttl", server.url("/ttl.xml"))])
    start = datetime.now(UTC)
    poll(engine, cfg)
    hourly = (feed_row(engine, "hourly").next_check_at - start).total_seconds()  # type: ignore[operator]
    ttl = (feed_row(engine, "ttl").next_check_at - start).total_seconds()  # type: ignore[operator]
    assert 1500 <= hourly <= 2100  # about half the gap between posts
    assert ttl >= 5 * 3600 - 60


# Every dialect and encoding the field produces, served as real files over HTTP and polled end to end.
FIXTURES = [
    ("rss091", "rss091.xml", "application/rss+xml", None),
    ("rss10", "rss10.rdf", "application/rdf+xml", None),
    ("rss20", "rss20.xml", "application/rss+xml", None),
    ("atom10", "atom10.xml", "application/atom+xml", None),
    ("cp1251", "cp1251.xml", "application/rss+xml", None),
    ("koi8r", "koi8r.xml", "application/rss+xml; charset=koi8-r", None),  # charset only in the HTTP header
    ("broken", "broken.xml", "application/rss+xml", None),
    ("dups", "dup_guids.xml", "application/rss+xml", None),
    ("noid", "no_guid_no_link.xml", "application/rss+xml", None),
]
FEEDS_DIR = Path(__file__).resolve().parent / "data" / "feeds"


def test_every_feed_dialect_and_encoding_polls_end_to_end(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    for fid, name, ctype, _ in FIXTURES:
        server.add(f"/{fid}", body=(FEEDS_DIR / name).read_bytes(), content_type=ctype)
    cfg = make_config(config_dir, [(fid, server.url(f"/{fid}")) for fid, *_ in FIXTURES])
    report = poll(engine, cfg)
    got = {r.feed: r for r in report.results}
    for fid, *_ in FIXTURES:
        assert got[fid].outcome == "ok", (fid, got[fid].error)
        assert got[fid].new >= 2, (fid, got[fid].new)
    assert got["broken"].warning  # recovered, but the user is told the XML was broken
    with Session(engine) as s:
        titles = {
            fid: [i.title for i in s.exec(select(Item).join(ItemSource).where(ItemSource.feed_id == fid))]
            for fid in ("cp1251", "koi8r")
        }
    for fid, found in titles.items():
        assert any(any("а" <= ch <= "я" for ch in t.lower()) for t in found), (
            fid,
            found,
        )  # real Cyrillic, not mojibake
        assert not any("Ð" in t or "Ã" in t for t in found), (fid, found)
    # The CMS gives two different stories one GUID: both are kept; an entry repeated verbatim is kept once.
    assert got["dups"].new == 3
    again = poll(engine, cfg)
    assert sum(r.new for r in again.results) == 0


def test_documents_are_parsed_in_worker_processes_with_the_same_result(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    from monitor.ingest import workers

    long = [dataclasses.replace(it, text=it.text + " Подробности. " * 120) for it in dated(40, prefix="Long")]
    body = rss(long, language="ru")
    server.add("/big.xml", body=body)
    server.add(
        "/notfeed.html",
        body=b"<html><body>" + b"<p>not a feed</p>" * 5000 + b"</body></html>",
        content_type="text/html",
    )
    cfg = make_config(config_dir, [("big", server.url("/big.xml")), ("page", server.url("/notfeed.html"))])
    report = poll(engine, cfg)
    got = by_feed(report)
    assert got["big"].outcome == "ok" and got["big"].new == 40  # type: ignore[attr-defined]
    assert got["page"].error_kind == "not_a_feed" and "/notfeed.html" in got["page"].error  # type: ignore[attr-defined]
    with Session(engine) as s:
        texts = [i.text for i in s.exec(select(Item))]
    assert all("Подробности." in t for t in texts)
    if (os.cpu_count() or 1) > 1:
        assert workers.worker_pids()  # the documents really went to the worker processes


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="worker processes start on two cores or more")
def test_languages_are_detected_in_the_language_worker_not_in_this_process(
    engine: Engine, server: FeedServer, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.ingest import language

    def no_detector() -> None:
        raise AssertionError("the language detector was used in the polling process")

    monkeypatch.setattr(language, "_detector", no_detector)
    items = [
        It("Алматыда белсенді ұсталды", "Полиция белсендіні әкімдік ғимаратының алдында ұстады."),
        It("Журналиста задержали в Алматы", "Полиция задержала журналиста у здания акимата."),
    ]
    server.add("/mixed.xml", body=rss(items, language="ru"))  # the feed declares Russian for both
    report = poll(engine, make_config(config_dir, [("mixed", server.url("/mixed.xml"))]))
    assert by_feed(report)["mixed"].new == 2  # type: ignore[attr-defined]
    with Session(engine) as s:
        got = {i.title: i.language for i in s.exec(select(Item))}
    assert got == {"Алматыда белсенді ұсталды": "kk", "Журналиста задержали в Алматы": "ru"}


@pytest.mark.parametrize(("window", "incidents"), [("72h", 1), ("2h", 2)])
def test_the_grouping_window_comes_from_the_settings(
    engine: Engine, server: FeedServer, config_dir: Path, window: str, incidents: int
) -> None:
    from monitor.config.durations import parse_duration
    from monitor.rules import load_classifier
    from monitor.store.models import Incident

    settings = config_dir / "settings.yaml"
    text = settings.read_text(encoding="utf-8")
    assert "  window: 72h" in text
    settings.write_text(text.replace("  window: 72h", f"  window: {window}"), encoding="utf-8")
    morning = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    server.add(
        "/a.xml",
        body=rss(
            [
                It(
                    "Police detain activist Aigul Utepova at Almaty rally",
                    "Activist Aigul Utepova was detained by police at a rally in Almaty on Sunday.",
                    published=morning,
                )
            ]
        ),
    )
    server.add(
        "/b.xml",
        body=rss(
            [
                It(
                    "Aigul Utepova held after protest",
                    "Officers detained the activist Aigul Utepova after a protest; she faces a fine, her lawyer said.",
                    published=morning + timedelta(hours=3),
                )
            ]
        ),
    )
    cfg = make_config(config_dir, [("a", server.url("/a.xml")), ("b", server.url("/b.xml"))])
    assert cfg.settings.grouping.window == parse_duration(window)
    asyncio.run(poll_once(engine, cfg, load_classifier(config_dir), ignore_schedule=True))
    with Session(engine) as s:
        grouped = s.exec(select(Item.incident_id).where(Item.incident_id.is_not(None))).all()  # type: ignore[union-attr]
        assert len(grouped) == 2  # both reports were classified and grouped
        assert count(engine, Incident) == incidents


_STARTER = """
import os
import sys
import time

os.environ["MONITOR_PARSE_WORKERS"] = "2"
from monitor.ingest import workers

if __name__ == "__main__":
    workers.warm_workers()
    print(" ".join(str(pid) for pid in workers.worker_pids()), flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, its stat was read
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    starter = tmp_path / "starter.py"
    starter.write_text(_STARTER, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(starter)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 3 and all(_alive(p) for p in workers)  # two parsers, one language worker
    finally:
        proc.kill()  # SIGKILL: no atexit, no pool shutdown
        proc.wait()
    deadline = time.monotonic() + 30  # a generous deadline, not a timing assertion
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), workers


def test_a_lease_is_renewed_while_its_batch_runs(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    from monitor.ingest.poll import Poller

    server.add("/slow.xml", body=rss(dated(1, prefix="Slow")), delay=5.0)
    cfg = make_config(config_dir, [("slow", server.url("/slow.xml"))])

    async def main() -> tuple[PollReport, PollReport]:
        first, second = Poller(engine, cfg), Poller(engine, cfg)
        try:
            first.sync()
            running = asyncio.create_task(first.run(worker="w1", lease_seconds=2.0))
            await asyncio.sleep(3.0)  # past the first lease: only a renewal keeps the feed from worker w2
            other = await second.run(worker="w2", lease_seconds=2.0)
            return await running, other
        finally:
            first.close()
            second.close()

    done, other = asyncio.run(main())
    assert [r.feed for r in done.results] == ["slow"] and done.results[0].new == 1
    assert other.results == []
    assert len(server.requests_for("/slow.xml")) == 1
    assert feed_row(engine, "slow").lease_owner is None  # the finished poll gave the lease back


_LIGHT_STARTER = """
import os

os.environ["MONITOR_PARSE_WORKERS"] = "2"
from monitor.__main__ import main  # what the `monitor` command's script imports

if __name__ == "__main__":
    from monitor.ingest import workers

    workers.warm_workers()
    asks = ("'sqlalchemy' in __import__('sys').modules", "'lingua' in __import__('sys').modules")
    for pool in (workers._parse_pool(), workers._language_pool()):
        print(" ".join(str(pool.submit(eval, ask).result()) for ask in asks), flush=True)
    workers.reset_workers()
"""


def test_worker_processes_import_what_they_run_not_the_service(tmp_path: Path) -> None:
    import subprocess
    import sys

    starter = tmp_path / "starter.py"
    starter.write_text(_LIGHT_STARTER, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(starter)], capture_output=True, text=True, timeout=300, check=True
    )
    parse, language = out.stdout.split("\n")[:2]
    assert parse == "False False"  # no database layer, no language models in a parser
    assert language == "False True"  # the language worker holds the models, and no database layer either
