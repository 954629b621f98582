"""Charts of incidents over the last 12 months: static SVG made at build time, readable without JavaScript.

    chart_set(rows, now=, category_titles=)   counts per week by category, country and severity (pure)
    read_rows(session, since=, until=)         the light rows those counts need, streamed from the database
    site_charts(session, out, now=, ...)       writes DIR/charts/*.svg for the site and returns the ChartSet
    digest_charts(session, digest, ...)        the same for a digest's filters, SVG kept in memory for its page
    png(svg) -> bytes | None                   a chart as PNG for an email (None when cairo is not installed)

Drawn with pygal: it writes plain SVG (a viewBox, so it scales to any width) from a few lines of configuration,
escapes every label through its XML serialiser, and needs nothing at run time. Hand-drawn SVG would mean owning
axes, scales, legends and escaping ourselves; Vega-Lite through vl-convert ships a JavaScript engine in a 100 MB
wheel to do the same. pygal's interactive parts are switched off: no script is configured and an XML filter drops
the configuration script it always writes, so a chart is inert markup (the site shows it through <img>, which
never runs scripts anyway).

Every chart comes with the numbers it draws (`Chart.table`), which the templates put in a table beside it; a
period without incidents gives `Chart.svg = None` and the templates say "no incidents" instead of drawing axes
around nothing.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pygal
from pygal.style import Style
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from monitor.deliver.render import COUNTRY_NAMES, slug
from monitor.severity import SEVERITIES, rank
from monitor.store.models import Incident

__all__ = [
    "WEEKS",
    "Chart",
    "ChartSet",
    "CountryRow",
    "Row",
    "Sparkline",
    "chart_set",
    "clear_cache",
    "digest_charts",
    "png",
    "read_rows",
    "render_svg",
    "site_charts",
]

WEEKS = 52  # a year of weeks, the current one last
TOP_SERIES = 6  # categories or countries drawn apart; the rest are summed as "other", a legend stays readable
RECENT_WEEKS = 4  # the country table's "last 4 weeks" column
# Okabe-Ito: told apart with the common colour-vision deficiencies; grey is "other".
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
OTHER_COLOUR = "#9a9a9a"
SEVERITY_COLOURS = {"high": "#b3261e", "medium": "#d4a017", "low": "#47624a"}
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif'

# (width, height, an x label every n months, font scale): the wide variant for desktops and the digest page,
# the narrow one for phones, drawn with larger type rather than shrinking the wide one to half its size.
WIDE = (800, 340, 2, 1.0)
NARROW = (400, 480, 3, 1.25)


@dataclass(frozen=True)
class Row:
    """What a chart needs of an incident."""

    first_seen: datetime
    categories: Sequence[str]
    countries: Sequence[str]
    severity: str


@dataclass
class Series:
    key: str
    label: str
    values: list[int]
    colour: str

    @property
    def total(self) -> int:
        return sum(self.values)


@dataclass
class Chart:
    id: str  # category | country | severity
    title: str
    description: str  # the alt text: what is drawn, over which weeks
    note: str | None  # how to read the counts (an incident in two categories counts in each)
    weeks: list[date]  # Mondays, oldest first
    series: list[Series]
    incidents: int  # incidents in the period (not the sum of the series, which may count one twice)
    svg: str | None = None  # wide variant; None for a period without incidents
    svg_narrow: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # variant -> file name under DIR/charts (site only)

    @property
    def empty(self) -> bool:
        return self.incidents == 0

    @property
    def table(self) -> list[tuple[date, list[int], int]]:
        """One row per week: (week start, the count of each series, the row's sum), newest week first."""
        rows = []
        for i, week in enumerate(self.weeks):
            vals = [s.values[i] for s in self.series]
            rows.append((week, vals, sum(vals)))
        return rows[::-1]


@dataclass
class Sparkline:
    id: str
    title: str
    values: list[int]
    svg: str | None
    file: str | None = None

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def description(self) -> str:
        recent = sum(self.values[-RECENT_WEEKS:])
        return (
            f"{self.title}: {self.total} incident{'s' if self.total != 1 else ''} in 12 months, "
            f"{recent} in the last {RECENT_WEEKS} weeks; most in one week: {max(self.values, default=0)}"
        )


@dataclass
class CountryRow:
    code: str
    name: str
    incidents: int  # in the 12 months
    recent: int  # in the last RECENT_WEEKS weeks
    high: int  # of them rated high severity
    top_categories: list[str]  # titles, most frequent first
    last_seen: date | None


@dataclass
class ChartSet:
    start: date  # Monday of the first week
    end: date  # the last day counted (today)
    incidents: int
    charts: list[Chart]
    sparklines: list[Sparkline]
    countries: list[CountryRow]

    @property
    def empty(self) -> bool:
        return self.incidents == 0

    def chart(self, id: str) -> Chart:
        return next(c for c in self.charts if c.id == id)


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def period(now: datetime, weeks: int = WEEKS) -> tuple[datetime, list[date]]:
    """The first moment counted and the Mondays of the weeks, the current week last."""
    last = _monday(_utc(now).date())
    mondays = [last - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]
    return datetime.combine(mondays[0], datetime.min.time(), UTC), mondays


def read_rows(session: Session, *, since: datetime, until: datetime, batch: int = 2000) -> Iterator[Row]:
    """Incidents with reports first seen in [since, until]: four columns each, streamed in batches."""
    # A Core select on the session's connection: through the ORM the same four columns of 5,000 incidents
    # took 0.09-0.19 s of CPU to read, here 0.06 s.
    q = (
        sa_select(
            col(Incident.first_seen),
            col(Incident.categories),
            col(Incident.countries),
            col(Incident.severity),
        )
        .where(
            col(Incident.item_count) > 0,
            col(Incident.first_seen) >= since,
            col(Incident.first_seen) <= until,
        )
        .execution_options(yield_per=batch)
    )
    for first, cats, countries, sev in session.connection().execute(q):
        yield Row(_utc(first), list(cats or []), list(countries or []), sev or "medium")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def chart_set(
    rows: Iterable[Row],
    *,
    now: datetime,
    category_titles: Mapping[str, str],
    country_names: Mapping[str, str] = COUNTRY_NAMES,
    weeks: int = WEEKS,
    top: int = TOP_SERIES,
) -> ChartSet:
    """Weekly counts of `rows` over the `weeks` weeks ending with the current one; no SVG yet (see render)."""
    since, mondays = period(now, weeks)
    index = {m: i for i, m in enumerate(mondays)}
    until = _utc(now)
    by_cat: dict[str, list[int]] = {}
    by_country: dict[str, list[int]] = {}
    by_sev: dict[str, list[int]] = {}
    country_cats: dict[str, Counter[str]] = {}
    country_high: Counter[str] = Counter()
    country_last: dict[str, date] = {}
    total = 0

    def bump(table: dict[str, list[int]], key: str, i: int) -> None:
        table.setdefault(key, [0] * weeks)[i] += 1

    for r in rows:
        first = _utc(r.first_seen)
        if first < since or first > until:
            continue
        i = index[_monday(first.date())]
        total += 1
        for c in dict.fromkeys(r.categories):
            bump(by_cat, c, i)
        for k in dict.fromkeys(r.countries):
            bump(by_country, k, i)
            country_cats.setdefault(k, Counter()).update(dict.fromkeys(r.categories, 1))
            if r.severity == "high":
                country_high[k] += 1
            country_last[k] = max(country_last.get(k, first.date()), first.date())
        bump(by_sev, r.severity, i)

    order = {c: n for n, c in enumerate(category_titles)}
    span = f"weeks from {mondays[0].isoformat()} to {until.date().isoformat()}"
    cat_series = _top_series(
        by_cat,
        top,
        label=lambda c: category_titles.get(c, c),
        tie=lambda c: (order.get(c, len(order)), c),
        other="Other categories",
    )
    country_series = _top_series(
        by_country, top, label=lambda k: country_names.get(k, k), tie=lambda k: (k,), other="Other countries"
    )
    sev_series = [
        Series(s, s.capitalize(), by_sev[s], SEVERITY_COLOURS.get(s, OTHER_COLOUR))
        for s in sorted(by_sev, key=lambda s: (rank(s), s))
    ]
    charts = [
        Chart(
            "category",
            "Incidents per week by category",
            f"Stacked bars: incidents per week by category, {span}.",
            "An incident in two categories counts once in each.",
            mondays,
            cat_series,
            total,
        ),
        Chart(
            "country",
            "Incidents per week by country",
            f"Stacked bars: incidents per week by country, {span}.",
            "An incident about two countries counts once in each.",
            mondays,
            country_series,
            total,
        ),
        Chart(
            "severity",
            "Incidents per week by severity",
            f"Stacked bars: incidents per week by severity ({', '.join(SEVERITIES)}), {span}.",
            None,
            mondays,
            sev_series,
            total,
        ),
    ]
    sparks = [
        Sparkline(c, category_titles.get(c, c), by_cat.get(c, [0] * weeks), None)
        for c in sorted(set(category_titles) | set(by_cat), key=lambda c: (order.get(c, len(order)), c))
        if c in by_cat
    ]
    recent_from = len(mondays) - RECENT_WEEKS
    countries = [
        CountryRow(
            code=k,
            name=country_names.get(k, k),
            incidents=sum(v),
            recent=sum(v[recent_from:]),
            high=country_high[k],
            # ties in the categories' own order, not in whatever order the counter met them
            top_categories=[
                category_titles.get(c, c)
                for c, _ in sorted(
                    country_cats[k].items(), key=lambda cn: (-cn[1], order.get(cn[0], len(order)), cn[0])
                )[:3]
            ],
            last_seen=country_last.get(k),
        )
        for k, v in sorted(by_country.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    ]
    return ChartSet(mondays[0], until.date(), total, charts, sparks, countries)


def _top_series(
    table: Mapping[str, list[int]],
    top: int,
    *,
    label: Callable[[str], str],
    tie: Callable[[str], tuple[Any, ...]],
    other: str,
) -> list[Series]:
    keys = sorted(table, key=lambda k: (-sum(table[k]), *tie(k)))
    shown = (
        keys if len(keys) <= top + 1 else keys[:top]
    )  # an "other" of one series would hide a name for nothing
    series = [Series(k, label(k), table[k], PALETTE[n % len(PALETTE)]) for n, k in enumerate(shown)]
    rest = [k for k in keys if k not in shown]
    if rest:
        summed = [sum(table[k][i] for k in rest) for i in range(len(table[rest[0]]))]
        series.append(Series("_other", f"{other} ({len(rest)})", summed, OTHER_COLOUR))
    return series


# --- drawing -----------------------------------------------------------------------------------------------------


# pygal always writes its tooltip configuration in a <script>; <desc> holds the tooltips' text, which only
# that script shows (the data table beside the chart says it for everyone), and is most of a chart's bytes.
_DROP = frozenset({"script", "desc"})
# pygal writes coordinates with 15 digits; a hundredth of a pixel is below anything a screen shows, and the rest
# is bytes every page and the email's PNG converter have to read.
_LONG_NUMBER = re.compile(r"(\d+\.\d\d)\d+")
_GEOMETRY = ("x", "y", "width", "height", "d", "transform")


def _empty_bar(g: Any) -> bool:
    """A stacked bar of a week with no incidents: pygal still draws it, zero pixels high."""
    rects = [el for el in g if isinstance(el.tag, str) and el.tag.rpartition("}")[2] == "rect"]
    return bool(rects) and all(float(r.get("height") or 1) == 0 for r in rects)


def _inert(root: Any) -> Any:
    """pygal's XML filter hook: drop every <script> and <desc> and the generator comments, so the SVG is markup
    only; and what nobody sees: empty bars, the tooltip box, the hover titles of the axis guides (the number
    beside each guide says it), digits past the second decimal."""
    for parent in list(root.iter()):
        guides = parent.get("class") == "guides"
        for child in list(parent):
            if not isinstance(child.tag, str):
                parent.remove(child)
                continue
            name = child.tag.rpartition("}")[2]
            group = (child.get("class") or "") if name == "g" else ""
            unseen = (
                (guides and name == "title")
                or (group == "bar" and _empty_bar(child))
                or "tooltip-overlay" in group.split()  # where pygal's script would show a tooltip
            )
            if name in _DROP or unseen:
                parent.remove(child)
            else:
                for attr in _GEOMETRY:
                    value = child.get(attr)
                    if value and "." in value:
                        child.set(attr, _LONG_NUMBER.sub(r"\1", value))
    return root


def _titled(title: str) -> Callable[[Any], Any]:
    """An XML filter naming the SVG document: pygal writes "Pygal" in its <title> when the chart has none."""

    def apply(root: Any) -> Any:
        for el in root.iter():
            if isinstance(el.tag, str) and el.tag.rpartition("}")[2] == "title":
                el.text = title
                break
        return root

    return apply


def _style(colours: Sequence[str], scale: float) -> Style:
    return Style(
        background="#ffffff",
        plot_background="#ffffff",
        foreground="#1d2330",
        foreground_strong="#1d2330",
        foreground_subtle="#dfe3ea",
        opacity="1",
        opacity_hover="1",
        colors=tuple(colours),
        font_family=FONT,
        label_font_size=round(11 * scale),
        major_label_font_size=round(11 * scale),
        legend_font_size=round(12 * scale),
        title_font_size=round(15 * scale),
        value_font_size=round(11 * scale),
        tooltip_font_size=round(11 * scale),
    )


Variant = tuple[int, int, int, float]
_SeriesKey = tuple[tuple[str, str, tuple[int, ...]], ...]  # (label, colour, values) of each series


def render_svg(chart: Chart, variant: Variant = WIDE) -> str | None:
    """The chart as an SVG document (no XML declaration, so it can also go inline); None when it is empty.
    Drawn once per process for the same numbers (see `_draw`)."""
    if chart.empty:
        return None
    series = tuple((s.label, s.colour, tuple(s.values)) for s in chart.series)
    return _draw(chart.id, chart.title, tuple(chart.weeks), series, variant)


# The same counts give the same picture: the site's charts, a digest without filters and another digest at the
# same hour draw the same series, and the page, the email and the next digest of a run share one drawing.
# Kept by value (a few dozen KB each), so a handful is plenty.
@functools.lru_cache(maxsize=24)
def _draw(id: str, title: str, weeks: tuple[date, ...], series: _SeriesKey, variant: Variant) -> str:
    width, height, every, scale = variant
    # Phones get one legend entry a line: two columns of category names overlap at that width.
    legend_columns = 1 if width < 600 else 3
    g = pygal.StackedBar(
        width=width,
        height=height,
        title=None,  # the page's caption says it; inside the picture it would be said twice
        js=[],
        disable_xml_declaration=True,
        style=_style([colour for _, colour, _ in series], scale),
        legend_at_bottom=True,
        legend_at_bottom_columns=legend_columns,
        truncate_legend=-1 if width >= 600 else 40,
        show_minor_x_labels=False,
        margin_bottom=round(30 * scale),
        truncate_label=-1,
        show_x_guides=False,
        print_values=False,
        margin=8,
        spacing=8,
        no_prefix=False,
    )
    # The id pygal scopes its CSS with, random by default: named after the chart and variant instead, so the
    # same counts give the same bytes (a rebuilt site changes only what changed) and the two drawings a
    # digest page inlines still differ.
    g.uuid = f"{slug(id)}-{'wide' if width >= 600 else 'narrow'}"
    g.add_xml_filter(_inert)
    g.add_xml_filter(_titled(title))
    g.y_labels = _count_ticks(max((sum(w) for w in zip(*(v for _, _, v in series), strict=True)), default=0))
    # One label per `every` months, on the first week of the month (with the year on the first label and in
    # January): week dates under every bar would overlap at any width.
    labels: list[str] = []
    majors: list[str] = []
    for m in weeks:
        if m.day <= 7 and (m.month - 1) % every == 0:
            text = m.strftime("%b %Y") if (not majors or m.month == 1) else m.strftime("%b")
            labels.append(text)
            majors.append(text)
        else:
            labels.append("")
    g.x_labels = labels
    g.x_labels_major = majors
    for label, _, values in series:
        g.add(label, [v or None for v in values])
    svg: str = g.render(is_unicode=True)
    return svg


def _count_ticks(top: int, most: int = 6) -> list[int]:
    """Whole-number ticks from 0 past `top`, at most about `most` of them: counts have no fractions."""
    step = 1
    for candidate in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        step = candidate
        if top / candidate <= most - 1:
            break
    end = -(-max(top, 1) // step) * step
    return list(range(0, end + 1, step))


def render_sparkline(values: Sequence[int], colour: str = PALETTE[0], *, name: str = "spark") -> str:
    """A 160x32 line of weekly counts for the index, beside the category's name and total (its alt text gives
    the numbers). Drawn by the same library as the charts: at about 3 ms a line, a hand-made path would save
    nothing worth owning axes and escaping for."""
    return _spark(tuple(values), colour, slug(name))


@functools.lru_cache(maxsize=32)
def _spark(values: tuple[int, ...], colour: str, name: str) -> str:
    g = pygal.Line(
        js=[],
        disable_xml_declaration=True,
        style=Style(
            background="transparent",
            plot_background="transparent",
            colors=(colour,),
            opacity="0.35",
        ),
        fill=True,
        show_dots=False,
        stroke_style={"width": 2},
    )
    g.uuid = f"spark-{name}"
    g.add_xml_filter(_inert)
    g.add("", list(values))
    svg: str = g.render_sparkline(width=160, height=32, show_dots=False)
    return svg


def render(charts: ChartSet, *, sparklines: bool = True) -> ChartSet:
    """Draw every chart of `charts` (both variants) and, unless told not to (a digest shows none), every
    sparkline, in place; returns it."""
    for c in charts.charts:
        c.svg = render_svg(c, WIDE)
        c.svg_narrow = render_svg(c, NARROW)
    if sparklines:
        for sp in charts.sparklines:
            sp.svg = render_sparkline(sp.values, name=sp.id)
    return charts


def png(svg: str, *, scale: float = 2.0) -> bytes | None:
    """The chart as PNG (twice its size, for sharp screens), or None when cairo cannot be loaded here: an email
    then goes without charts rather than with a broken image. Made once per process for the same drawing."""
    return _png(svg, scale)


@functools.lru_cache(maxsize=12)
def _png(svg: str, scale: float) -> bytes | None:
    try:
        import cairosvg  # needs the system's libcairo
    except (ImportError, OSError):
        return None
    out: bytes = cairosvg.svg2png(bytestring=svg.encode("utf-8"), scale=scale)
    return out


def clear_cache() -> None:
    """Forget every drawing and PNG made so far (benchmarks measure a first drawing with it)."""
    _draw.cache_clear()
    _spark.cache_clear()
    _png.cache_clear()


# --- where charts go ---------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Write to a temporary name and rename, as every site file is: a web server never serves half a chart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def site_charts(
    session: Session, out: Path, *, now: datetime, category_titles: Mapping[str, str]
) -> ChartSet:
    """Count, draw and write DIR/charts/NAME.svg and NAME-narrow.svg, and spark-CATEGORY.svg for the index.
    Charts of an earlier build that are now empty are removed, so no page links a stale picture."""
    since, _ = period(now)
    cs = render(
        chart_set(read_rows(session, since=since, until=_utc(now)), now=now, category_titles=category_titles)
    )
    folder = out / "charts"
    keep: set[str] = set()
    for c in cs.charts:
        for variant, svg in (("wide", c.svg), ("narrow", c.svg_narrow)):
            if svg is None:
                continue
            name = f"{c.id}.svg" if variant == "wide" else f"{c.id}-narrow.svg"
            _write(folder / name, svg)
            c.files[variant] = name
            keep.add(name)
    for sp in cs.sparklines:
        if sp.svg is not None:
            sp.file = f"spark-{slug(sp.id)}.svg"
            _write(folder / sp.file, sp.svg)
            keep.add(sp.file)
    if folder.is_dir():
        for p in folder.glob("*.svg"):
            if p.name not in keep:
                p.unlink(missing_ok=True)
    return cs


def digest_charts(
    session: Session,
    *,
    now: datetime,
    category_titles: Mapping[str, str],
    passing: Callable[[Row], list[str] | None],
) -> ChartSet:
    """The charts of a digest: only incidents `passing` keeps (it returns the categories to count, or None to
    leave the incident out), drawn in memory for the page to inline."""
    since, _ = period(now)
    kept = (
        Row(r.first_seen, cats, r.countries, r.severity)
        for r in read_rows(session, since=since, until=_utc(now))
        if (cats := passing(r))
    )
    return render(chart_set(kept, now=now, category_titles=category_titles), sparklines=False)


def for_digest(session: Session, d: Any, cats: Mapping[str, Any], *, now: datetime) -> ChartSet | None:
    """The charts a digest's page and email carry: incidents its filters pass (countries, categories, minimum
    severity), each counted in the categories it shows. None for an `immediate` digest: an alert about one
    incident is no place for a year of trends."""
    if getattr(d, "immediate", False):
        return None
    from monitor.deliver.digest.selection import passing_categories

    wanted = set(d.filters.countries)

    def passing(r: Row) -> list[str] | None:
        if wanted and not wanted.intersection(r.countries):
            return None
        return passing_categories(r.categories, d, dict(cats)) or None

    titles = {c: getattr(info, "title", c) for c, info in cats.items()}
    return digest_charts(session, now=now, category_titles=titles, passing=passing)


@dataclass(frozen=True)
class InlineImage:
    cid: str  # without the angle brackets
    data: bytes
    subtype: str = "png"


_MARK_START, _MARK_END = "<!--charts-->", "<!--/charts-->"


def email_variant(
    page_html: str, charts: ChartSet | None, env: Any, domain: str
) -> tuple[str, list[InlineImage]]:
    """The digest page as the email's HTML part: the inline SVG block (between the template's <!--charts-->
    marks) becomes PNG pictures attached by Content-ID, which mail clients show without fetching anything, or
    goes when cairo is not installed. Returns the HTML and the pictures to attach."""
    start, end = page_html.find(_MARK_START), page_html.find(_MARK_END)
    if charts is None or start < 0 or end < start:
        return page_html, []
    images: list[InlineImage] = []
    shown: list[tuple[Chart, str | None]] = []
    for c in charts.charts:
        data = png(c.svg, scale=1.5) if c.svg else None
        if c.svg and data is None:
            images = []
            shown = []
            break  # no cairo here: no pictures at all rather than some
        cid = None
        if data is not None:
            cid = f"chart-{c.id}.{uuid.uuid4().hex[:16]}@{domain}"
            images.append(InlineImage(cid, data))
        shown.append((c, cid))
    block = env.get_template("email/_charts_email.html").render(charts=charts, shown=shown)
    return page_html[:start] + block + page_html[end + len(_MARK_END) :], images
