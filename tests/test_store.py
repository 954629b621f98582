"""Schema and storage basics on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import Session, SQLModel

from monitor.store import make_engine, upgrade
from monitor.store.migrate import current_revision, head_revision
from monitor.store.models import Feed


def test_migrations_build_exactly_the_schema_the_models_declare(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []
    assert current_revision(engine) == head_revision()


def test_upgrade_is_idempotent(db_url: str) -> None:
    eng = make_engine(db_url)
    first = upgrade(eng)
    second = upgrade(eng)
    assert first[1] == second[0] == second[1] == head_revision()
    assert "item" in inspect(eng).get_table_names()
    eng.dispose()


def test_datetimes_come_back_as_aware_utc(engine: Engine) -> None:
    when = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    with Session(engine) as s:
        s.add(Feed(id="f", url="https://e.org/f", config_url="https://e.org/f", next_check_at=when))
        s.commit()
    with Session(engine) as s:
        row = s.get(Feed, "f")
        assert row is not None and row.next_check_at == when and row.next_check_at.tzinfo is not None


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with Session(engine) as s:
        s.add(
            Feed(
                id="f",
                url="https://e.org/f",
                config_url="https://e.org/f",
                next_check_at=datetime(2026, 3, 1),
            )
        )
        with pytest.raises(Exception, match="naive datetime"):
            s.commit()


def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    eng.dispose()
