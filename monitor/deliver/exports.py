"""Items and incidents as JSON and CSV, written row by row so an export of any size uses little memory.

JSON exports are arrays of the records other tools rely on (`monitor.store.queries.item_json` for items,
`incident_json` here). CSV flattens lists with ";" and guards against formula injection: a cell a spreadsheet
would evaluate (starting with = + - @, tab or carriage return) gets a leading apostrophe, since titles come from
untrusted feeds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Self

from sqlmodel import Session, col, select

from monitor.store.models import Incident, Item
from monitor.store.queries import item_json

__all__ = [
    "INCIDENT_FIELDS",
    "ITEM_FIELDS",
    "IncidentCsv",
    "IncidentJson",
    "ItemCsv",
    "JsonArray",
    "csv_cell",
    "incident_json",
    "iter_incidents",
    "write_incidents_csv",
    "write_incidents_json",
    "write_items_csv",
    "write_items_json",
]

ITEM_FIELDS = [
    "id",
    "feed",
    "url",
    "title",
    "published",
    "fetched",
    "language",
    "categories",
    "countries",
    "incident",
]
INCIDENT_FIELDS = [
    "id",
    "title",
    "severity",
    "categories",
    "countries",
    "first_seen",
    "last_seen",
    "updated_at",
    "item_count",
    "items",
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _iso(d: datetime) -> str:
    return (d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)).isoformat()


def incident_json(inc: Incident, item_ids: Sequence[int] = ()) -> dict[str, Any]:
    """The export record of an incident: stable field names, item ids in publication order."""
    return {
        "id": inc.id,
        "title": inc.title,
        "severity": inc.severity,
        "categories": list(inc.categories),
        "countries": list(inc.countries),
        "first_seen": _iso(inc.first_seen),
        "last_seen": _iso(inc.last_seen),
        "updated_at": _iso(inc.updated_at),
        "item_count": inc.item_count,
        "items": list(item_ids),
        "explanation": inc.explanation,
    }


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = ";".join(str(v) for v in value)
    s = str(value)
    # Numbers that merely look like formulas ("-3") are left alone only when they are numbers in our records.
    if s.startswith(_FORMULA_START) and not isinstance(value, int | float):
        return "'" + s
    return s


class JsonArray:
    """Writes `[`, records separated by commas, `]` - one record per line, never the whole list in memory."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.n = 0

    def __enter__(self) -> Self:
        self.out.write("[")
        return self

    def add(self, record: dict[str, Any]) -> None:
        self.out.write(("," if self.n else "") + "\n  " + json.dumps(record, ensure_ascii=False, default=str))
        self.n += 1

    def __exit__(self, *exc: object) -> None:
        self.out.write("\n]\n" if self.n else "]\n")


def write_items_json(rows: Iterable[tuple[Item, list[str]]], out: IO[str]) -> int:
    """`rows` as from `monitor.store.queries.iter_items`; returns how many were written."""
    with JsonArray(out) as arr:
        for item, feeds in rows:
            arr.add(item_json(item, feeds))
    return arr.n


class ItemCsv:
    """Incremental CSV writer of item export records."""

    def __init__(self, out: IO[str]) -> None:
        self.w = csv.writer(out, lineterminator="\n")
        self.w.writerow(ITEM_FIELDS)
        self.n = 0

    def add_record(self, d: dict[str, Any]) -> None:
        self.w.writerow([csv_cell(d[k]) for k in ITEM_FIELDS])
        self.n += 1


def write_items_csv(rows: Iterable[tuple[Item, list[str]]], out: IO[str]) -> int:
    w = ItemCsv(out)
    for item, feeds in rows:
        w.add_record(item_json(item, feeds))
    return w.n


def write_incidents_json(rows: Iterable[tuple[Incident, Sequence[int]]], out: IO[str]) -> int:
    """`rows`: (incident, its item ids)."""
    with JsonArray(out) as arr:
        for inc, ids in rows:
            arr.add(incident_json(inc, ids))
    return arr.n


class IncidentCsv:
    """Incremental CSV writer, for callers that produce incidents in batches (the site build)."""

    def __init__(self, out: IO[str]) -> None:
        self.w = csv.writer(out, lineterminator="\n")
        self.w.writerow(INCIDENT_FIELDS)
        self.n = 0

    def add(self, inc: Incident, ids: Sequence[int]) -> None:
        d = incident_json(inc, ids)
        self.w.writerow([csv_cell(d[k]) for k in INCIDENT_FIELDS])
        self.n += 1


def write_incidents_csv(rows: Iterable[tuple[Incident, Sequence[int]]], out: IO[str]) -> int:
    w = IncidentCsv(out)
    for inc, ids in rows:
        w.add(inc, ids)
    return w.n


class IncidentJson(JsonArray):
    def add_incident(self, inc: Incident, ids: Sequence[int]) -> None:
        self.add(incident_json(inc, ids))


def iter_incidents(
    session: Session, *, batch: int = 500, with_items: bool = True
) -> Iterator[tuple[Incident, list[int]]]:
    """Incidents that have reports, by id, with their item ids in publication order; batched (keyset paging)."""
    last = 0
    while True:
        incs = list(
            session.exec(
                select(Incident)
                .where(col(Incident.id) > last, col(Incident.item_count) > 0)
                .order_by(col(Incident.id))
                .limit(batch)
            )
        )
        if not incs:
            return
        last = incs[-1].id or last
        members: dict[int, list[int]] = {i.id: [] for i in incs if i.id is not None}
        if with_items:
            q = (
                select(Item.id, Item.incident_id)
                .where(col(Item.incident_id).in_(list(members)))
                .order_by(col(Item.published), col(Item.id))
            )
            for item_id, inc_id in session.exec(q):
                if inc_id is not None and item_id is not None:
                    members[inc_id].append(item_id)
        for inc in incs:
            assert inc.id is not None
            yield inc, members[inc.id]
