"""Atom feeds of items and incidents, and JSON/CSV exports."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import feedparser
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from monitor.deliver.atom import IncidentEntry, SourceLink, incidents_atom, items_atom
from monitor.deliver.exports import (
    csv_cell,
    iter_incidents,
    write_incidents_csv,
    write_incidents_json,
    write_items_csv,
    write_items_json,
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
