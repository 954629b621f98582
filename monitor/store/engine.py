"""Engines for SQLite (the embedded default) and PostgreSQL, and schema upgrades."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

DEFAULT_DB = "sqlite:///./monitor.db"
SQLITE_CACHE_KIB = 32 * 1024  # each SQLite connection's page cache (see _sqlite_pragmas)


def resolve_db_url(option: str | None = None, settings_url: str | None = None) -> str:
    """--db, else MONITOR_DB, else settings.yaml, else ./monitor.db."""
    url = option or os.environ.get("MONITOR_DB") or settings_url or DEFAULT_DB
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # psycopg 3 is the driver we ship; a bare postgresql:// would look for psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (site build, health checks) run while a poll writes; NORMAL is durable in WAL mode
    # except for the last transactions on power loss, never corrupting.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # A page cache of 32 MiB instead of SQLite's 2 MiB: a search reads the full-text index and the filter
    # index (16 MiB for 200,000 items) and, with 2 MiB, read most of their pages from the OS again on every
    # query. It is a ceiling per connection, filled only by the pages it reads, and SQLite drops it when another
    # connection has committed since, so it holds memory only where reads repeat.
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


@contextmanager
def write_scope(engine: Engine) -> Iterator[Session]:
    """`session_scope` for a transaction that writes. On SQLite the threads of this process take turns before
    they begin: meeting at SQLite's own lock instead, a waiting writer sleeps in SQLite's busy handler (up to
    100 ms a try) long after the lock is free, and a poll with several lanes spends its time asleep."""
    if not is_sqlite(engine):
        with session_scope(engine) as session:
            yield session
        return
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.setdefault(engine, threading.Lock())
    with lock, session_scope(engine) as session:
        yield session
