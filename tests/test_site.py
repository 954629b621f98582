"""The static site: files, Atom, escaping, templates - and in headless Chromium, what a reader actually gets."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from sqlalchemy import Engine
from sqlmodel import col
from typer.testing import CliRunner

from monitor.deliver.site import build_site, highlight
from monitor.incidents import group_items
from monitor.store import ensure_schema, make_engine
from monitor.store.engine import session_scope
from tests.support.browser import Browser, StaticServer, chromium_path
from tests.support.html import start_tags
from tests.support.stories import (
    MAMAI_EN,
    MAMAI_EN_REPRINT,
    MAMAI_KK,
    MAMAI_RU,
    NGO_LAW,
    OTHER_DETENTION,
    OTHER_DETENTION_RU,
    T0,
    Story,
    hit_matches,
    hostile_story,
    store,
)

NOW = T0 + timedelta(days=3)
HOSTILE_TITLE_START = "<script>document.title"


def fixture_stories(beacon: str) -> list[Story]:
    stories = [MAMAI_EN, MAMAI_EN_REPRINT, MAMAI_RU, MAMAI_KK, OTHER_DETENTION, OTHER_DETENTION_RU, NGO_LAW]
    out = []
    for st in stories:
        term = {"en": "detained", "ru": "задержали", "kk": "ұсталды"}[st.language]
        if st is NGO_LAW:
            term = "amendments"
        out.append(
            Story(**{**st.__dict__, "matches": None, "also_in": ["feed-wire"] if st is MAMAI_EN else []})
        )
        out[-1].matches = hit_matches(out[-1], term)
    out.append(hostile_story(beacon))
    return out


@dataclass
class Built:
    out: Path
    ids: list[int]  # item ids in fixture_stories order
    incidents: dict[int, int]  # item id -> incident id


def build(engine: Engine, out: Path, beacon: str = "http://127.0.0.1:9", **kw: object) -> Built:
    ids = store(engine, fixture_stories(beacon))
    with session_scope(engine) as s:
        assigned = group_items(s, ids, now=NOW).assigned
    build_site(engine, out, now=NOW, **kw)  # type: ignore[arg-type]
    return Built(out, ids, assigned)


# --- without a browser -------------------------------------------------------------------------------------------


def test_site_has_index_feed_pages_and_exports(engine: Engine, tmp_path: Path) -> None:
    b = build(engine, tmp_path / "site")
    out = b.out
    incidents = sorted(set(b.incidents.values()))
    assert len(incidents) == 4  # Mamai (4 reports, 3 languages), Utepova (2), the NGO law, the hostile item
    for name in (
        "index.html",
        "feed.atom",
        "site.css",
        "site.js",
        "categories.html",
        "archive.html",
        "digests.html",
    ):
        assert (out / name).is_file(), name
    for i in incidents:
        assert (out / "incident" / f"{i}.html").is_file()
    for c in ("protest_crackdown", "prosecution", "restrictive_law", "funding_restriction"):
        assert (out / "category" / f"{c}.html").is_file()
    assert (out / "archive" / "2026-11.html").is_file()

    index = (out / "index.html").read_text(encoding="utf-8")
    assert index.count('<li class="incident') == 4
    assert "Journalist detained in Almaty after rally" in index

    mamai = (out / "incident" / f"{b.incidents[b.ids[0]]}.html").read_text(encoding="utf-8")
    for st in (MAMAI_EN, MAMAI_RU, MAMAI_KK):
        assert st.title.replace("«", "&laquo;") in mamai or st.title in mamai
    assert "WIRE News" in mamai  # the second feed carrying the first report
    assert "<mark>задержали</mark>" in mamai  # the matched term, highlighted in its snippet
    assert "same names" in mamai  # why the Russian report joined

    data = json.loads((out / "incidents.json").read_text(encoding="utf-8"))
    assert sorted(d["id"] for d in data) == incidents
    big = next(d for d in data if d["id"] == b.incidents[b.ids[0]])
    assert big["item_count"] == 4 and big["items"][0] == b.ids[0] and big["countries"] == ["KZ"]
    rows = list(csv.DictReader((out / "incidents.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and {r["id"] for r in rows} == {str(i) for i in incidents}
    items = json.loads((out / "items.json").read_text(encoding="utf-8"))
    assert len(items) == len(b.ids) and all(i["incident"] in incidents for i in items)
    item_rows = list(csv.DictReader((out / "items.csv").open(encoding="utf-8")))
    assert len(item_rows) == len(b.ids)


def test_feed_atom_is_valid_and_lists_incidents(engine: Engine, tmp_path: Path) -> None:
    b = build(engine, tmp_path / "site", base_url="https://monitor.example.org/site/")
    d = feedparser.parse((b.out / "feed.atom").read_bytes())
    assert not d.bozo, d.get("bozo_exception")
    assert d.version == "atom10"
    assert len(d.entries) == 4
    assert {e.link for e in d.entries} == {
        f"https://monitor.example.org/site/incident/{i}.html" for i in set(b.incidents.values())
    }
    hostile = next(e for e in d.entries if e.title.startswith(HOSTILE_TITLE_START))
    assert hostile.title.startswith("<script>")  # kept as text: it is the reader's to escape, not ours to run
    assert (
        "PWNED" not in hostile.content[0].value.split("<a", 1)[0] or "<script" not in hostile.content[0].value
    )


def test_feed_content_cannot_inject_markup(engine: Engine, tmp_path: Path) -> None:
    b = build(engine, tmp_path / "site", beacon="http://127.0.0.1:9/beacon")
    for page in [b.out / "index.html", *sorted((b.out / "incident").glob("*.html"))]:
        for tag, attrs in start_tags(page):
            if tag == "img" and re.fullmatch(r"(\.\./)*charts/[a-z0-9_-]+\.svg", attrs.get("src") or ""):
                continue  # our own charts (monitor.deliver.charts), never a feed's picture
            assert tag not in {
                "iframe",
                "img",
                "svg",
                "object",
                "embed",
                "style",
                "video",
                "base",
                "textarea",
            }, (
                page,
                tag,
            )
            if tag in {"form", "input", "select", "button"}:  # only the index's own filter form
                assert page.name == "index.html" and (attrs.get("id") or "").startswith("f"), (
                    page,
                    tag,
                    attrs,
                )
            if tag == "script":
                assert attrs == {"src": "site.js"} or attrs == {"src": "../site.js"}, (page, attrs)
            if tag == "link":
                assert attrs.get("href") in {"site.css", "feed.atom", "favicon.svg"} | {
                    "../site.css",
                    "../feed.atom",
                    "../favicon.svg",
                }, attrs
            if tag == "meta" and attrs.get("http-equiv"):
                assert attrs["http-equiv"] == "Content-Security-Policy"
            for name, value in attrs.items():
                assert not name.startswith("on"), (page, tag, name)
                assert name not in {"style", "srcdoc", "formaction", "background", "poster"}, (
                    page,
                    tag,
                    name,
                )
                if name in {"href", "src", "action"}:
                    assert value and not re.match(r"\s*(javascript|data|vbscript):", value, re.I), (
                        page,
                        value,
                    )
        text = page.read_text(encoding="utf-8")
        # every feed-supplied external link carries the rel that stops referrer and opener leaks
        for m in re.finditer(r'<a href="(https?://[^"]+)"([^>]*)>', text):
            assert 'rel="nofollow noopener noreferrer"' in m.group(2), m.group(0)


def test_every_page_has_the_csp_viewport_and_charset(engine: Engine, tmp_path: Path) -> None:
    b = build(engine, tmp_path / "site")
    pages = sorted(b.out.rglob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        metas = [a for t, a in start_tags(page) if t == "meta"]
        csp = next(a["content"] for a in metas if a.get("http-equiv") == "Content-Security-Policy")
        assert csp is not None and "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert any(
            a.get("name") == "viewport" and "width=device-width" in (a.get("content") or "") for a in metas
        )
        assert any(a.get("charset") == "utf-8" for a in metas)


def test_user_templates_override_packaged_ones_by_name(engine: Engine, tmp_path: Path) -> None:
    own = tmp_path / "templates" / "site"
    own.mkdir(parents=True)
    (own / "list.html").write_text(
        '{% extends "site/base.html" %}{% block main %}<h1 class="mine">{{ heading }}: {{ rows|length }}</h1>'
        "{% endblock %}",
        encoding="utf-8",
    )
    (own / "site.css").write_text("body { color: #123456; }\n", encoding="utf-8")
    b = build(engine, tmp_path / "site", templates=tmp_path / "templates")
    assert (
        '<h1 class="mine">Protest crackdown: 3</h1>'
        in (b.out / "category/protest_crackdown.html").read_text()
    )
    assert (b.out / "site.css").read_text() == "body { color: #123456; }\n"
    assert "Recent incidents" in (b.out / "index.html").read_text()  # not overridden: the packaged one


def test_digests_folder_is_listed_in_the_archive(engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "site"
    (out / "digests").mkdir(parents=True)
    (out / "digests" / "daily-2026-11-21.html").write_text("<p>d1</p>", encoding="utf-8")
    (out / "digests" / "daily-2026-11-22.html").write_text("<p>d2</p>", encoding="utf-8")
    (out / "digests" / "notes.txt").write_text("not a digest", encoding="utf-8")
    os.utime(out / "digests" / "daily-2026-11-21.html", (1_700_000_000, 1_700_000_000))
    build(engine, out)
    links = [
        a["href"] for t, a in start_tags(out / "digests.html") if t == "a" and "digests/" in (a["href"] or "")
    ]
    assert links == ["digests/daily-2026-11-22.html", "digests/daily-2026-11-21.html"]
    assert (out / "digests" / "daily-2026-11-22.html").read_text() == "<p>d2</p>"  # left alone


def test_site_build_command(tmp_path: Path, config_dir: Path) -> None:
    import monitor.cli.site  # noqa: F401 - registers `site` (until monitor/cli/__init__ lists it)
    from monitor.cli.app import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    ensure_schema(engine)
    ids = store(engine, [MAMAI_EN, MAMAI_RU])
    with session_scope(engine) as s:
        group_items(s, ids, now=NOW)
    engine.dispose()
    out = tmp_path / "www"
    r = CliRunner().invoke(
        app, ["--config", str(config_dir), "--db", url, "site", "build", "--out", str(out), "--json"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["incidents"] == 1 and report["items"] == 2
    assert "index.html" in report["files"] and "feed.atom" in report["files"]
    assert (out / "incident" / "1.html").is_file()


def test_empty_database_builds_an_empty_site(engine: Engine, tmp_path: Path) -> None:
    report = build_site(engine, tmp_path / "site", now=NOW)
    assert report.incidents == 0
    assert "No incidents." in (tmp_path / "site" / "index.html").read_text()
    d = feedparser.parse((tmp_path / "site" / "feed.atom").read_bytes())
    assert not d.bozo and d.entries == []
    assert json.loads((tmp_path / "site" / "incidents.json").read_text()) == []


@pytest.mark.parametrize(
    ("snippet", "needles", "marked"),
    [
        ("police detained him", ["Detained"], "detained"),
        ("Полиция задержала его", ["задержала"], "задержала"),
        ("nothing here", ["absent"], None),
        ("Straße closed", ["strasse"], None),  # casefold changes lengths: no mark rather than a wrong one
    ],
)
def test_highlight_marks_the_hit_without_touching_markup(
    snippet: str, needles: list[str], marked: str | None
) -> None:
    parts = highlight(snippet, needles)
    assert "".join(p for p, _ in parts) == snippet
    assert [p for p, m in parts if m] == ([marked] if marked else [])


# --- in headless Chromium ---------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)"
)


@dataclass
class Served:
    built: Built
    site: StaticServer
    beacon: StaticServer

    def url(self, path: str) -> str:
        return f"{self.site.url}/{path}"

    def incident_of(self, story_index: int) -> int:
        return self.built.incidents[self.built.ids[story_index]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    engine = make_engine(f"sqlite:///{tmp / 'site.db'}")
    ensure_schema(engine)
    with StaticServer(None) as beacon:
        built = build(engine, tmp / "site", beacon=beacon.url + "/beacon")
        engine.dispose()
        with StaticServer(tmp / "site") as site:
            yield Served(built, site, beacon)


def visible(page: object, selector: str = "#incidents li.incident") -> int:
    return int(
        page.evaluate(  # type: ignore[attr-defined]
            f"Array.from(document.querySelectorAll({json.dumps(selector)})).filter(e => e.offsetParent !== null).length"
        )
    )


@needs_chromium
def test_index_renders_every_incident_without_console_errors(browser: Browser, served: Served) -> None:
    page = browser.page()
    page.goto(served.url("index.html"))
    assert page.evaluate("document.title") == "Civic-space monitor"
    assert visible(page) == 4
    titles = page.evaluate(
        "Array.from(document.querySelectorAll('li.incident a.title')).map(a => a.textContent)"
    )
    assert "Journalist detained in Almaty after rally" in titles
    assert page.evaluate("document.getElementById('filters').hidden") is False  # site.js ran (CSP allows it)
    assert page.evaluate("document.getElementById('f-count').value") == "4 of 4 shown"
    assert page.errors() == []
    assert served.beacon.requests == []
    page.close()


@needs_chromium
def test_index_filters_by_category_country_and_date(browser: Browser, served: Served) -> None:
    page = browser.page()
    page.goto(served.url("index.html"))

    def choose(field: str, value: str) -> None:
        page.evaluate(
            f"(() => {{ const f = document.getElementById('f-{field}'); f.value = {json.dumps(value)};"
            "f.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )

    choose("category", "restrictive_law")
    assert visible(page) == 1
    assert page.evaluate("document.getElementById('f-count').value") == "1 of 4 shown"
    assert page.evaluate("location.hash") == "#category=restrictive_law"
    choose("category", "protest_crackdown")
    assert visible(page) == 3
    choose("country", "KZ")
    assert visible(page) == 3
    choose("from", "2026-11-22")  # only the hostile item's incident is that late
    assert visible(page) == 1
    choose("to", "2026-11-21")  # an empty range
    assert visible(page) == 0
    page.click("#f-reset")
    assert visible(page) == 4
    # a shared link opens filtered; an unknown value in the link is ignored, not injected
    page.goto("about:blank")
    page.goto(served.url("index.html#category=prosecution&country=%3Cimg%3E"))
    assert visible(page) == 1
    assert page.evaluate("document.getElementById('f-country').value") == ""
    assert page.errors() == []
    page.close()


@needs_chromium
def test_without_javascript_everything_is_listed_and_no_dead_controls(
    browser: Browser, served: Served
) -> None:
    page = browser.page()
    page.send("Emulation.setScriptExecutionDisabled", {"value": True})
    page.goto(served.url("index.html#category=prosecution"))
    assert visible(page) == 4
    assert visible(page, "#filters") == 0
    assert page.errors() == []
    page.close()


@needs_chromium
def test_site_works_from_disk_over_file_urls(browser: Browser, served: Served) -> None:
    page = browser.page()
    page.goto((served.built.out / "index.html").as_uri())
    assert visible(page) == 4
    assert page.evaluate("document.getElementById('filters').hidden") is False
    page.goto((served.built.out / "incident" / f"{served.incident_of(0)}.html").as_uri())
    assert (
        page.evaluate("getComputedStyle(document.querySelector('header.site')).display") == "flex"
    )  # CSS loaded
    assert page.errors() == []
    page.close()


@needs_chromium
def test_incident_page_shows_all_sources_and_why(browser: Browser, served: Served) -> None:
    page = browser.page()
    page.goto(served.url(f"incident/{served.incident_of(0)}.html"))
    assert page.evaluate("document.querySelector('h1').textContent") == MAMAI_EN.title
    assert page.evaluate("document.querySelectorAll('ol.sources > li').length") == 4
    langs = page.evaluate("Array.from(document.querySelectorAll('ol.sources > li')).map(li => li.lang)")
    assert langs == ["en", "en", "ru", "kk"]
    marks = page.evaluate("Array.from(document.querySelectorAll('mark')).map(m => m.textContent)")
    assert "задержали" in marks and "ұсталды" in marks
    grouping = page.evaluate("Array.from(document.querySelectorAll('.grouping')).map(p => p.textContent)")
    assert grouping[0].startswith("started incident") and "same names" in grouping[2]
    hrefs = page.evaluate("Array.from(document.querySelectorAll('ol.sources h3 a')).map(a => a.href)")
    assert all(h.startswith("https://feed-") for h in hrefs) and len(hrefs) == 4
    assert page.errors() == []
    page.close()


@needs_chromium
def test_hostile_feed_content_does_nothing(browser: Browser, served: Served) -> None:
    page = browser.page()
    hostile = served.incident_of(len(served.built.ids) - 1)
    page.goto(served.url(f"incident/{hostile}.html"))
    title = page.evaluate("document.title")
    assert title.startswith(HOSTILE_TITLE_START) and "PWNED" in title  # the hostile title, shown as text
    assert "·" in title and page.evaluate("document.querySelector('h1').textContent").startswith("<script>")
    # open the "full text" and click what is left of the links: nothing runs, nothing loads from the beacon
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    for a in page.evaluate("Array.from(document.querySelectorAll('.content a')).map(a => a.textContent)"):
        assert a in {"click", "site"}
    page.evaluate(
        "document.querySelectorAll('.content a').forEach(a => a.addEventListener('click', e => e.preventDefault()));"
        "document.querySelectorAll('.content a').forEach(a => a.click())"
    )
    page.settle(0.5)
    assert page.evaluate("document.title") == title  # no payload rewrote it
    assert (
        page.evaluate(
            "document.querySelectorAll('.content [style], .content [onclick], .content img').length"
        )
        == 0
    )
    assert page.evaluate("document.querySelectorAll('script').length") == 0  # incident pages carry no script
    assert page.evaluate("getComputedStyle(document.body).backgroundImage") == "none"
    assert (
        page.evaluate("document.querySelectorAll('li.source').length") == 1
    )  # no `.item {display:none}` trick
    assert served.beacon.requests == []
    site = served.site.url
    assert [u for u in page.requests() if not u.startswith((site, "data:"))] == []
    assert page.errors() == []
    page.close()


@needs_chromium
def test_csp_stops_what_a_sanitiser_might_miss(browser: Browser, served: Served, tmp_path: Path) -> None:
    """Defence in depth: a page with our head and *unsanitised* hostile markup still runs and loads nothing."""
    beacon = served.beacon.url + "/csp"
    raw = (
        f'<script>document.title="PWNED-inline"</script><img src="{beacon}/img" onerror="document.title=\'PWNED\'">'
        f'<iframe src="{beacon}/iframe"></iframe><svg onload="document.title=\'PWNED-svg\'"></svg>'
        f'<style>body{{background:url({beacon}/bg)}}</style><p style="background:url({beacon}/attr)">x</p>'
        f'<link rel="stylesheet" href="{beacon}/css"><object data="{beacon}/obj"></object>'
        f'<script src="{beacon}/js"></script><a id=js href="javascript:document.title=\'PWNED-js\'">j</a>'
    )
    index = (served.built.out / "index.html").read_text(encoding="utf-8")
    head = index.split("<body>")[0]
    evil = served.built.out / "csp-test.html"
    evil.write_text(head + "<body>" + raw + "</body></html>", encoding="utf-8")
    try:
        page = browser.page()
        page.goto(served.url("csp-test.html"))
        page.evaluate("document.getElementById('js').click()")
        page.settle(0.5)
        assert page.evaluate("document.title") == "Civic-space monitor"
        assert [r for r in served.beacon.requests if r.startswith("/csp")] == []
        # the browser reports the blocked attempts: proof the CSP, not luck, stopped them
        assert any("Content Security Policy" in e for e in page.errors())
        page.close()

        # Control: the same markup without our CSP does run and reach the beacon, so the checks above can fail.
        evil.write_text(head.split('<meta http-equiv="Content-Security-Policy"')[0] + raw, encoding="utf-8")
        page = browser.page()
        page.goto(served.url("csp-test.html"))
        page.settle(0.5)
        assert page.evaluate("document.title").startswith("PWNED")
        assert any(r.startswith("/csp/") for r in served.beacon.requests)
        page.close()
    finally:
        evil.unlink()
        served.beacon.requests[:] = [r for r in served.beacon.requests if not r.startswith("/csp")]


@needs_chromium
@pytest.mark.parametrize(
    ("name", "width", "height", "mobile"), [("phone", 390, 844, True), ("desktop", 1280, 900, False)]
)
def test_pages_fit_the_screen(
    browser: Browser, served: Served, name: str, width: int, height: int, mobile: bool
) -> None:
    """Phone and desktop: nothing wider than the screen. Screenshots go to $MONITOR_SCREENSHOTS if set."""
    shots = Path(os.environ.get("MONITOR_SCREENSHOTS") or served.built.out.parent / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.page(width=width, height=height, mobile=mobile, scale=2 if mobile else 1)
    for label, path in [("index", "index.html"), ("incident", f"incident/{served.incident_of(0)}.html")]:
        page.goto(served.url(path))
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (label, name)
        page.screenshot(shots / f"{label}-{name}.png")
    assert page.errors() == []
    page.close()


def test_delivered_digests_are_copied_into_the_archive(engine: Engine, tmp_path: Path) -> None:
    models = pytest.importorskip("monitor.store.digest_models")
    with session_scope(engine) as s:
        for n, status in enumerate(["delivered", "pending"]):
            s.add(
                models.DigestOutbox(
                    digest="daily",
                    message_id=f"<m{n}@test>",
                    status=status,
                    created_at=T0 + timedelta(days=n),
                    position=T0,
                    page_html=f"<p>digest {status}</p>",
                    delivered_at=T0 + timedelta(days=n, minutes=1) if status == "delivered" else None,
                )
            )
    out = tmp_path / "site"
    build(engine, out)
    assert sorted(p.name for p in (out / "digests").iterdir()) == ["daily-2026-11-20-0900.html"]
    assert (out / "digests" / "daily-2026-11-20-0900.html").read_text() == "<p>digest delivered</p>"
    assert "digests/daily-2026-11-20-0900.html" in (out / "digests.html").read_text()


# --- what grouping works out once for the site (monitor.incidents.display) -------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_grouping_records_what_the_site_shows_and_the_site_is_the_same_without_it(
    engine: Engine, tmp_path: Path
) -> None:
    from sqlalchemy import update
    from sqlmodel import select

    from monitor.incidents.display import fresh_display
    from monitor.store.models import Item

    b = build(engine, tmp_path / "with")
    with session_scope(engine) as s:
        items = {i.id: i for i in s.exec(select(Item))}
        for item_id in b.incidents:
            it = items[item_id]
            known = fresh_display(it.display, it.url, it.title, it.text, it.html)
            assert known is not None and known.actors is not None, item_id
        # the hostile report's HTML is not what the sanitiser makes of it, so its page sanitises it
        hostile = items[b.ids[-1]]
        known = fresh_display(hostile.display, hostile.url, hostile.title, hostile.text, hostile.html)
        assert known is not None and not known.html_clean
        s.execute(update(Item).values(display=None))
    build_site(engine, tmp_path / "without", now=NOW)
    assert _tree(tmp_path / "with") == _tree(tmp_path / "without")


def test_a_rebuild_rewrites_only_the_pages_that_changed(engine: Engine, tmp_path: Path) -> None:
    """A rebuild over the last site leaves an incident page holding the same bytes as it was (same file, same
    mtime), rewrites the one whose report changed, and ends with the same tree as a fresh build."""
    from monitor.store.models import Item

    b = build(engine, tmp_path / "site")
    pages = {inc: tmp_path / "site" / "incident" / f"{inc}.html" for inc in set(b.incidents.values())}
    assert len(pages) >= 3
    before = {inc: p.stat() for inc, p in pages.items()}
    again = build_site(engine, tmp_path / "site", now=NOW)
    assert again.unchanged == len(pages)
    for inc, p in pages.items():
        st = p.stat()
        assert (st.st_ino, st.st_mtime_ns) == (before[inc].st_ino, before[inc].st_mtime_ns), inc

    edited = b.ids[0]
    with session_scope(engine) as s:
        it = s.get(Item, edited)
        assert it is not None
        it.title = "Court fined the activist after the rally, lawyers said"
        s.add(it)
    third = build_site(engine, tmp_path / "site", now=NOW)
    assert third.unchanged == len(pages) - 1
    changed = b.incidents[edited]
    assert pages[changed].stat().st_ino != before[changed].st_ino
    assert "Court fined the activist" in pages[changed].read_text(encoding="utf-8")
    assert oct(pages[changed].stat().st_mode & 0o777) == oct(0o644)
    others = [inc for inc in pages if inc != changed]
    assert all(pages[inc].stat().st_ino == before[inc].st_ino for inc in others)
    build_site(engine, tmp_path / "fresh", now=NOW)
    assert _tree(tmp_path / "site") == _tree(tmp_path / "fresh")


def test_a_record_worked_out_from_other_text_is_not_used(engine: Engine, tmp_path: Path) -> None:
    """An item edited after grouping (an updated entry, a hand-edited row): its record is stale, and the site
    sanitises the HTML and reads the names afresh."""
    from monitor.incidents.display import display_record, fresh_display
    from monitor.sanitize import sanitize_html
    from monitor.store.models import Item

    b = build(engine, tmp_path / "site")
    item_id = b.ids[0]
    with session_scope(engine) as s:
        it = s.get(Item, item_id)
        assert it is not None
        it.html = sanitize_html("<p>Clean text.</p>", it.url)
        it.display = display_record(it.url, it.title, it.text, it.html)  # says: this HTML needs no cleaning
        assert it.display is not None and it.display["html"] is True
        it.html += '<script>document.title="PWNED-stale"</script><img src=x onerror=alert(1)>'
        it.title = "Police detained the activist Aigul Utepova after their rally in the city today"
        assert fresh_display(it.display, it.url, it.title, it.text, it.html) is None
        s.add(it)
    build_site(engine, tmp_path / "site", now=NOW)
    page = (tmp_path / "site" / "incident" / f"{b.incidents[item_id]}.html").read_text(encoding="utf-8")
    assert "PWNED-stale" not in page and "onerror" not in page and "<p>Clean text.\n</p>" in page
    with (tmp_path / "site" / "incidents.json").open(encoding="utf-8") as fh:
        record = next(r for r in json.load(fh) if r["id"] == b.incidents[item_id])
    assert "Aigul Utepova" in record["actors"]


def test_the_display_record_marks_html_clean_only_when_the_sanitiser_keeps_it() -> None:
    from monitor.incidents.display import display_record
    from monitor.sanitize import sanitize_html

    url = "https://feed-en.example.org/news/1"
    raw = '<p>Text <a href="/rel">link</a></p><script>x</script>'
    rec = display_record(url, "Title", "Text", raw)
    assert rec is not None and rec["html"] is False
    cleaned = sanitize_html(raw, url)
    rec = display_record(url, "Title", "Text", cleaned)
    assert rec is not None and rec["html"] is True
    # the check is made with the link as base URL: relative links resolve against it
    assert display_record(None, "Title", "Text", sanitize_html('<a href="/rel">x</a>', url)) is not None


def test_stale_and_missing_records_are_worked_out_again_by_housekeeping(
    engine: Engine, tmp_path: Path
) -> None:
    from sqlalchemy import update
    from sqlmodel import select

    from monitor.incidents.display import fresh_display, refresh_displays
    from monitor.store.models import Item

    b = build(engine, tmp_path / "site")
    grouped = sorted(b.incidents)
    with session_scope(engine) as s:
        s.execute(update(Item).where(Item.id == grouped[0]).values(display=None))  # stored before 0011
        s.execute(update(Item).where(Item.id == grouped[1]).values(display={"key": "0" * 32, "html": True}))
    assert refresh_displays(engine, batch=3) == 2
    assert refresh_displays(engine) == 0
    with session_scope(engine) as s:
        for it in s.exec(select(Item).where(col(Item.id).in_(grouped))):
            assert fresh_display(it.display, it.url, it.title, it.text, it.html) is not None, it.id
