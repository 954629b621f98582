"""Article pages in the poll: a real loopback server serves a feed whose entries link to article pages on the
same server; real databases (SQLite and PostgreSQL) store the items, their article records and evidence."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from monitor.config.load import Config, load_config
from monitor.config.models import FeedConfig
from monitor.ingest.article import retry_articles
from monitor.ingest.poll import poll_once
from monitor.service.retention import prune_evidence
from monitor.store.evidence import archived_page
from monitor.store.evidence_models import ItemArticle
from monitor.store.models import Item
from tests.support.builders import It, rss
from tests.support.feedserver import FeedServer

PAGES = Path(__file__).resolve().parent / "data" / "articles"
HTML = "text/html; charset=utf-8"
WHEN = datetime(2026, 11, 20, 9, tzinfo=UTC)
LONG = (
    "Суд в Караганде рассмотрел дело о мошенничестве с кредитами. " * 10
)  # over the 400-character teaser bound: no page is fetched


@pytest.fixture
def server() -> FeedServer:
    with FeedServer() as srv:
        yield srv


def make_config(config_dir: Path, *feeds: FeedConfig) -> Config:
    base = load_config(config_dir)
    settings = base.settings.model_copy(
        update={
            "http": base.settings.http.model_copy(update={"allow_private_networks": True}),
            "articles": base.settings.articles.model_copy(update={"per_host_interval": 0.0}),
        }
    )
    return dataclasses.replace(base, settings=settings, feeds=tuple(feeds))


def poll(engine: Engine, cfg: Config) -> None:
    report = asyncio.run(poll_once(engine, cfg, cfg.rules, ignore_schedule=True))
    assert not report.failed, [r.error for r in report.failed]


def items(engine: Engine) -> dict[str, tuple[Item, ItemArticle | None]]:
    with Session(engine) as s:
        return {i.title: (i, s.get(ItemArticle, i.id)) for i in s.exec(select(Item)).all()}


def serve_feed(server: FeedServer) -> None:
    server.add("/news/arrest", (PAGES / "ru_utf8.html").read_bytes(), content_type=HTML)
    server.add("/news/paid", (PAGES / "paywall.html").read_bytes(), content_type=HTML)
    entries = [
        It("Активиста арестовали", "Суд вынес решение.", server.url("/news/arrest"), "g1", WHEN),
        It("Платный материал", "Коротко.", server.url("/news/paid"), "g2", WHEN),
        It("Мошенники осуждены", LONG, server.url("/news/long"), "g3", WHEN),
    ]
    server.add("/feed.xml", rss(entries, language="kk"), content_type="application/rss+xml")


def test_teaser_entries_get_their_article_text_and_evidence(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    serve_feed(server)
    cfg = make_config(
        config_dir, FeedConfig(id="kz", url=server.url("/feed.xml"), language="kk", archive=True)
    )
    poll(engine, cfg)
    got = items(engine)

    item, art = got["Активиста арестовали"]
    assert art is not None and art.state == "ok" and art.classified == "article"
    assert "потребовали освободить" in item.text  # the article, not the teaser, is the item's text
    assert art.teaser == "Суд вынес решение."
    assert item.language == "ru"  # detected: the feed says kk
    assert art.language and art.language["source"] == "detected" and art.language["declared"] == "kk"
    assert item.categories, "the article text should match a category"
    served = (PAGES / "ru_utf8.html").read_bytes()
    assert art.evidence and art.sha256 == hashlib.sha256(served).hexdigest()
    assert art.final_url == server.url("/news/arrest") and art.fetched_at is not None
    assert art.text and "арестовал" in art.text
    with Session(engine) as s:
        assert archived_page(s, item.id or 0) == served
    assert art.raw_zlib is not None and zlib.decompress(art.raw_zlib) == served

    paid, paid_art = got["Платный материал"]
    assert paid.text == "Коротко."  # the teaser is kept
    assert paid_art is not None and paid_art.state == "retry" and paid_art.reason == "paywall"
    assert paid_art.attempts == 1 and paid_art.next_attempt_at is not None
    assert paid_art.classified == "teaser"

    long_item, long_art = got["Мошенники осуждены"]
    assert long_art is None and long_item.text.startswith("Суд в Караганде")
    assert server.requests_for("/news/long") == []


def test_full_text_never_fetches_no_page(engine: Engine, server: FeedServer, config_dir: Path) -> None:
    serve_feed(server)
    cfg = make_config(config_dir, FeedConfig(id="kz", url=server.url("/feed.xml"), full_text="never"))
    poll(engine, cfg)
    assert server.requests_for("/news/arrest") == [] and server.requests_for("/news/paid") == []
    assert all(art is None for _, art in items(engine).values())


def test_a_failed_article_is_retried_later_and_then_classified(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    serve_feed(server)
    cfg = make_config(config_dir, FeedConfig(id="kz", url=server.url("/feed.xml")))
    poll(engine, cfg)
    _, art = items(engine)["Платный материал"]
    assert art is not None and art.next_attempt_at is not None

    # Not yet due: nothing is fetched.
    before = len(server.requests_for("/news/paid"))
    assert (
        asyncio.run(retry_articles(engine, cfg, cfg.rules, now=art.next_attempt_at - timedelta(seconds=1)))[
            "tried"
        ]
        == 0
    )
    assert len(server.requests_for("/news/paid")) == before

    # The publisher opens the story: the retry reads it, the item is classified on it.
    server.add("/news/paid", (PAGES / "ru_utf8.html").read_bytes(), content_type=HTML)
    counts = asyncio.run(
        retry_articles(engine, cfg, cfg.rules, now=art.next_attempt_at + timedelta(seconds=1))
    )
    assert counts == {"tried": 1, "read": 1, "failed": 0}
    item, art = items(engine)["Платный материал"]
    assert art is not None and art.state == "ok" and art.attempts == 2 and art.reason is None
    assert "потребовали освободить" in item.text and item.categories


def test_retries_back_off_then_give_up(engine: Engine, server: FeedServer, config_dir: Path) -> None:
    serve_feed(server)
    cfg = make_config(config_dir, FeedConfig(id="kz", url=server.url("/feed.xml")))
    poll(engine, cfg)
    waits = []
    for _ in range(10):
        _, art = items(engine)["Платный материал"]
        assert art is not None
        if art.state != "retry":
            break
        assert art.next_attempt_at is not None and art.last_attempt_at is not None
        waits.append(art.next_attempt_at - art.last_attempt_at)
        asyncio.run(retry_articles(engine, cfg, cfg.rules, now=art.next_attempt_at + timedelta(seconds=1)))
    _, art = items(engine)["Платный материал"]
    assert (
        art is not None and art.state == "failed" and art.reason == "paywall" and art.next_attempt_at is None
    )
    assert waits == sorted(waits) and waits[0] < waits[-1]


def test_explain_item_says_which_text_was_classified_and_shows_the_evidence(
    engine: Engine, server: FeedServer, config_dir: Path, db_url: str
) -> None:
    from typer.testing import CliRunner

    from monitor.cli import app

    serve_feed(server)
    cfg = make_config(config_dir, FeedConfig(id="kz", url=server.url("/feed.xml"), language="kk"))
    poll(engine, cfg)
    got = items(engine)
    runner = CliRunner()
    for title, classified in (("Активиста арестовали", "article"), ("Платный материал", "teaser")):
        item_id = got[title][0].id
        res = runner.invoke(
            app, ["--config", str(config_dir), "--db", db_url, "explain", "--item", str(item_id), "--json"]
        )
        assert res.exit_code == 0, res.output
        source = json.loads(res.stdout)["source"]
        assert source["classified"] == classified
        assert source["article"]["url"].endswith(
            (title == "Платный материал" and "/news/paid") or "/news/arrest"
        )
    res = runner.invoke(
        app,
        [
            "--config",
            str(config_dir),
            "--db",
            db_url,
            "explain",
            "--item",
            str(got["Платный материал"][0].id),
        ],
    )
    assert "classified: the feed's teaser" in res.stdout and "paywall" in res.stdout
    long_id = got["Мошенники осуждены"][0].id
    res = runner.invoke(
        app, ["--config", str(config_dir), "--db", db_url, "explain", "--item", str(long_id), "--json"]
    )
    assert json.loads(res.stdout)["source"]["classified"] == "feed"


def test_retention_keeps_evidence_of_items_in_an_incident_unless_told(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    serve_feed(server)
    cfg = make_config(config_dir, FeedConfig(id="kz", url=server.url("/feed.xml"), archive=True))
    poll(engine, cfg)
    item, art = items(engine)["Активиста арестовали"]
    assert item.incident_id is not None and art is not None and art.text
    later = datetime.now(UTC) + timedelta(days=400)
    assert prune_evidence(engine, days=30, now=later).pruned == 0
    _, art = items(engine)["Активиста арестовали"]
    assert art is not None and art.text and art.raw_zlib is not None
    assert prune_evidence(engine, days=30, now=later, include_incidents=True).pruned == 1
    _, art = items(engine)["Активиста арестовали"]
    assert art is not None and art.text is None and art.raw_zlib is None and art.sha256  # the record stays


def test_pruning_an_unmatched_item_clears_its_article_texts(
    engine: Engine, server: FeedServer, config_dir: Path
) -> None:
    from monitor.service.retention import prune_unmatched

    serve_feed(server)
    cfg = make_config(config_dir, FeedConfig(id="kz", url=server.url("/feed.xml")))
    poll(engine, cfg)
    paid, art = items(engine)["Платный материал"]
    assert not paid.categories and art is not None and art.teaser
    prune_unmatched(engine, days=30, now=datetime.now(UTC) + timedelta(days=400))
    paid, art = items(engine)["Платный материал"]
    assert paid.pruned and art is not None and art.teaser == "" and art.text is None
    kept, kept_art = items(engine)["Активиста арестовали"]  # matched, in an incident: untouched
    assert not kept.pruned and kept_art is not None and kept_art.teaser
