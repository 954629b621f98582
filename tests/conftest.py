"""Shared fixtures: databases (SQLite always, PostgreSQL when MONITOR_TEST_PG_URL is set), configs, feed server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from monitor.config.load import packaged_dir
from monitor.store import ensure_schema, make_engine
from tests.support.databases import PG_URL, fresh_pg_database

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Runs the test once on an SQLite file and once on PostgreSQL (skipped when no server is configured)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'monitor.db'}"
        return
    if not PG_URL:
        pytest.skip("set MONITOR_TEST_PG_URL to run the PostgreSQL variant (.ci/run does)")
    yield from fresh_pg_database()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    ensure_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'monitor.db'}"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A writable copy of the packaged config, with no feeds (tests add their own)."""
    target = tmp_path / "config"
    shutil.copytree(packaged_dir("config"), target)
    (target / "feeds.yaml").write_text("feeds: []\n", encoding="utf-8")
    return target


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # One cache for the session (rule expansions are costly to build), never the developer's own.
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests must not pick up a developer's own settings.
    for var in (
        "MONITOR_CONFIG",
        "MONITOR_DB",
        "MONITOR_SMTP_URL",
        "MONITOR_HTTP_PORT",
        "MONITOR_ALLOW_PRIVATE_NETWORKS",
    ):
        monkeypatch.delenv(var, raising=False)
