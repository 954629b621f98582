"""Several `monitor run` workers against one PostgreSQL: each feed polled once per cycle, no duplicate item,
each digest delivered exactly once, and a worker killed mid-cycle loses nothing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, func, select

from monitor.config.load import load_config
from monitor.service.scheduler import Service, ServiceOptions
from monitor.store import ensure_schema, make_engine
from monitor.store.digest_models import DigestOutbox, DigestState
from monitor.store.engine import session_scope
from monitor.store.feeds import sync_feeds
from monitor.store.models import Feed, Item, ItemSource
from tests.support.builders import It, rss
from tests.support.databases import PG_URL, fresh_pg_database
from tests.support.feedserver import FeedServer
from tests.support.smtpserver import SmtpServer
from tests.test_service import write_config
from tests.test_service_process import Proc, wait_until

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs MONITOR_TEST_PG_URL (PostgreSQL)")

FEEDS = 24
DIGESTS = """\
sender: "Monitor <monitor@example.org>"
digests:
  - name: morning
    schedule: "0 8 * * *"
    timezone: Asia/Almaty
    email:
      recipients: [analyst@example.org]
    send_empty: true
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from fresh_pg_database("monitor_scale")


def feed_body(i: int, cycles: int) -> bytes:
    """Feed i after `cycles` cycles: one new entry per cycle, each unique to this feed."""
    base = datetime(2026, 11, 20, tzinfo=UTC)
    return rss(
        [
            It(
                f"Feed {i} story {k}",
                f"Text of story {k} of feed {i}.",
                f"https://f{i}.example.org/{k}",
                None,
                base + timedelta(hours=k),
            )
            for k in range(cycles)
        ]
    )


def make_due(engine: Engine) -> None:
    """Time passes: every feed is due again (the test's stand-in for waiting out the interval)."""
    with session_scope(engine) as s:
        s.execute(update(Feed).values(next_check_at=None))


def counts(engine: Engine) -> tuple[int, int, int]:
    with Session(engine) as s:
        n_items = s.exec(select(func.count()).select_from(Item)).one()
        n_urls = s.exec(select(func.count(func.distinct(Item.url)))).one()
        n_sources = s.exec(select(func.count()).select_from(ItemSource)).one()
    return n_items, n_urls, n_sources


def requests_per_feed(server: FeedServer) -> list[int]:
    return [len(server.requests_for(f"/f{i}.xml")) for i in range(FEEDS)]


def test_three_workers_share_feeds_deliver_each_digest_once_and_survive_a_kill(
    pg_url: str, config_dir: Path, tmp_path: Path
) -> None:
    with FeedServer() as server, SmtpServer() as smtp:
        for i in range(FEEDS):
            server.add(f"/f{i}.xml", body=feed_body(i, 1), delay=0.4)
        write_config(
            config_dir,
            [{"id": f"f{i}", "url": server.url(f"/f{i}.xml"), "interval": "1h"} for i in range(FEEDS)],
        )
        (config_dir / "digests.yaml").write_text(DIGESTS, encoding="utf-8")

        engine = make_engine(pg_url)
        ensure_schema(engine)
        with session_scope(engine) as s:
            sync_feeds(s, load_config(config_dir).feeds)
            # Not due until every worker is up, so all three compete for the first cycle.
            s.execute(update(Feed).values(next_check_at=datetime.now(UTC) + timedelta(hours=1)))
            # The digest last ran three days ago: its latest slot was missed while "the service was down".
            ago = datetime.now(UTC) - timedelta(days=3)
            s.add(DigestState(name="morning", position=ago, last_run_at=ago))

        env = {"MONITOR_SMTP_URL": smtp.url()}
        workers = []
        for w in range(3):
            args = [
                "--config",
                str(config_dir),
                "--db",
                pg_url,
                "run",
                "--port",
                "0",
                "--tick",
                "0.3s",
                "--batch",
                "3",
                "--lease",
                "5s",
                "--watch",
                "0",
                "--worker",
                f"w{w}",
            ]
            workers.append(Proc(args, tmp_path / f"w{w}.log", env))
        try:
            for p in workers:
                p.port()  # up and serving

            # Cycle 1: every feed polled exactly once, by whichever worker leased it.
            make_due(engine)
            wait_until(lambda: counts(engine)[0] == FEEDS, 60, "cycle 1 stored")
            wait_until(lambda: all(n >= 1 for n in requests_per_feed(server)), 10, "cycle 1 fetched")
            assert requests_per_feed(server) == [1] * FEEDS
            assert counts(engine) == (FEEDS, FEEDS, FEEDS)
            busy = [sum(p.text().count(f"feed f{i}: 1 new") for i in range(FEEDS)) for p in workers]
            assert sum(busy) == FEEDS and sum(1 for b in busy if b) >= 2, busy  # the work was shared

            # Cycle 2: same again with one new entry per feed.
            for i in range(FEEDS):
                server.add(f"/f{i}.xml", body=feed_body(i, 2), delay=0.4)
            make_due(engine)
            wait_until(lambda: counts(engine)[0] == 2 * FEEDS, 60, "cycle 2 stored")
            assert requests_per_feed(server) == [2] * FEEDS
            assert counts(engine) == (2 * FEEDS, 2 * FEEDS, 2 * FEEDS)

            # Cycle 3: kill a worker while it holds leases; its feeds are picked up once the leases expire.
            for i in range(FEEDS):
                server.add(f"/f{i}.xml", body=feed_body(i, 3), delay=1.0)
            make_due(engine)

            def holder() -> str | None:
                with Session(engine) as s:
                    return s.exec(select(Feed.lease_owner).where(col(Feed.lease_owner).is_not(None))).first()

            victim_name = wait_until(holder, 30, "a worker holding leases")
            victim = workers[int(victim_name[1:])]
            victim.p.send_signal(signal.SIGKILL)
            victim.wait(10)
            wait_until(lambda: counts(engine)[0] == 3 * FEEDS, 90, "cycle 3 stored after the kill")
            assert counts(engine) == (3 * FEEDS, 3 * FEEDS, 3 * FEEDS)  # nothing lost, nothing twice
            assert all(n >= 3 for n in requests_per_feed(server))
            with Session(engine) as s:
                assert (
                    s.exec(select(func.count()).select_from(Feed).where(col(Feed.last_outcome) != "ok")).one()
                    == 0
                )

            # The missed digest slot: delivered once, by one of the three.
            wait_until(lambda: len(smtp.messages) >= 1, 30, "the catch-up digest")
            survivors = [p for p in workers if p is not victim]
            for p in survivors:
                p.signal(signal.SIGTERM)
            for p in survivors:
                assert p.wait(30) == 0
            assert len(smtp.messages) == 1
            with Session(engine) as s:
                delivered = s.exec(select(DigestOutbox).where(DigestOutbox.status == "delivered")).all()
            assert [d.digest for d in delivered] == ["morning"]
            logs = "".join(p.text() for p in workers)
            assert logs.count("digest morning (catch-up): delivered") == 1
        finally:
            for p in workers:
                p.close()
            engine.dispose()


def test_workers_firing_the_same_digest_slot_at_once_deliver_it_once(
    pg_url: str, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cron path: three services fire `morning` for the same slot at the same moment."""
    write_config(config_dir, [])
    (config_dir / "digests.yaml").write_text(DIGESTS, encoding="utf-8")
    engine = make_engine(pg_url)
    ensure_schema(engine)
    config = load_config(config_dir)
    slot = datetime.now(UTC) - timedelta(minutes=1)
    outcomes: list[str] = []
    with SmtpServer() as smtp:
        monkeypatch.setenv("MONITOR_SMTP_URL", smtp.url())
        services = [Service(engine, config, ServiceOptions(port=None, worker=f"w{i}")) for i in range(3)]
        barrier = threading.Barrier(3)

        def fire(svc: Service) -> None:
            barrier.wait()
            outcomes.append(svc._deliver_once("morning", slot, "schedule"))

        threads = [threading.Thread(target=fire, args=(svc,)) for svc in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == ["delivered", "skipped", "skipped"]
        assert len(smtp.messages) == 1
        # A later slot is served again.
        assert services[0]._deliver_once("morning", datetime.now(UTC), "schedule") == "delivered"
        assert len(smtp.messages) == 2
    engine.dispose()
