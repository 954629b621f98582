"""`monitor run` as a real process: SIGTERM, the shutdown deadline, SIGHUP reload, log formats, and the SQLite
single-instance guard."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import Session, col, func, select

from monitor.store import make_engine
from monitor.store.models import Feed, Item
from tests.support.builders import dated, rss
from tests.support.feedserver import FeedServer
from tests.test_service import write_config

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """A `monitor run` subprocess whose log goes to a file the test can read while it runs."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "monitor", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=log.parent,  # the service writes ./site by default: keep it in the test folder
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, as in a terminal: see ctrl_c
        )

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.text())
            if m:
                return m
            if self.p.poll() is not None:
                raise AssertionError(
                    f"process exited ({self.p.returncode}) before {pattern!r}:\n{self.text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.text()}")

    def port(self) -> int:
        return int(self.wait_for(r"127\.0\.0\.1:(\d+)/healthz")[1])

    def signal(self, sig: int) -> None:
        self.p.send_signal(sig)

    def ctrl_c(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to every process of the group (parse workers included)."""
        os.killpg(self.p.pid, signal.SIGINT)

    def wait(self, timeout: float = 60.0) -> int:
        return self.p.wait(timeout)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(config_dir: Path, db_url: str, *extra: str, name: str = "run") -> Proc:
        args = ["--config", str(config_dir), "--db", db_url, "run", "--port", "0", "--tick", "0.3s", *extra]
        proc = Proc(args, tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_lets_the_poll_in_flight_finish_then_exits_cleanly(
    spawn: Callable[..., Proc], server: FeedServer, config_dir: Path, sqlite_url: str
) -> None:
    feeds = []
    for i in range(6):
        server.add(f"/slow{i}.xml", body=rss(dated(2, prefix=f"S{i}")), delay=1.5)
        feeds.append({"id": f"slow{i}", "url": server.url(f"/slow{i}.xml")})
    write_config(config_dir, feeds)
    proc = spawn(config_dir, sqlite_url, "--watch", "0")
    proc.port()
    wait_until(
        lambda: all(server.requests_for(f"/slow{i}.xml") for i in range(6)), what="all fetches in flight"
    )
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = proc.text()
    assert "stopping (SIGTERM): finishing poll" in log
    assert "stopped cleanly" in log
    engine = make_engine(sqlite_url)
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Item)).one() == 12  # every fetched feed stored whole
        assert s.exec(select(Feed).where(col(Feed.lease_owner).is_not(None))).all() == []
    engine.dispose()


def test_shutdown_deadline_interrupts_a_stuck_poll_keeps_what_was_stored_and_releases_leases(
    spawn: Callable[..., Proc], server: FeedServer, config_dir: Path, sqlite_url: str
) -> None:
    server.add("/fast.xml", body=rss(dated(3, prefix="F")))
    server.add("/stuck.xml", hang=True)
    write_config(
        config_dir,
        [{"id": "fast", "url": server.url("/fast.xml")}, {"id": "stuck", "url": server.url("/stuck.xml")}],
    )
    proc = spawn(config_dir, sqlite_url, "--watch", "0", "--shutdown-timeout", "1s")
    proc.wait_for("feed fast: 3 new")
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 1
    assert "shutdown deadline (1s) passed: interrupting poll" in proc.text()
    engine = make_engine(sqlite_url)
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Item)).one() == 3
        stuck = s.get(Feed, "stuck")
        assert stuck is not None and stuck.lease_owner is None and stuck.last_fetch_at is None
    engine.dispose()


def test_sighup_applies_a_valid_config_and_rejects_an_invalid_one_naming_file_and_line(
    spawn: Callable[..., Proc], server: FeedServer, config_dir: Path, sqlite_url: str
) -> None:
    server.add("/a.xml", body=rss(dated(2, prefix="A")))
    server.add("/b.xml", body=rss(dated(2, prefix="B")))
    server.add("/bad.xml", status=500)
    write_config(config_dir, [{"id": "a", "url": server.url("/a.xml")}])
    proc = spawn(config_dir, sqlite_url, "--watch", "0", "--log-format", "json")
    port = proc.port()
    proc.wait_for(r'"msg": "feed a: 2 new')

    write_config(
        config_dir,
        [
            {"id": "a", "url": server.url("/a.xml")},
            {"id": "b", "url": server.url("/b.xml")},
            {"id": "bad", "url": server.url("/bad.xml")},
        ],
    )
    proc.signal(signal.SIGHUP)
    proc.wait_for(r"configuration reloaded: 3 feeds \(2 added")
    proc.wait_for(r'"msg": "feed b: 2 new')
    proc.wait_for(r'"msg": "feed bad failed')

    feeds_file = config_dir / "feeds.yaml"
    good = feeds_file.read_text(encoding="utf-8")
    feeds_file.write_text(good + "- id: Not A Valid Id\n  url: ftp://example.org/\n", encoding="utf-8")
    lines = len(good.splitlines())
    proc.signal(signal.SIGHUP)
    proc.wait_for("config rejected")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    records = [json.loads(line) for line in proc.text().splitlines() if line.strip()]  # every line is JSON
    rejected = [r for r in records if r["msg"].startswith("config rejected")]
    assert rejected and all(r["level"] == "error" for r in rejected)
    assert {r["file"] for r in rejected} == {str(feeds_file)}
    assert {r["line"] for r in rejected} == {lines + 1, lines + 2}
    assert any("feeds.yaml:" in r["msg"] and "feed id" in r["msg"] for r in rejected)
    for r in records:
        if r["msg"].startswith("feed "):  # every line about a feed names it and its address
            assert r.get("feed") and r.get("url", "").startswith("http://127.0.0.1"), r
    bad = next(r for r in records if r["msg"].startswith("feed bad failed"))
    assert bad["feed"] == "bad" and bad["url"] == server.url("/bad.xml") and bad["level"] == "warning"


def test_human_log_names_the_feed_and_its_address(
    spawn: Callable[..., Proc], server: FeedServer, config_dir: Path, sqlite_url: str
) -> None:
    server.add("/gone.xml", status=404)
    write_config(config_dir, [{"id": "gone", "url": server.url("/gone.xml")}])
    proc = spawn(config_dir, sqlite_url, "--watch", "0")
    line = proc.wait_for(r".*feed gone failed.*")[0]
    assert "WARNING" in line and "feed=gone" in line and f"url={server.url('/gone.xml')}" in line
    proc.ctrl_c()
    assert proc.wait(30) == 0
    assert "stopped cleanly" in proc.text() and "Traceback" not in proc.text()


def test_a_second_run_on_the_same_sqlite_database_refuses_to_start(
    spawn: Callable[..., Proc], config_dir: Path, sqlite_url: str
) -> None:
    write_config(config_dir, [])
    first = spawn(config_dir, sqlite_url, "--watch", "0")
    first.port()
    second = spawn(config_dir, sqlite_url, "--watch", "0")
    assert second.wait(30) == 2
    text = second.text()
    assert "already using" in text and "monitor.db" in text and "PostgreSQL" in text
    assert first.p.poll() is None  # the first one is unaffected
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0


def test_invalid_config_at_startup_exits_2_naming_file_and_line(
    spawn: Callable[..., Proc], config_dir: Path, sqlite_url: str
) -> None:
    settings = yaml.safe_load((config_dir / "settings.yaml").read_text(encoding="utf-8"))
    text = yaml.safe_dump(settings).replace("min_interval: 10m", "min_interval: often")
    (config_dir / "settings.yaml").write_text(text, encoding="utf-8")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "often" in ln)
    proc = spawn(config_dir, sqlite_url)
    assert proc.wait(30) == 2
    assert f"settings.yaml:{line}" in proc.text()
