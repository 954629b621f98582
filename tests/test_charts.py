"""Charts: weekly counts, SVG that is markup only, a table beside each chart, "no incidents" for an empty period,
and what a reader sees in headless Chromium at desktop and phone width."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from monitor.config.load import Config, load_config
from monitor.deliver.charts import NARROW, WIDE, Row, chart_set, clear_cache, png, render, render_svg
from monitor.deliver.digest import deliver_digest
from monitor.deliver.render import CATEGORY_TITLES
from monitor.deliver.site import build_site
from monitor.incidents import group_items
from monitor.store.engine import session_scope
from monitor.store.models import Incident
from tests.support.browser import Browser, StaticServer, chromium_path
from tests.support.html import start_tags
from tests.support.stories import MAMAI_EN, MAMAI_RU, NGO_LAW, T0, store

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)  # a Wednesday: the current week began on Monday 23 November
SVG_NS = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}  # namespaces, not resources


def row(days_ago: float, cats: list[str], countries: list[str] = ["KZ"], sev: str = "high") -> Row:  # noqa: B006
    return Row(NOW - timedelta(days=days_ago), cats, countries, sev)


def chart_png_available() -> bool:
    return (
        png('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 2 2"><rect width="2" height="2"/></svg>')
        is not None
    )


def assert_inert(svg: str) -> None:
    """Markup only: no script, no event handler, nothing fetched from anywhere."""
    assert "<script" not in svg.lower()
    assert not re.search(r"\son\w+\s*=", svg)
    assert not re.search(r"(?:href|src)\s*=", svg)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", svg)) <= SVG_NS
    assert "<?xml-stylesheet" not in svg and "@import" not in svg


# --- counting ----------------------------------------------------------------------------------------------------


def test_counts_per_week_by_category_country_and_severity() -> None:
    rows = [
        row(0, ["prosecution"]),  # this week (Monday 23 Nov)
        row(2, ["prosecution", "protest_crackdown"], ["KZ", "KG"]),  # Monday 23 Nov too
        row(3, ["prosecution"], ["KG"], "medium"),  # Sunday 22 Nov: the week before
        row(20, ["restrictive_law"], ["UZ"], "medium"),
        row(400, ["prosecution"]),  # older than 12 months: not counted
        Row(NOW + timedelta(days=2), ["prosecution"], ["KZ"], "high"),  # after now: not counted
    ]
    cs = chart_set(rows, now=NOW, category_titles=CATEGORY_TITLES)
    assert cs.incidents == 4
    weeks = cs.chart("category").weeks
    assert len(weeks) == 52 and weeks[-1] == date(2026, 11, 23) and weeks[0] == date(2025, 12, 1)
    assert all(w.weekday() == 0 for w in weeks)
    cats = {s.key: s.values for s in cs.chart("category").series}
    assert cats["prosecution"][-1] == 2 and cats["prosecution"][-2] == 1
    assert cats["protest_crackdown"][-1] == 1 and sum(cats["protest_crackdown"]) == 1
    assert sum(cats["restrictive_law"]) == 1
    countries = {s.key: s.total for s in cs.chart("country").series}
    assert countries == {"KZ": 2, "KG": 2, "UZ": 1}
    sev = cs.chart("severity").series
    assert [s.key for s in sev] == ["high", "medium"] and [s.total for s in sev] == [2, 2]
    # the table a reader gets beside the chart: newest week first, with the week's sum
    week, values, total = cs.chart("severity").table[0]
    assert week == date(2026, 11, 23) and values == [2, 0] and total == 2
    kz = next(k for k in cs.countries if k.code == "KZ")
    assert (kz.incidents, kz.recent, kz.high, kz.last_seen) == (2, 2, 2, date(2026, 11, 25))
    assert kz.top_categories[0] == "Prosecution"
    spark = {sp.id: sp for sp in cs.sparklines}
    assert set(spark) == {"prosecution", "protest_crackdown", "restrictive_law"}
    assert spark["prosecution"].total == 3 and "3 incidents in 12 months" in spark["prosecution"].description


def test_only_the_largest_series_are_drawn_apart_the_rest_summed_as_other() -> None:
    ids = list(CATEGORY_TITLES)[:9]
    rows = [row(d, [c]) for n, c in enumerate(ids) for d in range(9 - n)]  # ids[0] 9 times ... ids[8] once
    series = chart_set(rows, now=NOW, category_titles=CATEGORY_TITLES).chart("category").series
    assert [s.key for s in series] == [*ids[:6], "_other"]
    assert series[-1].label == "Other categories (3)" and series[-1].total == 3 + 2 + 1


# --- drawing -----------------------------------------------------------------------------------------------------


def test_svg_has_a_viewbox_a_title_and_no_script_or_remote_resource() -> None:
    cs = render(
        chart_set(
            [row(1, ["prosecution"]), row(9, ["intimidation"])], now=NOW, category_titles=CATEGORY_TITLES
        )
    )
    for c in cs.charts:
        for svg in (c.svg, c.svg_narrow):
            assert svg is not None and svg.startswith("<svg")
            assert_inert(svg)
            assert re.search(r'viewBox="0 0 \d+ \d+"', svg)  # scales to any width
            assert f"<title>{c.title}</title>" in svg
    for sp in cs.sparklines:
        assert sp.svg is not None and sp.svg.startswith("<svg")
        assert_inert(sp.svg)


def test_labels_are_escaped_in_the_svg() -> None:
    titles = {**CATEGORY_TITLES, "prosecution": '<script>alert("x")</script> & <b>bold</b>'}
    cs = chart_set([row(1, ["prosecution"])], now=NOW, category_titles=titles)
    svg = render_svg(cs.chart("category"))
    assert svg is not None
    assert_inert(svg)
    assert "&lt;script&gt;alert" in svg and "&amp; &lt;b&gt;bold&lt;/b&gt;" in svg


def test_an_empty_period_draws_nothing() -> None:
    cs = render(chart_set([row(500, ["prosecution"])], now=NOW, category_titles=CATEGORY_TITLES))
    assert cs.empty and cs.incidents == 0
    assert all(c.empty and c.svg is None and c.svg_narrow is None for c in cs.charts)
    assert cs.sparklines == [] and cs.countries == []


def test_the_same_counts_give_the_same_bytes_and_empty_weeks_no_bar() -> None:
    rows = [row(1, ["prosecution"]), row(1, ["prosecution", "intimidation"]), row(30, ["intimidation"])]
    chart = chart_set(rows, now=NOW, category_titles=CATEGORY_TITLES).chart("category")
    clear_cache()
    first = render_svg(chart, WIDE)
    clear_cache()  # drawn afresh: a rebuilt site rewrites a chart only when its numbers changed
    again = render_svg(chart, WIDE)
    narrow = render_svg(chart, NARROW)
    assert first is not None and narrow is not None and first == again
    # two drawings inlined in one digest page keep apart the ids their CSS is scoped with
    ids = [re.search(r'<svg[^>]* id="([^"]+)"', svg).group(1) for svg in (first, narrow)]  # type: ignore[union-attr]
    assert ids[0] != ids[1]
    # one bar per week and series that has incidents (three here), none drawn zero pixels high
    assert first.count('class="bar"') == 3
    assert not re.search(r'height="0(?:\.0+)?"', first)
    assert not re.search(r"\d\.\d{3}", first)  # coordinates to a hundredth of a pixel
    assert render_svg(chart, WIDE) is again  # drawn once per process for the same numbers


def test_a_digest_draws_no_sparklines() -> None:
    cs = render(
        chart_set([row(1, ["prosecution"])], now=NOW, category_titles=CATEGORY_TITLES), sparklines=False
    )
    assert cs.sparklines and all(sp.svg is None for sp in cs.sparklines)
    assert all(c.svg for c in cs.charts)


def test_png_for_email() -> None:
    svg = render_svg(
        chart_set([row(1, ["prosecution"])], now=NOW, category_titles=CATEGORY_TITLES).chart("severity")
    )
    assert svg is not None
    data = png(svg)
    if data is None:
        pytest.skip("cairo is not installed here: emails go without charts")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width = int.from_bytes(data[16:20], "big")
    assert width == 1600  # the 800-wide chart at twice its size, sharp on a phone's screen


# --- on the site -------------------------------------------------------------------------------------------------


def add_incidents(engine: Engine, n: int, *, now: datetime) -> None:
    """`n` incidents spread over the year before `now`, in a few categories and countries (rows only: the charts
    read incidents, not their reports)."""
    cats = ["prosecution", "protest_crackdown", "media_restriction", "intimidation"]
    countries = [["KZ"], ["KZ"], ["KG"], ["KZ", "RU"], ["UZ"]]
    with Session(engine) as s:
        for i in range(n):
            d = now - timedelta(days=(i * 7.3) % 360)
            s.add(
                Incident(
                    title=f"Incident {i}",
                    categories=[cats[i % len(cats)]],
                    countries=countries[i % len(countries)],
                    severity=["high", "medium", "low"][i % 3],
                    first_seen=d,
                    last_seen=d,
                    updated_at=d,
                    item_count=1,
                )
            )
        s.commit()


def site(engine: Engine, out: Path, *, now: datetime, extra: int = 0) -> Path:
    ids = store(engine, [MAMAI_EN, MAMAI_RU, replace(NGO_LAW, hours=30)])
    with session_scope(engine) as s:
        group_items(s, ids, now=T0 + timedelta(days=3))
    if extra:
        add_incidents(engine, extra, now=now)
    build_site(engine, out, now=now)
    return out


def test_site_charts_page_has_pictures_and_their_tables(engine: Engine, tmp_path: Path) -> None:
    out = site(engine, tmp_path / "site", now=T0 + timedelta(days=3), extra=120)
    page = out / "charts.html"
    html = page.read_text(encoding="utf-8")
    imgs = [a for t, a in start_tags(page) if t == "img"]
    assert [a["src"] for a in imgs] == ["charts/category.svg", "charts/country.svg", "charts/severity.svg"]
    assert all(a.get("alt") and "table below" in (a["alt"] or "") for a in imgs)
    sources = [a["srcset"] for t, a in start_tags(page) if t == "source"]
    assert sources == [
        "charts/category-narrow.svg",
        "charts/country-narrow.svg",
        "charts/severity-narrow.svg",
    ]
    assert html.count("<details") == 3 and html.count("<table") == 4  # one per chart, and the one by country
    for name in ("category", "country", "severity"):
        for f in (f"{name}.svg", f"{name}-narrow.svg"):
            assert_inert((out / "charts" / f).read_text(encoding="utf-8"))
    # the table by country: Kazakhstan first, with its 12-month count
    m = re.search(r'<tr><th scope="row">Kazakhstan</th><td>(\d+)</td>', html)
    assert m and int(m.group(1)) == 2 + 120 * 3 // 5  # two from the stories, three in five of the rows
    assert "<script" not in html.split("<footer", 1)[0]  # the charts page runs nothing
    index = out / "index.html"
    sparks = [
        a for t, a in start_tags(index) if t == "img" and (a.get("src") or "").startswith("charts/spark-")
    ]
    assert {a["src"] for a in sparks} >= {
        "charts/spark-prosecution.svg",
        "charts/spark-protest_crackdown.svg",
    }
    assert all(re.search(r"\d+ incidents? in 12 months", a.get("alt") or "") for a in sparks)
    assert 'href="charts.html"' in index.read_text(encoding="utf-8")


def test_site_over_an_empty_period_says_no_incidents(engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "site"
    site(engine, out, now=T0 + timedelta(days=3), extra=10)
    assert (out / "charts" / "category.svg").is_file()
    site_later = T0 + timedelta(days=3 * 365)  # the same database two years on: nothing in the last 12 months
    build_site(engine, out, now=site_later)
    page = (out / "charts.html").read_text(encoding="utf-8")
    assert page.count("No incidents in these 12 months.") == 3
    assert not [a for t, a in start_tags(out / "charts.html") if t == "img"]
    assert list((out / "charts").glob("*.svg")) == []  # the old pictures are gone, nothing links them
    assert "No incidents in the last 12 months." in (out / "index.html").read_text(encoding="utf-8")


@pytest.mark.skipif(chromium_path() is None, reason="Chromium is not installed")
@pytest.mark.parametrize(("width", "mobile"), [(1280, False), (390, True)])
def test_charts_in_chromium(engine: Engine, tmp_path: Path, width: int, mobile: bool) -> None:
    out = site(engine, tmp_path / "site", now=T0 + timedelta(days=3), extra=200)
    with StaticServer(out) as srv, Browser() as browser:
        page = browser.page(width=width, height=900, mobile=mobile)
        for name in ("charts.html", "index.html"):
            page.goto(f"{srv.url}/{name}")
            page.settle()
            page.screenshot(tmp_path / f"{name}-{width}.png")
            assert page.errors() == []
            assert (
                page.evaluate("document.documentElement.scrollWidth") <= width
            )  # nothing wider than the phone
            shown = page.evaluate(
                "Array.from(document.images).map(i => [i.currentSrc.split('/').pop(), i.naturalWidth,"
                " Math.round(i.getBoundingClientRect().width)])"
            )
            assert shown and all(natural > 0 for _, natural, _ in shown), shown  # no broken picture
            if name == "charts.html":
                # the phone gets the narrow drawing, with type it can read; the desktop the wide one
                want = "category-narrow.svg" if width < 600 else "category.svg"
                assert shown[0][0] == want and shown[0][2] <= width
            page.evaluate("document.querySelector('details.data')?.setAttribute('open', '')")
        assert all(r.startswith(srv.url) or r.startswith("data:") for r in page.requests())


# --- in the digest -----------------------------------------------------------------------------------------------

DIGESTS = """\
site_url: https://monitor.example.org/
sender: "Monitor <monitor@example.org>"
digests:
  - name: daily
    schedule: "0 8 * * *"
    email:
      recipients: [analyst@example.org]
  - name: kg
    schedule: "0 8 * * *"
    filters:
      countries: [KG]
    email:
      recipients: [analyst@example.org]
  - name: alerts
    schedule: immediate
    email:
      recipients: [analyst@example.org]
"""


def digest_db(engine: Engine, config_dir: Path) -> Config:
    from tests.support.digestdata import add_feed, add_incident, write_digests

    write_digests(config_dir, DIGESTS)
    add_feed(engine, "kz-news")
    add_incident(engine, 'Blogger <b>"detained"</b> in Almaty', at=NOW - timedelta(hours=2))
    add_incidents(engine, 60, now=NOW)
    return load_config(config_dir)


def test_digest_page_has_inline_charts_and_the_email_has_them_as_png(
    engine: Engine, config_dir: Path, tmp_path: Path
) -> None:
    cfg = digest_db(engine, config_dir)
    run = deliver_digest(engine, cfg, "daily", now=NOW, dry_run_out=tmp_path)
    assert run.eml_path is not None and run.html_path is not None
    page = run.html_path.read_text(encoding="utf-8")
    charts = page.split("<!--charts-->", 1)[1].split("<!--/charts-->", 1)[0]
    assert charts.count("<svg") == 6  # three charts, wide and narrow
    assert charts.count("<details>") == 3 and charts.count("<table") == 4
    assert "<script" not in page.lower()
    assert "Incidents per week by severity" in charts
    for m in re.finditer(r"<svg.*?</svg>", charts, re.S):
        assert_inert(m.group(0))
    msg = email.message_from_bytes(run.eml_path.read_bytes(), policy=email.policy.default)
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html = str(html_part.get_content())
    assert "<svg" not in html and "<details" not in html  # mail clients show neither
    cids = re.findall(r'<img [^>]*src="cid:([^"]+)"', html)
    if chart_png_available():
        assert len(cids) == 3
        related = {
            str(p["Content-ID"]).strip("<>"): p for p in msg.walk() if p.get_content_type() == "image/png"
        }
        assert set(related) == set(cids)
        assert all(p.get_content().startswith(b"\x89PNG") for p in related.values())
    else:
        assert cids == []
    assert not re.search(r'src="(?!cid:)', html)  # never a remote picture
    assert "By country" in html and "Kazakhstan" in html


def test_digest_charts_follow_its_filters_and_say_no_incidents_when_none(
    engine: Engine, config_dir: Path, tmp_path: Path
) -> None:
    cfg = digest_db(engine, config_dir)
    kg = deliver_digest(engine, cfg, "kg", now=NOW, dry_run_out=tmp_path)
    assert kg.html_path is not None
    page = kg.html_path.read_text(encoding="utf-8")
    assert "12 incidents this digest covers" in page  # one in five of the rows is about Kyrgyzstan
    assert "<th>Kazakhstan</th>" not in page
    # two years on, nothing in the last 12 months: a note, no picture
    later = deliver_digest(
        engine, cfg, "daily", now=NOW + timedelta(days=800), dry_run_out=tmp_path / "later"
    )
    assert later.html_path is not None and later.eml_path is not None
    page = later.html_path.read_text(encoding="utf-8")
    assert "No incidents this digest covers were first reported in the last 12 months." in page
    assert "<svg" not in page and "<img" not in page
    assert b"image/png" not in later.eml_path.read_bytes()
    alert = deliver_digest(engine, cfg, "alerts", now=NOW, dry_run_out=tmp_path / "alert")
    assert alert.html_path is not None and "<!--charts-->" not in alert.html_path.read_text(encoding="utf-8")


@pytest.mark.skipif(chromium_path() is None, reason="Chromium is not installed")
@pytest.mark.parametrize(("width", "mobile"), [(1280, False), (390, True)])
def test_digest_page_in_chromium(
    engine: Engine, config_dir: Path, tmp_path: Path, width: int, mobile: bool
) -> None:
    cfg = digest_db(engine, config_dir)
    run = deliver_digest(engine, cfg, "daily", now=NOW, dry_run_out=tmp_path)
    assert run.html_path is not None
    with StaticServer(tmp_path) as srv, Browser() as browser:
        page = browser.page(width=width, height=900, mobile=mobile)
        page.goto(f"{srv.url}/daily.html")
        page.settle()
        page.screenshot(tmp_path / f"digest-{width}.png")
        assert page.errors() == []
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shown = page.evaluate(
            "Array.from(document.querySelectorAll('.charts .svg')).filter(e => e.offsetWidth > 0)"
            ".map(e => [e.className, Math.round(e.getBoundingClientRect().width)])"
        )
        want = "svg narrow" if width < 600 else "svg wide"
        assert [c for c, _ in shown] == [want] * 3 and all(0 < w <= width for _, w in shown)
        assert all(r.startswith(srv.url) for r in page.requests())


def test_a_countrys_top_categories_break_ties_in_the_categories_order() -> None:
    from datetime import UTC, datetime

    from monitor.deliver.charts import Row, chart_set

    now = datetime(2026, 11, 30, tzinfo=UTC)
    titles = {"prosecution": "Prosecution", "media_restriction": "Media", "intimidation": "Intimidation"}
    rows = [
        Row(
            first_seen=now,
            categories=["intimidation", "media_restriction", "prosecution"],
            countries=["KZ"],
            severity="high",
        )
    ]
    got = chart_set(rows, now=now, category_titles=titles).countries[0].top_categories
    assert got == [
        "Prosecution",
        "Media",
        "Intimidation",
    ]  # one each: the categories' order, whatever the set's
