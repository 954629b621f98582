"""Atom feeds of items and incidents, and JSON/CSV exports."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import feedparser
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from monitor.deliver.atom import IncidentEntry, SourceLink, incidents_atom, items_atom
from monitor.deliver.exports import (
    INCIDENT_FIELDS,
    ITEM_FIELDS,
    IncidentOptions,
    csv_cell,
    iter_incidents,
    write_incidents_csv,
    write_incidents_json,
    write_items_csv,
    write_items_json,
    write_xlsx,
)
from monitor.incidents import group_items
from monitor.store.engine import session_scope
from monitor.store.models import Item
from monitor.store.queries import iter_items
from tests.support.contracts import EXPORT_ITEM_FIELDS
from tests.support.stories import MAMAI_EN, MAMAI_KK, MAMAI_RU, NGO_LAW, T0, hostile_story, store

NOW = T0 + timedelta(days=3)


def stored_items(engine: Engine) -> list[Item]:
    with session_scope(engine) as s:
        return list(s.exec(select(Item).order_by(Item.id)))  # type: ignore[arg-type]


def test_items_atom_parses_without_bozo_and_keeps_the_fields(engine: Engine) -> None:
    weird = replace(NGO_LAW, title="Control \x01chars\x0b and \ufffe in a title", text="x\x08y")
    store(engine, [MAMAI_EN, MAMAI_RU, MAMAI_KK, weird, hostile_story("http://127.0.0.1:9")])
    doc = items_atom(stored_items(engine))
    d = feedparser.parse(doc.encode())
    assert not d.bozo, d.get("bozo_exception")
    assert d.version == "atom10" and len(d.entries) == 5
    ru = d.entries[1]
    assert ru.title == MAMAI_RU.title
    assert ru.link.startswith("https://feed-ru.example.org/")
    assert [t.term for t in ru.tags] == ["protest_crackdown"]
    assert ru.published_parsed[:4] == (2026, 11, 20, 14)
    assert d.entries[3].title == "Control chars and  in a title"
    hostile = d.entries[4]
    assert "link" not in hostile or not hostile.link.startswith(
        "javascript"
    )  # a javascript: url gets no link
    content = hostile.content[0].value
    assert (
        "<script" not in content
        and "onerror" not in content
        and "<img" not in content
        and "<iframe" not in content
    )


def test_incidents_atom_links_to_pages_and_parses() -> None:
    inc = IncidentEntry(
        id=7,
        title="Journalist <detained> & charged",
        categories=["prosecution"],
        countries=["KZ"],
        severity="high",
        first_seen=T0,
        last_seen=T0 + timedelta(hours=5),
        updated_at=T0 + timedelta(hours=6),
        item_count=2,
        sources=[
            SourceLink("Report one", "https://a.example.org/1", "A News"),
            SourceLink("Report <two>", "javascript:alert(1)", "B News"),
        ],
    )
    doc = incidents_atom([inc], base_url="https://m.example.org")
    d = feedparser.parse(doc.encode())
    assert not d.bozo
    e = d.entries[0]
    assert e.title == "Journalist <detained> & charged"
    assert e.link == "https://m.example.org/incident/7.html"
    assert e.id.endswith(":incident:7")
    html = e.content[0].value
    assert 'href="https://a.example.org/1"' in html and "javascript" not in html
    assert "Report &lt;two&gt;" in html
    # relative links when the site's address is not known (resolved against the feed's own URL)
    rel = feedparser.parse(
        incidents_atom([inc]).encode(), response_headers={"content-location": "https://x.org/s/"}
    )
    assert rel.entries[0].link == "https://x.org/s/incident/7.html"


def test_items_json_and_csv_exports(engine: Engine) -> None:
    evil = replace(NGO_LAW, title='=HYPERLINK("http://evil.example")', also_in=["feed-wire"])
    ids = store(engine, [MAMAI_EN, MAMAI_RU, evil])
    with session_scope(engine) as s:
        group_items(s, ids, now=NOW)
        buf = io.StringIO()
        assert write_items_json(iter_items(s), buf) == 3
        data = json.loads(buf.getvalue())
        c = io.StringIO()
        write_items_csv(iter_items(s), c)
    by_id = {d["id"]: d for d in data}
    assert by_id[ids[2]]["feeds"] == ["feed-en", "feed-wire"]
    assert by_id[ids[0]]["incident"] == by_id[ids[1]]["incident"] is not None
    assert by_id[ids[0]]["grouping"]["reason"] == "first"
    assert by_id[ids[1]]["grouping"]["reason"] == "names"
    for key in EXPORT_ITEM_FIELDS:
        assert key in by_id[ids[0]]
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(c.getvalue()))}
    assert rows[str(ids[2])]["title"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never evaluates it
    assert rows[str(ids[0])]["categories"] == "protest_crackdown;prosecution"


def test_incident_exports_stream_in_batches(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, MAMAI_RU, NGO_LAW, replace(NGO_LAW, hours=200)])
    with session_scope(engine) as s:
        group_items(s, ids, now=NOW)
        rows = list(iter_incidents(s, batch=1))
        j, c = io.StringIO(), io.StringIO()
        assert write_incidents_json(rows, j) == 3
        write_incidents_csv(rows, c)
    data = json.loads(j.getvalue())
    assert [d["items"] for d in data] == [[ids[0], ids[1]], [ids[2]], [ids[3]]]
    assert data[0]["explanation"]["rule"].startswith("same category")
    table = list(csv.DictReader(io.StringIO(c.getvalue())))
    assert [r["items"] for r in table] == [f"{ids[0]};{ids[1]}", str(ids[2]), str(ids[3])]
    assert table[0]["severity"] == "high" and table[1]["severity"] == "medium"


def test_csv_cell_guards_formulas_but_not_numbers() -> None:
    assert csv_cell("=1+1") == "'=1+1"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("-x") == "'-x"
    assert csv_cell(-3) == "-3"
    assert csv_cell(None) == ""
    assert csv_cell(["a", "b"]) == "a;b"
    assert csv_cell("plain") == "plain"


def test_export_command_writes_atom(tmp_path: Path, config_dir: Path, sqlite_url: str) -> None:
    import monitor.cli.ingest  # noqa: F401 - registers `export`
    from monitor.cli.app import app
    from monitor.store import ensure_schema, make_engine

    engine = make_engine(sqlite_url)
    ensure_schema(engine)
    store(engine, [MAMAI_EN, MAMAI_RU])
    engine.dispose()
    r = CliRunner().invoke(
        app, ["--config", str(config_dir), "--db", sqlite_url, "export", "--format", "atom"]
    )
    assert r.exit_code == 0, r.output
    d = feedparser.parse(r.stdout.encode())
    assert not d.bozo and len(d.entries) == 2


# --- incident exports researchers expect --------------------------------------------------------------------------


def readme_columns() -> list[str]:
    """The incident export columns as README documents them (the table under "Incident exports")."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Incident exports", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, re.M)


def grouped_with_places(engine: Engine) -> tuple[list[int], dict[int, int]]:
    """The Mamai detention (English, Russian, Kazakh; the English one also on the wire), the NGO law, and an item
    whose title a spreadsheet would evaluate; the gazetteer's finds set as the classifier stores them."""
    evil = replace(
        NGO_LAW, title='=HYPERLINK("http://evil.example","x") \x01law', hours=300, text="No names here."
    )
    ids = store(engine, [replace(MAMAI_EN, also_in=["feed-wire"]), MAMAI_RU, MAMAI_KK, NGO_LAW, evil])
    places = {
        ids[0]: [
            {"country": "KZ", "entry": "Almaty", "field": "title"},
            {"country": "KZ", "entry": "Kazakhstan", "field": "text"},
        ],
        ids[1]: [{"country": "KZ", "entry": "Алматы", "field": "text"}],
        ids[3]: [{"country": "KZ", "entry": "Mazhilis", "field": "text"}],
    }
    with session_scope(engine) as s:
        for item in s.exec(select(Item)):
            item.places = places.get(item.id or 0, [])
            s.add(item)
        s.flush()
        assigned = group_items(s, ids, now=NOW).assigned
    return ids, assigned


def test_incident_export_has_the_documented_columns(engine: Engine) -> None:
    documented = readme_columns()
    assert documented == INCIDENT_FIELDS  # every column documented, in the order the file has them
    ids, assigned = grouped_with_places(engine)
    with session_scope(engine) as s:
        c = io.StringIO()
        write_incidents_csv(iter_incidents(s), c, IncidentOptions(base_url="https://m.example.org/site/"))
    reader = csv.DictReader(io.StringIO(c.getvalue()))
    assert reader.fieldnames == documented
    rows = {int(r["id"]): r for r in reader}
    mamai = rows[assigned[ids[0]]]
    assert mamai["event_date"] == "2026-11-20"
    assert mamai["country"] == "Kazakhstan" and mamai["countries"] == "KZ"
    # one place in two spellings; the country-level "Kazakhstan" is not one
    assert mamai["location"] == "Almaty"
    assert mamai["category"] == "Prosecution;Protest crackdown"
    assert mamai["categories"] == "prosecution;protest_crackdown"
    assert mamai["severity"] == "high"
    assert (
        mamai["actors"].split(";")[0] == "Zhanbolat Mamai"
    )  # named in all three languages, written in Latin
    assert mamai["item_count"] == "3"
    assert mamai["sources"] == "FEED-EN News;FEED-WIRE News;FEED-RU News;FEED-KK News"
    assert mamai["first_seen"].startswith("2026-11-20T09:00:00") and mamai["last_seen"] > mamai["first_seen"]
    assert mamai["url"] == f"https://m.example.org/site/incident/{mamai['id']}.html"
    assert mamai["items"] == ";".join(str(i) for i in ids[:3])
    law = rows[assigned[ids[3]]]
    assert law["location"] == "Mazhilis" and law["actors"] == ""
    evil = rows[assigned[ids[4]]]
    assert evil["title"].startswith("'=HYPERLINK(")  # shown by a spreadsheet, never evaluated


def test_incident_json_round_trips_with_lists(engine: Engine) -> None:
    ids, assigned = grouped_with_places(engine)
    with session_scope(engine) as s:
        j = io.StringIO()
        assert write_incidents_json(iter_incidents(s, batch=2), j) == 3
    data = {d["id"]: d for d in json.loads(j.getvalue())}
    mamai = data[assigned[ids[0]]]
    assert set(INCIDENT_FIELDS) <= set(mamai)
    assert mamai["category"] == ["Prosecution", "Protest crackdown"] and mamai["location"] == ["Almaty"]
    assert (
        mamai["url"] == f"incident/{mamai['id']}.html"
    )  # relative to the site when its address is not known
    assert mamai["explanation"]["rule"].startswith("same category")
    evil = data[assigned[ids[4]]]
    assert evil["title"] == '=HYPERLINK("http://evil.example","x") \x01law'  # JSON keeps the text as it came


def test_xlsx_has_incidents_and_items_sheets(engine: Engine, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    ids, assigned = grouped_with_places(engine)
    path = tmp_path / "export.xlsx"
    with session_scope(engine) as s:
        assert write_xlsx(iter_incidents(s), iter_items(s), path) == (3, 5)
    wb = load_workbook(path)
    assert wb.sheetnames == ["incidents", "items"]
    inc_rows = list(wb["incidents"].iter_rows(values_only=True))
    assert list(inc_rows[0]) == INCIDENT_FIELDS
    by_id = {r[0]: dict(zip(INCIDENT_FIELDS, r, strict=True)) for r in inc_rows[1:]}
    mamai = by_id[assigned[ids[0]]]
    assert mamai["event_date"] == datetime(2026, 11, 20)  # a date cell, not text
    assert mamai["first_seen"] == datetime(2026, 11, 20, 9, 0)  # UTC
    assert mamai["item_count"] == 3 and mamai["location"] == "Almaty"
    evil_cell = next(
        c for c in wb["incidents"]["J"] if isinstance(c.value, str) and c.value.startswith("=HYPERLINK")
    )
    assert evil_cell.data_type == "s"  # text, never a formula
    assert (
        evil_cell.value == '=HYPERLINK("http://evil.example","x") law'
    )  # the control character XML cannot hold
    item_rows = list(wb["items"].iter_rows(values_only=True))
    assert list(item_rows[0]) == ITEM_FIELDS and len(item_rows) == 6
    assert {r[0] for r in item_rows[1:]} == set(ids)


def test_export_command_writes_incidents_and_xlsx(tmp_path: Path, config_dir: Path, sqlite_url: str) -> None:
    import monitor.cli.ingest  # noqa: F401 - registers `export`
    from monitor.cli.app import app
    from monitor.store import ensure_schema, make_engine

    engine = make_engine(sqlite_url)
    ensure_schema(engine)
    ids, assigned = grouped_with_places(engine)
    engine.dispose()
    base = ["--config", str(config_dir), "--db", sqlite_url, "export"]
    r = CliRunner().invoke(
        app, [*base, "--incidents", "--format", "csv", "--base-url", "https://m.example.org"]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3 and rows[0]["url"].startswith("https://m.example.org/incident/")
    r = CliRunner().invoke(app, [*base, "--incidents", "--format", "json"])
    assert r.exit_code == 0 and {d["id"] for d in json.loads(r.stdout)} == set(assigned.values())
    r = CliRunner().invoke(app, [*base, "--format", "json"])  # items, as before
    assert r.exit_code == 0 and sorted(d["id"] for d in json.loads(r.stdout)) == sorted(ids)
    out = tmp_path / "all.xlsx"
    r = CliRunner().invoke(app, [*base, "--format", "xlsx", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from openpyxl import load_workbook

    wb = load_workbook(out)
    assert wb["incidents"].max_row == 4 and wb["items"].max_row == 6
    r = CliRunner().invoke(app, [*base, "--format", "xlsx"])  # a binary file needs a name
    assert r.exit_code == 2 and "--out" in r.output
    r = CliRunner().invoke(app, [*base, "--incidents", "--format", "atom"])
    assert r.exit_code == 2
