"""Who may do what when several processes share a database.

- SQLite: one service per database file. `InstanceLock` holds an exclusive `flock` on `<db>.lock` for the life
  of the process; the kernel drops it when the process dies, so a crash never leaves a stale lock behind.
- PostgreSQL: any number of workers. Feeds are leased row by row (monitor.ingest.poll.claim_feeds); work that
  must happen once (a digest, retention) runs under a session-level advisory lock named after it, which the
  server releases if the worker holding it dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from monitor.errors import MonitorError
from monitor.store.advisory_locks import lock_key


class InstanceLocked(MonitorError):
    """Another `monitor run` already uses this SQLite database."""


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL; None for PostgreSQL and in-memory databases."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).expanduser().resolve()


class InstanceLock:
    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.path = db_file.with_name(db_file.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                pid = int(os.pread(fd, 32, 0).decode().strip() or "0")
                holder = f" (process {pid})" if pid else ""
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise InstanceLocked(
                f"another `monitor run`{holder} is already using {self.db_file} (lock file {self.path}). "
                "An SQLite database serves one service process; to run several workers, use PostgreSQL "
                "(see deploy/README.md)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def exclusive(engine: Engine, name: str, *, timeout: float = 0.0, poll: float = 0.2) -> Iterator[bool]:
    """Hold the advisory lock `name` for the block; yields False if it could not be had within `timeout`.

    On SQLite (one process per database, see InstanceLock) it always yields True. The lock lives on a
    dedicated autocommit connection, so the work inside may commit as often as it likes.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = lock_key(name)
    deadline = time.monotonic() + timeout
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Try and retry rather than block in pg_advisory_lock, so a shutdown is never stuck behind a peer.
        while True:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            if got or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(Exception):  # a dead connection released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
