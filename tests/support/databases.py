"""Throwaway PostgreSQL databases for tests (MONITOR_TEST_PG_URL names the server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("MONITOR_TEST_PG_URL")


def fresh_pg_database(prefix: str = "monitor_test") -> Iterator[str]:
    """Create a database, yield its URL, drop it afterwards (even with connections still open)."""
    assert PG_URL, "MONITOR_TEST_PG_URL is not set"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
