"""Schema and storage basics on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, inspect
from sqlmodel import Session, SQLModel, select

from monitor.search import is_search_table
from monitor.store import make_engine, upgrade
from monitor.store.migrate import current_revision, head_revision
from monitor.store.models import Feed


def test_migrations_build_exactly_the_schema_the_models_declare(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    # the search index's tables (and its covering index of item) are made by its migrations,
                    # not declared as models
                    "include_name": lambda name, _kind, _parent: not (name and is_search_table(name)),
                },
            ),
            SQLModel.metadata,
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


def test_revision_0005_moves_each_reports_grouping_reason_onto_the_item(db_url: str) -> None:
    """Before 0005 an incident's explanation held every report's reason; down and up again loses none."""
    from alembic import command
    from sqlalchemy import text

    from monitor.incidents import group_items
    from monitor.store.engine import session_scope
    from monitor.store.migrate import alembic_config
    from monitor.store.models import Incident, Item
    from tests.support.stories import MAMAI_EN, MAMAI_RU, NGO_LAW, T0, store

    eng = make_engine(db_url)
    upgrade(eng)
    ids = store(eng, [MAMAI_EN, MAMAI_RU, NGO_LAW])
    with session_scope(eng) as s:
        group_items(s, ids, now=T0)
    with session_scope(eng) as s:
        reasons = {i: s.get(Item, i).grouping for i in ids}  # type: ignore[union-attr]
    assert reasons[ids[1]]["reason"] == "names"  # type: ignore[index]

    cfg = alembic_config()
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    with eng.connect() as conn:
        assert "grouping" not in {c["name"] for c in inspect(conn).get_columns("item")}
        rows = conn.execute(text("SELECT id, explanation FROM incident ORDER BY id")).all()
    held = {
        int(k): v
        for _, explanation in rows
        for k, v in (json.loads(explanation) if isinstance(explanation, str) else explanation)[
            "items"
        ].items()
    }
    assert held == reasons

    upgrade(eng)
    with session_scope(eng) as s:
        assert {i: s.get(Item, i).grouping for i in ids} == reasons  # type: ignore[union-attr]
        for inc in s.exec(select(Incident)):
            assert set(inc.explanation) == {"rule"}
    eng.dispose()


def test_sync_feeds_adds_changes_and_drops_only_what_config_says(engine: Engine) -> None:
    from monitor.config.models import FeedConfig
    from monitor.store.feeds import add_feed, sync_feeds

    a = FeedConfig(id="a", url="https://a.example/rss", title="A", tags=["x"])
    b = FeedConfig(id="b", url="https://b.example/rss")
    gone = FeedConfig(id="gone", url="https://gone.example/rss")
    with Session(engine) as s:
        first = sync_feeds(s, [a, b, gone])
        add_feed(s, id="cli", url="https://cli.example/rss")
        s.commit()
    assert sorted(first.added) == ["a", "b", "gone"] and first.changed == first.dropped == []
    with Session(engine) as s:
        row = s.get(Feed, "b")
        assert row is not None
        row.etag, row.url = '"v1"', "https://b.example/moved"  # learnt from a 304 and a 301
        s.add(row)
        s.commit()

    with Session(engine) as s:
        same = sync_feeds(s, [a, b, gone])
        assert not s.dirty and not s.new
        s.commit()
    assert same.added == same.changed == same.dropped == []

    retitled = a.model_copy(update={"title": "A2", "tags": ["x", "y"]})
    moved = b.model_copy(update={"url": "https://b.example/new"})
    with Session(engine) as s:
        report = sync_feeds(s, [retitled, moved])
        s.commit()
    assert sorted(report.changed) == ["a", "b"] and report.dropped == ["gone"] and report.added == []
    with Session(engine) as s:
        rows = {f.id: f for f in s.exec(select(Feed)).all()}
    assert rows["a"].title == "A2" and rows["a"].tags == ["x", "y"] and rows["a"].enabled
    # An edited address wins over the redirect learnt for the old one, and its validators go with it.
    assert rows["b"].url == rows["b"].config_url == "https://b.example/new" and rows["b"].etag is None
    assert not rows["gone"].enabled and rows["cli"].enabled and rows["cli"].origin == "cli"


def _insert_via(kind: str, tmp_path: Path, table: Table, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    from monitor.store.items import _insert_many

    eng = make_engine(f"sqlite:///{tmp_path / kind}.db")
    table.metadata.create_all(eng, tables=[table])
    with eng.begin() as conn:
        if kind == "ours":
            _insert_many(conn, table, rows)
        else:
            conn.execute(table.insert(), rows)
    with eng.connect() as conn:
        stored = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY id")]
    eng.dispose()
    return stored


def test_the_direct_sqlite_insert_stores_what_sqlalchemys_insert_stores(tmp_path: Path) -> None:
    # Shared objects (converted once) beside per-row values, JSON, dates, NULLs and booleans: the raw stored
    # values must be those SQLAlchemy's own executemany writes.
    from monitor.store.models import Item

    table = Item.__table__  # type: ignore[attr-defined]
    when = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
    empty: dict[str, Any] = {}
    rows = [
        {
            "id": i,
            "feed_id": "tengrinews",
            "url": f"https://tengrinews.kz/news/{i}" if i % 3 else None,
            "title": ["Активиста задержали в Алматы", "Journalist fined", "Белсенді ұсталды"][i % 3],
            "text": "текст " * i,
            "html": "",
            "author": None,
            "language": ["ru", "en", "kk"][i % 3],
            "published": datetime(2026, 11, 1, i, tzinfo=UTC),
            "published_estimated": bool(i % 2),
            "fetched": when,
            "updated": None,
            "content_hash": f"h{i}",
            "hash_updates": 0,
            "categories": ["arrest_detention"] if i % 2 else [],
            "countries": ["KZ"],
            "matches": empty,
            "places": [{"country": "KZ", "entry": "Алматы", "field": "title"}],
            "rules_version": None,
            "incident_id": None,
            "grouping": None,
            "pruned": False,
            "display": None,
        }
        for i in range(1, 8)
    ]
    assert {c.name for c in table.c} == set(rows[0]), "the test fills every column, and only those"
    ours = _insert_via("ours", tmp_path, table, rows)
    assert ours == _insert_via("sqlalchemy", tmp_path, table, rows)
    assert len(ours) == 7 and ours[0][0] == 1


def test_the_direct_sqlite_insert_leaves_a_column_default_to_sqlalchemy(tmp_path: Path) -> None:
    table = Table(
        "counted",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", Text, nullable=False),
        Column("n", Integer, nullable=False, default=5),  # filled by SQLAlchemy, not in the rows
    )
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert _insert_via("ours", tmp_path, table, rows) == [(1, "a", 5), (2, "b", 5)]
