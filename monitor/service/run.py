"""Starting the service: the SQLite single-instance guard, waiting for the database, loading the config.

Kept apart from the scheduler so `monitor run`, `monitor demo`, the scale-out test driver and bench/soak.py
all start the service the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from monitor.config.load import Config, collect, load_config
from monitor.errors import ConfigError
from monitor.service.scheduler import Service, ServiceOptions
from monitor.service.worker_locks import InstanceLock, sqlite_path
from monitor.store import ensure_schema, make_engine

log = logging.getLogger("monitor.service")

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid URL>"


def open_database(url: str, wait: float = 30.0) -> Engine:
    """An engine with the schema up to date; retries for `wait` seconds so a service started together with
    its database server (compose, boot) does not fail on the first refused connection."""
    engine = make_engine(url)
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            ensure_schema(engine)
            return engine
        except Exception as exc:
            if time.monotonic() >= deadline:
                engine.dispose()
                raise
            log.warning("database %s not ready (%s); retrying", safe_url(url), str(exc).splitlines()[0][:200])
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def run_service(db_url: str, config_dir: Path, options: ServiceOptions, *, db_wait: float = 30.0) -> int:
    """Run until stopped; the exit code follows the CLI's convention (2: usage/config, 1: problems)."""
    lock: InstanceLock | None = None
    db_file = sqlite_path(db_url)
    if db_file is not None:
        lock = InstanceLock(db_file)
        try:
            lock.acquire()
        except Exception as exc:
            log.error("%s", exc)
            return EXIT_USAGE
    try:
        try:
            config: Config = load_config(config_dir)
        except ConfigError as exc:
            for e in collect(exc):
                log.error("invalid configuration: %s", e.describe(), extra={"file": e.file, "line": e.line})
            return EXIT_USAGE
        try:
            engine = open_database(db_url, wait=db_wait)
        except Exception as exc:
            # Exit 1, not 2: a database that is down may come back, so a supervisor should retry.
            log.error("database %s: %s", safe_url(db_url), str(exc).splitlines()[0][:300])
            return EXIT_PROBLEMS
        log.info("database %s", safe_url(db_url), extra={"event": "database"})
        try:
            service = Service(engine, config, options)
            try:
                code = asyncio.run(service.run())
            except OSError as exc:  # typically the HTTP port is taken
                log.error("could not start: %s", exc)
                return EXIT_USAGE
            if service.abandoned:
                # Work past the deadline may sit in a thread (an SMTP exchange, a long write) that would
                # keep the interpreter alive; the database side is transactional, so leave now.
                logging.shutdown()
                import os

                os._exit(code)
            return code
        finally:
            engine.dispose()
    finally:
        if lock is not None:
            lock.release()
