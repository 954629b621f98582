"""The public Python API (monitor.open / Monitor): what a script or notebook relies on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import monitor
from monitor.demo.run import _write_config
from monitor.demo.server import DemoServer
from monitor.store.queries import item_json


@pytest.fixture
def demo_config(tmp_path: Path) -> Iterator[Path]:
    with DemoServer() as srv:
        _write_config(tmp_path / "config", srv)
        yield tmp_path / "config"


@pytest.fixture
def m(demo_config: Path, db_url: str) -> Iterator[monitor.Monitor]:
    with monitor.open(config=demo_config, db=db_url) as mon:
        yield mon


def test_every_exported_name_exists_and_errors_share_one_base() -> None:
    for name in monitor.__all__:
        assert hasattr(monitor, name), name
    for err in (monitor.ConfigError, monitor.FetchError, monitor.ParseError, monitor.DeliveryError):
        assert issubclass(err, monitor.MonitorError)
    assert issubclass(monitor.NotFoundError, LookupError)


def test_open_reports_every_broken_file_at_once_with_file_and_line(config_dir: Path, sqlite_url: str) -> None:
    (config_dir / "feeds.yaml").write_text("feeds:\n  - id: a\n    url: ftp://x.org/rss\n", encoding="utf-8")
    (config_dir / "digests.yaml").write_text(
        "digests:\n  - name: daily\n    schedule: 'every morning'\n    page: {output: out}\n",
        encoding="utf-8",
    )
    with pytest.raises(monitor.ConfigErrors) as info:
        monitor.open(config=config_dir, db=sqlite_url)
    where = {(Path(e.file or "").name, e.line, e.field) for e in info.value.errors}
    assert ("feeds.yaml", 3, "feeds[0].url") in where
    assert ("digests.yaml", 3, "digests[0].schedule") in where


def test_poll_then_items_and_incidents_filter_and_match_the_export_record(m: monitor.Monitor) -> None:
    report = m.poll(all=True)
    assert not report.failed and report.new_items > 0
    items = m.items(limit=None)
    assert len(items) == report.new_items
    kz_protest = m.items(category="protest_crackdown", country="KZ", limit=None)
    assert kz_protest and all("protest_crackdown" in i.categories and "KZ" in i.countries for i in kz_protest)
    assert len(kz_protest) < len(items)
    # to_json() is the export record, field for field
    from sqlmodel import Session

    from monitor.store.models import Item as Row

    with Session(m.engine) as s:
        row = s.get(Row, items[0].id)
        assert row is not None
        expected = json.loads(json.dumps(item_json(row, list(items[0].feeds)), default=str))
    assert json.loads(json.dumps(items[0].to_json(), default=str)) == expected

    incidents = m.incidents(limit=None)
    assert incidents and sum(i.item_count for i in incidents) == sum(1 for i in items if i.incident)
    grouped = {i.id for i in items if i.incident is not None}
    assert {x for inc in incidents for x in inc.items} == grouped
    high = m.incidents(severity="high", limit=None)
    assert all(i.severity == "high" for i in high) and len(high) < len(incidents)


def test_explain_a_stored_item_names_its_incident_and_an_unknown_id_is_not_found(m: monitor.Monitor) -> None:
    m.poll(all=True)
    inc = m.incidents(limit=1)[0]
    why = m.explain(item=inc.items[0])
    assert why.item == inc.items[0] and why.incident is not None
    assert why.incident["incident"]["id"] == inc.id
    assert set(why.categories) & set(inc.categories)
    with pytest.raises(monitor.NotFoundError, match="no stored item with id 999999"):
        m.explain(item=999999)
    with pytest.raises(ValueError):
        m.explain("text", item=1)


def test_poll_works_from_inside_a_running_event_loop(m: monitor.Monitor) -> None:
    # A Jupyter cell runs inside an event loop; poll() must not need `await`.
    async def cell() -> monitor.PollResult:
        return m.poll(all=True)

    assert asyncio.run(cell()).new_items > 0


def test_digest_dry_run_returns_the_message_and_an_undelivered_one_raises_on_request(
    m: monitor.Monitor,
) -> None:
    m.poll(all=True)
    draft = m.digest("daily", dry_run=True)
    assert draft.status == "dry_run" and draft.incidents > 0
    assert draft.message is not None and b"Message-ID:" in draft.message
    assert draft.page is not None and "<html" in draft.page.lower()
    with pytest.raises(monitor.ConfigError, match="no digest named 'weekly'"):
        m.digest("weekly")
    # No MONITOR_SMTP_URL: the message waits as pending, the result says so and raises only when asked.
    sent = m.digest("daily")
    assert sent.status == "pending" and not sent.ok
    with pytest.raises(monitor.DeliveryError):
        sent.raise_for_status()


def test_reclassify_dry_run_reports_the_change_and_stores_nothing(
    m: monitor.Monitor, demo_config: Path, db_url: str
) -> None:
    m.poll(all=True)
    before = {i.id: i.categories for i in m.items(limit=None)}
    # The rules lose a category: every item that had it would lose it.
    path = demo_config / "categories.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("id: protest_crackdown", "id: protest_crackdown_renamed"), encoding="utf-8")
    with monitor.open(config=demo_config, db=db_url) as m2:
        diff = m2.reclassify(dry_run=True)
        had = sum("protest_crackdown" in c for c in before.values())
        assert had and diff.lost["protest_crackdown"] == had
        assert diff.gained["protest_crackdown_renamed"] == had
        assert {i.id: i.categories for i in m2.items(limit=None)} == before
        done = m2.reclassify()
        assert done.to_json()["categories"] == diff.to_json()["categories"]
        assert not m2.items(category="protest_crackdown", limit=None)


def test_search_finds_stored_items_with_escaped_highlights_and_names_a_malformed_query(
    m: monitor.Monitor,
) -> None:
    m.poll(all=True)
    ru = next(i for i in m.items(limit=None) if i.language == "ru" and "задерж" in (i.title + " ").lower())
    found = m.search("задержать", limit=50)
    assert ru.id in {h.item_id for h in found.hits}  # the verb's dictionary form finds its inflected forms
    hit = next(h for h in found.hits if h.item_id == ru.id)
    assert "<mark>" in hit.title_html + hit.snippet_html
    only_ru = m.search("задержать", language="ru", limit=50)
    assert only_ru.hits and all(h.language == "ru" for h in only_ru.hits)
    with pytest.raises(monitor.SearchQueryError) as info:
        m.search('"unbalanced')
    assert info.value.position is not None
    assert isinstance(info.value, monitor.MonitorError)
