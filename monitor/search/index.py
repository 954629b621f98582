"""Keeping the index in step with the item table.

`index_items` runs inside the caller's transaction (the poll's, retention's), so an item and its index entry
are committed together or not at all. `rebuild_index` fills the index for an existing archive (its migration,
`monitor search --reindex`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from monitor.search.backends import (
    FILTER_COLUMNS,
    FILTER_INDEX,
    FTS_TABLE,
    PG_INDEX,
    PG_TABLE,
    fts5_row,
    tsvector_literals,
)
from monitor.search.text import Document, document
from monitor.store.models import Item

Db = Session | Connection
_ITEM = Item.__table__  # type: ignore[attr-defined]
_CHUNK = 500


def dialect_name(db: Db) -> str:
    bind = db.get_bind() if isinstance(db, Session) else db
    return bind.dialect.name


def create_index_tables(conn: Connection) -> None:
    """The index's tables for this database (empty); used by the migration."""
    if conn.dialect.name == "sqlite":
        version = tuple(int(p) for p in conn.execute(text("SELECT sqlite_version()")).scalar_one().split("."))
        # Contentless (the tokens are not stored a second time: the index is a third of the size) needs
        # contentless_delete, SQLite 3.43+, to replace an entry; older SQLite keeps the content.
        options = ", content='', contentless_delete=1" if version >= (3, 43) else ""
        conn.execute(
            text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(s, l, k, tokenize='ascii'{options})"
            )
        )
    else:
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {PG_TABLE} "
                "(item_id INTEGER PRIMARY KEY, doc TSVECTOR NOT NULL, head TSVECTOR NOT NULL)"
            )
        )
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON {PG_TABLE} USING GIN (doc)"))
        set_index_storage(conn)


def set_index_storage(conn: Connection) -> None:
    """How PostgreSQL keeps `head` in the rows written from now on: in the row (MAIN), compressed with lz4 where
    the server has it. ts_rank reads it for every match; by default (EXTENDED, pglz) a row being over 2 KB had
    it compressed and mostly moved to the TOAST table, so ranking a match fetched and decompressed it from
    there."""
    conn.execute(text(f"ALTER TABLE {PG_TABLE} ALTER COLUMN head SET STORAGE MAIN"))
    lz4 = conn.execute(
        text(
            "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        )
    ).scalar_one()
    if lz4:  # PostgreSQL 14+ built with lz4 (the Debian and Docker builds are)
        conn.execute(text(f"ALTER TABLE {PG_TABLE} ALTER COLUMN head SET COMPRESSION lz4"))


def create_filter_index(conn: Connection) -> None:
    """The covering index of the filter columns (backends.FILTER_INDEX). PostgreSQL has no btree order for
    JSON, so there the columns are INCLUDEd; SQLite has no INCLUDE, so there they are keys after the id."""
    cols = ", ".join(FILTER_COLUMNS)
    if conn.dialect.name == "sqlite":
        sql = f"CREATE INDEX IF NOT EXISTS {FILTER_INDEX} ON item (id, {cols})"
    else:
        sql = f"CREATE INDEX IF NOT EXISTS {FILTER_INDEX} ON item (id) INCLUDE ({cols})"
    conn.execute(text(sql))


def drop_filter_index(conn: Connection) -> None:
    conn.execute(text(f"DROP INDEX IF EXISTS {FILTER_INDEX}"))


def drop_index_tables(conn: Connection) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {FTS_TABLE if conn.dialect.name == 'sqlite' else PG_TABLE}"))


def _write(db: Db, rows: Sequence[tuple[int, str, str, str | None]]) -> None:
    """Replace the index entries of these (id, title, text, language) rows."""
    _write_documents(db, [(r[0], document(r[1], r[2], r[3])) for r in rows])


def _write_documents(db: Db, docs: Sequence[tuple[int, Document]]) -> None:
    """Replace the index entries of these items with these documents."""
    if not docs:
        return
    ids = [item_id for item_id, _ in docs]
    if dialect_name(db) == "sqlite":
        db.execute(text(f"DELETE FROM {FTS_TABLE} WHERE rowid IN ({','.join(str(int(i)) for i in ids)})"))
        # Plain strings and ints, nothing to convert: straight to the DBAPI cursor as tuples, without
        # SQLAlchemy's per-row handling of named parameters (a poll writes every new item here).
        rows = [(item_id, *fts5_row(doc)) for item_id, doc in docs]
        conn = db.connection() if isinstance(db, Session) else db
        conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE} (rowid, s, l, k) VALUES (?, ?, ?, ?)", rows)
    else:
        params: list[dict[str, Any]] = []
        for item_id, doc in docs:
            full, head = tsvector_literals(doc)
            params.append({"id": item_id, "doc": full, "head": head})
        db.execute(
            text(
                f"INSERT INTO {PG_TABLE} (item_id, doc, head) "
                "VALUES (:id, CAST(:doc AS tsvector), CAST(:head AS tsvector)) "
                "ON CONFLICT (item_id) DO UPDATE SET doc = EXCLUDED.doc, head = EXCLUDED.head"
            ),
            params,
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """An index document made ahead of the store (in the poll's language worker), with what it was made from:
    it stands for the stored item only if the item is stored with exactly this title, text and language."""

    title: str
    text: str
    language: str | None
    document: Document

    def fits(self, title: str, text: str, language: str | None) -> bool:
        return self.language == language and self.title == title and self.text == text


def prepare(title: str, text: str, language: str | None) -> Prepared:
    return Prepared(title, text, language, document(title, text, language))


def index_items(
    db: Db, item_ids: Iterable[int | None], documents: Mapping[int, Document] | None = None
) -> int:
    """(Re)index these stored items from their current title and text; returns how many were indexed.
    `documents` has the documents already made for some of them, from the values just written."""
    ids = sorted({i for i in item_ids if i is not None})
    if not ids:
        return 0
    made = documents or {}
    ready = [(i, made[i]) for i in ids if i in made]
    ids = [i for i in ids if i not in made]
    for start in range(0, len(ready), _CHUNK):
        _write_documents(db, ready[start : start + _CHUNK])
    done = len(ready)
    if ids and isinstance(db, Session):
        db.flush()  # items changed through the ORM must be read back as changed
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = db.execute(
            select(_ITEM.c.id, _ITEM.c.title, _ITEM.c.text, _ITEM.c.language).where(_ITEM.c.id.in_(chunk))
        ).all()
        _write(db, [(r[0], r[1] or "", r[2] or "", r[3]) for r in rows])
        done += len(rows)
    return done


def rebuild_index(db: Db, *, batch: int = _CHUNK) -> int:
    """Index every stored item (existing entries are replaced); returns the number of items."""
    last = 0
    total = 0
    while True:
        rows = db.execute(
            select(_ITEM.c.id, _ITEM.c.title, _ITEM.c.text, _ITEM.c.language)
            .where(_ITEM.c.id > last)
            .order_by(_ITEM.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return total
        _write(db, [(r[0], r[1] or "", r[2] or "", r[3]) for r in rows])
        last = rows[-1][0]
        total += len(rows)
