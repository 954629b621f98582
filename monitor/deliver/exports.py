"""Items and incidents as JSON, CSV and XLSX, written row by row so an export of any size uses little memory.

JSON exports are arrays of the records other tools rely on (`monitor.store.queries.item_json` for items,
`incident_json` here: the columns researchers know from ACLED or the CIVICUS Monitor, README "Incident exports"). CSV flattens lists with ";" and guards against formula injection: a cell a spreadsheet
would evaluate (starting with = + - @, tab or carriage return) gets a leading apostrophe, since titles come from
untrusted feeds.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Self

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from monitor.deliver.render import CATEGORY_TITLES, COUNTRY_NAMES
from monitor.incidents.display import LEAD_CHARS
from monitor.incidents.features import CountryLevel, name_key, persons, place_keys, shipped_country_level
from monitor.store.models import Feed, Incident, Item, ItemSource
from monitor.store.queries import item_json

__all__ = [
    "INCIDENT_FIELDS",
    "ITEM_FIELDS",
    "IncidentCsv",
    "IncidentJson",
    "IncidentOptions",
    "ItemCsv",
    "JsonArray",
    "Member",
    "Workbook",
    "csv_cell",
    "export_categories",
    "incident_json",
    "incident_url",
    "iter_incidents",
    "write_incidents_csv",
    "write_incidents_json",
    "write_items_csv",
    "write_items_json",
    "write_xlsx",
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
# One row per incident (README "Incident exports"): an incident in two categories is one row with both, as a
# CIVICUS Monitor entry carries several tags; split `categories` on ";" to count per category.
INCIDENT_FIELDS = [
    "id",
    "event_date",  # first report, UTC, YYYY-MM-DD (ACLED's event_date)
    "country",  # names
    "countries",  # ISO 3166-1 alpha-2
    "location",  # places below country level the reports name (gazetteer entries)
    "category",  # titles
    "categories",  # taxonomy ids
    "severity",
    "actors",  # persons named
    "title",
    "item_count",  # number of reports
    "sources",  # outlets (feed titles) that carried the reports
    "first_seen",
    "last_seen",
    "updated_at",
    "url",
    "items",  # item ids, in publication order (items.csv)
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _iso(d: datetime) -> str:
    return (d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)).isoformat()


@dataclass(frozen=True)
class Member:
    """What an incident's export reads of one of its reports."""

    id: int
    title: str = ""
    lead: str = ""
    places: Sequence[Any] = ()  # Item.places
    outlets: Sequence[str] = ()  # titles of the feeds that carried it
    # persons(title, lead) when already known (monitor.incidents.display), else None: worked out from the text
    actors: Mapping[str, str] | None = None

    @classmethod
    def of(cls, item: Item, outlets: Sequence[str], actors: Mapping[str, str] | None = None) -> Member:
        assert item.id is not None
        return cls(
            item.id,
            item.title or "",
            (item.text or "")[:LEAD_CHARS],
            list(item.places or []),
            outlets,
            actors,
        )


def export_categories(inc: Incident) -> list[str]:
    """The categories an export gives an incident. The one place exports read them, so whatever decides an
    incident's categories for readers (analysts' verdicts) changes every export format at once."""
    return list(inc.categories)


def _latin(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and all(c.isascii() for c in letters)


def _prefer_latin(spellings: Iterable[str]) -> str:
    """A name as most researchers can read it: the first Latin spelling, else the first one."""
    seen = list(spellings)
    return next((s for s in seen if _latin(s)), seen[0])


def _places_and_actors(members: Sequence[Member], country_level: CountryLevel) -> tuple[list[str], list[str]]:
    """Places below country level (from the gazetteer's entries in each report) and persons named (two
    capitalised words in a row, as grouping reads them), each spelling-blind, the most often named first."""
    places: dict[str, list[str]] = {}
    place_count: Counter[str] = Counter()
    named: dict[str, list[str]] = {}
    person_count: Counter[str] = Counter()
    place_words: set[str] = set()
    for m in members:
        keys, _ = place_keys(list(m.places), country_level)
        for k, entry in keys.items():
            places.setdefault(k, []).append(entry)
            place_count[k] += 1
        place_words.update(
            name_key(w) for p in m.places if isinstance(p, dict) for w in str(p.get("entry") or "").split()
        )
        if not (m.title or m.lead):
            continue
        for key, written in (m.actors if m.actors is not None else persons(m.title, m.lead)).items():
            # "Nur-Sultan" reads as two capitalised words; a pair of a place's words is not a person
            if set(key.split("+")) <= place_words:
                continue
            named.setdefault(key, []).append(written)
            person_count[key] += 1
    ordered_places = sorted(places, key=lambda k: (-place_count[k], k))
    ordered_persons = sorted(named, key=lambda k: (-person_count[k], k))
    return [_prefer_latin(places[k]) for k in ordered_places], [
        _prefer_latin(named[k]) for k in ordered_persons
    ]


def incident_url(inc_id: int | None, base_url: str | None) -> str:
    """The incident's page on the site: absolute when the site's address is known, else relative to it."""
    path = f"incident/{inc_id}.html"
    return (base_url.rstrip("/") + "/" + path) if base_url else path


def incident_json(
    inc: Incident,
    members: Sequence[Member | int] = (),
    *,
    base_url: str | None = None,
    category_titles: Mapping[str, str] | None = None,
    country_level: CountryLevel | None = None,
) -> dict[str, Any]:
    """The export record of an incident (INCIDENT_FIELDS, lists as lists, and the grouping explanation).
    `members` are its reports in publication order; bare item ids give a record without places, actors and
    sources."""
    titles = {**CATEGORY_TITLES, **(category_titles or {})}
    full = [m for m in members if isinstance(m, Member)]
    ids = [m.id if isinstance(m, Member) else int(m) for m in members]
    location, actors = _places_and_actors(full, country_level or shipped_country_level())
    categories = export_categories(inc)
    countries = list(inc.countries)
    return {
        "id": inc.id,
        "event_date": _iso(inc.first_seen)[:10],
        "country": [COUNTRY_NAMES.get(c, c) for c in countries],
        "countries": countries,
        "location": location,
        "category": [titles.get(c, c) for c in categories],
        "categories": categories,
        "severity": inc.severity,
        "actors": actors,
        "title": inc.title,
        "item_count": inc.item_count,
        "sources": list(dict.fromkeys(o for m in full for o in m.outlets)),
        "first_seen": _iso(inc.first_seen),
        "last_seen": _iso(inc.last_seen),
        "updated_at": _iso(inc.updated_at),
        "url": incident_url(inc.id, base_url),
        "items": ids,
        "explanation": inc.explanation,
    }


def csv_cell(value: Any) -> str:
    # The commonest cells first (a site build writes ten per report): text, then whole numbers, which are never
    # guarded.
    t = type(value)
    if t is str:
        return "'" + value if value.startswith(_FORMULA_START) else value
    if t is int:
        return str(value)
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = ";".join(map(str, value))
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


Members = Sequence[Member] | Sequence[int]


@dataclass(frozen=True)
class IncidentOptions:
    """What an incident record needs besides the rows: where the site is, the configured titles, the gazetteer."""

    base_url: str | None = None
    category_titles: Mapping[str, str] | None = None
    country_level: CountryLevel | None = None

    def record(self, inc: Incident, members: Members) -> dict[str, Any]:
        return incident_json(
            inc,
            members,
            base_url=self.base_url,
            category_titles=self.category_titles,
            country_level=self.country_level,
        )


def write_incidents_json(
    rows: Iterable[tuple[Incident, Members]], out: IO[str], options: IncidentOptions | None = None
) -> int:
    """`rows`: (incident, its reports as Members, or bare item ids), e.g. from `iter_incidents`."""
    opts = options or IncidentOptions()
    with JsonArray(out) as arr:
        for inc, members in rows:
            arr.add(opts.record(inc, members))
    return arr.n


class IncidentCsv:
    """Incremental CSV writer, for callers that produce incidents in batches (the site build)."""

    def __init__(self, out: IO[str], options: IncidentOptions | None = None) -> None:
        self.w = csv.writer(out, lineterminator="\n")
        self.w.writerow(INCIDENT_FIELDS)
        self.options = options or IncidentOptions()
        self.n = 0

    def add(self, inc: Incident, members: Members) -> None:
        self.add_record(self.options.record(inc, members))

    def add_record(self, d: Mapping[str, Any]) -> None:
        self.w.writerow([csv_cell(d[k]) for k in INCIDENT_FIELDS])
        self.n += 1


def write_incidents_csv(
    rows: Iterable[tuple[Incident, Members]], out: IO[str], options: IncidentOptions | None = None
) -> int:
    w = IncidentCsv(out, options)
    for inc, members in rows:
        w.add(inc, members)
    return w.n


class IncidentJson(JsonArray):
    def __init__(self, out: IO[str], options: IncidentOptions | None = None) -> None:
        super().__init__(out)
        self.options = options or IncidentOptions()

    def add_incident(self, inc: Incident, members: Members) -> None:
        self.add(self.options.record(inc, members))


def iter_incidents(
    session: Session, *, batch: int = 500, with_items: bool = True
) -> Iterator[tuple[Incident, list[Member]]]:
    """Incidents that have reports, by id, with their reports in publication order; batched (keyset paging).
    Without `with_items` the lists are empty (no report is read)."""
    feeds = {f.id: f.title or f.id for f in session.exec(select(Feed))}
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
        members: dict[int, list[Member]] = {i.id: [] for i in incs if i.id is not None}
        if with_items:
            items = list(
                session.exec(
                    select(Item)
                    .options(defer(Item.html), defer(Item.matches), defer(Item.grouping))  # type: ignore[arg-type]
                    .where(col(Item.incident_id).in_(list(members)))
                    .order_by(col(Item.published), col(Item.id))
                )
            )
            outlets: dict[int, list[str]] = defaultdict(list)
            for src in session.exec(
                select(ItemSource)
                .where(col(ItemSource.item_id).in_([it.id for it in items]))
                .order_by(col(ItemSource.id))
            ):
                outlets[src.item_id].append(feeds.get(src.feed_id, src.feed_id))
            for it in items:
                if it.incident_id is not None and it.id is not None:
                    names = outlets.get(it.id) or [feeds.get(it.feed_id, it.feed_id)]
                    members[it.incident_id].append(Member.of(it, list(dict.fromkeys(names))))
        for inc in incs:
            assert inc.id is not None
            yield inc, members[inc.id]


# --- spreadsheet -------------------------------------------------------------------------------------------------

_DATE_FIELDS = {"event_date"}
_TIME_FIELDS = {"first_seen", "last_seen", "updated_at", "published", "fetched"}


def _xlsx_value(key: str, value: Any) -> Any:
    """A cell value as a spreadsheet user expects it: dates as dates (UTC, since Excel has no time zones),
    numbers as numbers, lists joined with ";", text without the control characters XML cannot carry."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if value is None:
        return None
    if key in _DATE_FIELDS and isinstance(value, str):
        return datetime.fromisoformat(value).date()
    if key in _TIME_FIELDS and isinstance(value, str):
        return datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        value = ";".join(str(v) for v in value)
    return ILLEGAL_CHARACTERS_RE.sub("", str(value))


class Workbook:
    """An .xlsx of two sheets, `incidents` (INCIDENT_FIELDS) and `items` (ITEM_FIELDS), written row by row
    (openpyxl's write-only mode keeps rows on disk, not in memory). Text cells are stored as text, never as
    formulas: a feed title "=HYPERLINK(...)" is shown, not evaluated."""

    def __init__(self) -> None:
        from openpyxl import Workbook as _Workbook

        self.wb = _Workbook(write_only=True)
        self.incidents = self.wb.create_sheet("incidents")
        self.items = self.wb.create_sheet("items")
        self.incidents.append(INCIDENT_FIELDS)
        self.items.append(ITEM_FIELDS)
        self.n_incidents = self.n_items = 0

    def _row(self, sheet: Any, fields: Sequence[str], record: Mapping[str, Any]) -> None:
        from openpyxl.cell import WriteOnlyCell

        cells = []
        for k in fields:
            cell = WriteOnlyCell(sheet, value=_xlsx_value(k, record.get(k)))
            if isinstance(cell.value, str):
                cell.data_type = "s"  # openpyxl would make "=..." a formula
            if k in _DATE_FIELDS:
                cell.number_format = "yyyy-mm-dd"
            elif k in _TIME_FIELDS:
                cell.number_format = "yyyy-mm-dd hh:mm"
            cells.append(cell)
        sheet.append(cells)

    def add_incident(self, record: Mapping[str, Any]) -> None:
        self._row(self.incidents, INCIDENT_FIELDS, record)
        self.n_incidents += 1

    def add_item(self, record: Mapping[str, Any]) -> None:
        self._row(self.items, ITEM_FIELDS, record)
        self.n_items += 1

    def save(self, out: Any) -> None:
        """`out`: a path or a binary file."""
        self.wb.save(out)


def write_xlsx(
    incidents: Iterable[tuple[Incident, Members]],
    items: Iterable[tuple[Item, list[str]]],
    out: Any,
    options: IncidentOptions | None = None,
) -> tuple[int, int]:
    """Both sheets into `out` (a path or a binary file); returns (incidents, items) written."""
    opts = options or IncidentOptions()
    wb = Workbook()
    for inc, members in incidents:
        wb.add_incident(opts.record(inc, members))
    for item, feeds in items:
        wb.add_item(item_json(item, feeds))
    wb.save(out)
    return wb.n_incidents, wb.n_items
