"""The static site (`monitor site build --out DIR`): plain files any web server (or a browser from disk) can show.

    DIR/index.html                recent incidents, filterable by category, country and date (site.js, optional)
    DIR/incident/ID.html          one incident: all its sources, why each matched, why they were grouped
    DIR/category/ID.html          every incident of one category; DIR/categories.html lists them
    DIR/archive.html, archive/YYYY-MM.html   every incident by the month it was first reported
    DIR/digests.html              past digests: pages in DIR/digests/ (delivered ones copied from the outbox)
    DIR/feed.atom                 Atom 1.0 of the most recently changed incidents
    DIR/charts.html, DIR/charts/*.svg   incidents per week by category, country and severity (monitor.deliver.charts)
    DIR/incidents.json|csv, DIR/items.json|csv   exports (classified items only, incident by incident in id order,
                                  then those in no incident)
    DIR/site.css, DIR/site.js, DIR/favicon.svg   our own style, script and icon; the CSP of every page allows nothing else

Incidents are read and their pages written in batches, so memory grows with the number of incidents only by a
small summary row each (for the index, category and archive lists), never with the items' texts. Each file is
written to a temporary name and renamed, so a web server never serves half a page.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import quote

import jinja2
from sqlalchemy import Engine, or_
from sqlalchemy import select as sa_select
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from monitor.deliver import render
from monitor.deliver.atom import IncidentEntry, SourceLink, incidents_atom
from monitor.deliver.charts import site_charts
from monitor.deliver.digest import delivered_digests
from monitor.deliver.exports import IncidentCsv, IncidentJson, IncidentOptions, ItemCsv, JsonArray, Member
from monitor.deliver.render import slug
from monitor.incidents.display import fresh_display
from monitor.store.engine import session_scope
from monitor.store.models import Feed, Incident, Item, ItemSource
from monitor.store.queries import item_json

__all__ = ["SiteReport", "build_site", "highlight"]

_LANG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
SOURCES_IN_SUMMARY = 3  # sources named in the Atom entry of an incident; its page has them all
EXCERPT_CHARS = 400
_STREAM_PIECES = 256
_WHOLE_PAGE_REPORTS = 50  # an incident page of at most this many reports is rendered whole (~250 KB at most)
# Columns nothing on the site shows (an incident's grouping signature: its members' names, stems and places, the
# largest thing it stores), deferred: read only if a user's template asks for it.
_NOT_SHOWN_INCIDENT = [defer(getattr(Incident, name)) for name in ("signature",)]
# Every column of a report is read: the incident exports' location column needs its places.
_ITEM_COLUMNS = list(Item.__table__.c)  # type: ignore[attr-defined]


def highlight(snippet: str, needles: Iterable[str]) -> list[tuple[str, bool]]:
    """`snippet` cut into (text, is_match) parts around the first case-insensitive occurrence of a needle; the
    template escapes every part, so marking a hit never means inserting feed text as markup."""
    low = snippet.casefold()
    for n in needles:
        n = (n or "").strip().casefold()
        if not n or len(n) != len(n.casefold()):
            continue
        i = low.find(n)
        # casefold can change lengths (ß -> ss); only slice when offsets in both strings agree
        if i >= 0 and len(low) == len(snippet):
            return [(snippet[:i], False), (snippet[i : i + len(n)], True), (snippet[i + len(n) :], False)]
    return [(snippet, False)]


@dataclass
class SiteReport:
    out: Path
    incidents: int = 0
    items: int = 0
    pages: int = 0
    unchanged: int = 0  # pages whose file held the same bytes already, so it was not written again
    digests: int = 0
    files: list[str] = field(default_factory=list)  # the top-level files, for the CLI summary

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "incidents": self.incidents,
            "items": self.items,
            "pages": self.pages,
            "unchanged": self.unchanged,
            "digests": self.digests,
            "files": self.files,
        }


_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_temp_names = itertools.count()


def _temp_file(folder: Path, name: str) -> tuple[int, str]:
    """A new file to write `name` into and rename, as mkstemp makes one (mode 0600, never a file that exists) but
    named by the process and a counter: mkstemp's random names cost more than creating the file. mkstemp when
    that name is taken (a leftover of a build that was killed)."""
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_temp_names)}")
    try:
        return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
    except FileExistsError:
        return tempfile.mkstemp(prefix=f".{name}.", dir=folder)


@contextmanager
def _replacing(path: Path) -> Iterator[int]:
    """A new temporary file in `path`'s folder (which must exist) to write through its descriptor, renamed over
    `path` with mode 0644 when the block ends, removed if it raises: a web server never serves half a file."""
    fd, tmp = _temp_file(path.parent, path.name)
    try:
        try:
            yield fd
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; a web server usually runs as another user
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _atomic(path: Path) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path) as fd, open(fd, "w", encoding="utf-8", newline="\n", closefd=False) as fh:
        yield fh


def _same_file(path: Path, data: bytes) -> bool:
    """Whether `path` holds exactly `data` already."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return os.fstat(fh.fileno()).st_size == len(data) and fh.readall() == data
    except OSError:
        return False


def _write_whole(path: Path, data: bytes, *, new_folder: bool = False) -> bool:
    """`data` into `path` as `_atomic` writes it, in one write call: a page through a text file object cost a
    buffer, an encoder and a write per 8 KiB, and the system calls add up over thousands of pages. The folder
    must exist. A file that holds `data` already is left alone (False): a rebuild after a quiet poll rewrites
    only what changed, which keeps mtimes (and a web server's caching) meaningful and spares creating thousands
    of files, the costliest part of writing a page. `new_folder`: the folder was made by this build, so there is
    no file to compare with."""
    if not new_folder and _same_file(path, data):
        return False
    with _replacing(path) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    return True


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


@dataclass
class _Builder:
    env: jinja2.Environment
    out: Path
    common: dict[str, Any]
    report: SiteReport
    folders: set[Path] = field(default_factory=set)  # made or found during this build
    new_folders: set[Path] = field(default_factory=set)  # made by this build: every page in them is new
    templates: dict[str, jinja2.Template] = field(default_factory=dict)  # get_template costs a cache lookup

    def page(self, rel: str, template: str, *, small: bool = False, **ctx: Any) -> None:
        """`small`: the page is rendered whole and written at once (an incident page of a few reports); else it is
        streamed, so a category page with thousands of rows is never one string in memory."""
        depth = rel.count("/")
        t = self.templates.get(template)
        if t is None:
            t = self.templates[template] = self.env.get_template(template)
        path = self.out / rel
        folder = path.parent
        if folder not in self.folders:
            try:
                folder.mkdir(parents=True)
                self.new_folders.add(folder)
            except FileExistsError:
                pass
            self.folders.add(folder)
        if small:
            data = t.render(**self.common, root="../" * depth, **ctx).encode("utf-8")
            if not _write_whole(path, data, new_folder=folder in self.new_folders):
                self.report.unchanged += 1
        else:
            stream = t.stream(**self.common, root="../" * depth, **ctx)
            # Buffered, so the file gets one write per _STREAM_PIECES pieces of template output, not one per piece.
            stream.enable_buffering(_STREAM_PIECES)
            with _atomic(path) as fh:
                fh.writelines(stream)
        self.report.pages += 1

    def static(self, name: str) -> None:
        # Through the loader, so a user's own site.css or site.js overrides ours like any template.
        loader = self.env.loader
        assert loader is not None
        source, _, _ = loader.get_source(self.env, f"site/{name}")
        with _atomic(self.out / name) as fh:
            fh.write(source)


# What an incident page shows of each report. Objects with slots, not dicts: a template reads `it.title` as an
# attribute first, and a dict answers that only after a failed attribute lookup, thousands of times per build.
@dataclass(slots=True)
class FeedLink:
    title: str
    url: str | None


@dataclass(slots=True)
class HitView:
    term: str
    field: str
    parts: list[tuple[str, bool]]  # the snippet cut around the hit (highlight)


@dataclass(slots=True)
class MatchView:
    category: str
    rule: str
    hits: list[HitView]


@dataclass(slots=True)
class ItemView:
    id: int
    title: str
    url: str | None
    published: datetime
    published_estimated: bool
    lang: str | None
    feeds: list[FeedLink]
    excerpt: str
    html: str
    matches: list[MatchView]
    grouping: str | None


def _matches_view(matches: Any, titles: Mapping[str, str]) -> list[MatchView]:
    """The rule engine's `matches` record, reshaped for the template (defensive: it is JSON from the database)."""
    out: list[MatchView] = []
    if not isinstance(matches, dict):
        return out
    for cat in sorted(matches, key=str):
        m = matches[cat]
        if not isinstance(m, dict):
            continue
        hits = []
        for h in m.get("hits") or []:
            if not isinstance(h, dict):
                continue
            snippet = str(h.get("snippet") or "")
            term = str(h.get("term") or "")
            hits.append(
                HitView(
                    term=term,
                    field=str(h.get("field") or ""),
                    parts=highlight(snippet, [str(h.get("form") or ""), term.rstrip("*")]) if snippet else [],
                )
            )
        out.append(MatchView(category=str(cat), rule=str(m.get("rule") or ""), hits=hits[:10]))
    return out


def _summary(inc: Incident, sources: list[SourceLink]) -> IncidentEntry:
    assert inc.id is not None
    return IncidentEntry(
        id=inc.id,
        title=inc.title,
        categories=list(inc.categories),
        countries=list(inc.countries),
        severity=inc.severity,
        first_seen=_utc(inc.first_seen),
        last_seen=_utc(inc.last_seen),
        updated_at=_utc(inc.updated_at),
        item_count=inc.item_count,
        sources=sources[:SOURCES_IN_SUMMARY],
    )


class _RowOnce:
    """`incident_row(inc, root)` of the site's _macros.html (ours or the user's), rendered once per incident and
    folder depth: an incident's row is the same on the index, each of its categories' pages and its month's page,
    and rendering it again for each was a tenth of a build. Keeps a row of markup (~1 KB) per incident."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        self.macro: Any = None
        self.rows: dict[tuple[int, str], Any] = {}

    def __call__(self, inc: IncidentEntry, root: str) -> Any:
        key = (inc.id, root)
        row = self.rows.get(key)
        if row is None:
            if self.macro is None:
                self.macro = self.env.get_template("site/_macros.html").module.incident_row  # type: ignore[attr-defined]
            row = self.rows[key] = self.macro(inc, root)
        return row


def _publish_digests(session: Session, out: Path, limit: int = 200) -> None:
    """Copy the pages of delivered digests (the outbox keeps them) into DIR/digests/, under the same names the
    digest's own page delivery uses, so the archive is complete even when digests are only emailed."""
    for row in delivered_digests(session, limit=limit):
        if not row.page_html:
            continue
        target = out / "digests" / f"{slug(row.digest)}-{_utc(row.created_at).strftime('%Y-%m-%d-%H%M')}.html"
        if not target.exists():
            with _atomic(target) as fh:
                fh.write(row.page_html)


def _digests(out: Path) -> list[dict[str, Any]]:
    """Files the digest pages left in DIR/digests/ (newest first); the site only links them."""
    folder = out / "digests"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in (".html", ".htm") and not p.name.startswith("."):
            st = p.stat()
            found.append(
                {
                    "name": p.stem,
                    "href": quote(p.name),
                    "modified": datetime.fromtimestamp(st.st_mtime, UTC),
                }
            )
    found.sort(key=lambda d: (d["modified"], d["name"]), reverse=True)
    return found


def build_site(
    engine: Engine,
    out: Path,
    *,
    templates: Path | None = None,
    category_titles: Mapping[str, str] | None = None,
    site_title: str = "Civic-space monitor",
    base_url: str | None = None,
    now: datetime | None = None,
    recent_days: int = 30,
    index_limit: int = 500,
    atom_limit: int = 100,
    batch: int = 200,
) -> SiteReport:
    """Write the site into `out` (created if needed; other files there, like digests/, are left alone).

    The index shows incidents last reported within `recent_days` of the newest one (at most `index_limit`); every
    incident stays reachable from its category page and the monthly archive.
    """
    out.mkdir(parents=True, exist_ok=True)
    now = _utc(now or datetime.now(UTC))
    env = render.environment(templates)
    # Templates do not change during a build: without this every page would stat its template and the one it
    # extends to see whether to reload them.
    env.auto_reload = False
    titles = {**render.CATEGORY_TITLES, **(category_titles or {})}
    env.globals["category_titles"] = titles
    env.globals["incident_row_once"] = _RowOnce(env)
    report = SiteReport(out=out)

    summaries: list[IncidentEntry] = []
    with session_scope(engine) as s:
        feeds = {f.id: f for f in s.exec(select(Feed))}
        feed_titles = {fid: f.title or f.id for fid, f in feeds.items()}
        common = {"site_title": site_title, "built": now, "feed_count": len(feeds)}
        b = _Builder(env, out, common, report)
        b.static("site.css")
        b.static("site.js")
        b.static("favicon.svg")
        # One pass over incidents and their reports feeds the incident pages and all four exports: reading the
        # reports (with their texts) is most of the cost of a build, so they are read once.
        with (
            _atomic(out / "incidents.json") as jfh,
            _atomic(out / "incidents.csv") as cfh,
            _atomic(out / "items.json") as items_jfh,
            _atomic(out / "items.csv") as items_cfh,
            IncidentJson(jfh, exports := IncidentOptions(base_url, titles)) as ijson,
            JsonArray(items_jfh) as items_json,
        ):
            icsv = IncidentCsv(cfh, exports)
            items_csv = ItemCsv(items_cfh)

            def export(rows: Iterable[tuple[Item, list[str]]]) -> None:
                for item, feeds_of_item in rows:
                    record = item_json(item, feeds_of_item)
                    items_json.add(record)
                    items_csv.add_record(record)

            for incs in _incident_batches(s, batch):
                for inc, items_view, members, sources, exported in _load_batch(s, incs, feed_titles, titles):
                    assert inc.id is not None
                    b.page(
                        render.incident_page(inc.id),
                        "site/incident.html",
                        small=len(items_view) <= _WHOLE_PAGE_REPORTS,
                        inc=inc,
                        items=items_view,
                    )
                    # One record for both files: it names the incident's places and actors, read from every
                    # report's lead, the costliest thing an export does.
                    record = exports.record(inc, members)
                    ijson.add(record)
                    icsv.add_record(record)
                    summaries.append(_summary(inc, sources))
                    export(exported)
                s.expunge_all()  # done with this batch: let its rows go
            for loose in _items_outside_incidents(s, batch * 5):
                export(loose)
                s.expunge_all()
            report.items = items_json.n
        report.incidents = len(summaries)
        _publish_digests(s, out)
        b.common["charts"] = site_charts(s, out, now=now, category_titles=titles)  # every page may show them

    summaries.sort(key=lambda e: (e.last_seen, e.id), reverse=True)
    _write_lists(b, summaries, titles, recent_days, index_limit)
    b.page("charts.html", "site/charts.html")

    digests = _digests(out)
    report.digests = len(digests)
    b.page("digests.html", "site/digests.html", digests=digests)

    by_update = sorted(summaries, key=lambda e: (e.updated_at, e.id), reverse=True)[:atom_limit]
    with _atomic(out / "feed.atom") as fh:
        fh.write(
            incidents_atom(
                by_update,
                title=f"{site_title}: incidents",
                base_url=base_url,
                updated=by_update[0].updated_at if by_update else now,
                category_titles=titles,
            )
        )
    report.files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    return report


def _incident_batches(s: Session, batch: int) -> Iterator[list[Incident]]:
    last = 0
    while True:
        q = (
            select(Incident)
            .options(*_NOT_SHOWN_INCIDENT)
            .where(col(Incident.id) > last, col(Incident.item_count) > 0)
            .order_by(col(Incident.id))
            .limit(batch)
        )
        incs = list(s.exec(q))
        if not incs:
            return
        last = incs[-1].id or last
        yield incs


def _exported(item: Any) -> bool:
    """Whether a report goes into items.json/csv: classified and not pruned."""
    return bool(item.categories) and not item.pruned


def _items_outside_incidents(s: Session, batch: int) -> Iterator[list[tuple[Item, list[str]]]]:
    """Classified reports no listed incident holds (not grouped yet, or their incident is empty), in batches, with
    the feeds that carried each."""
    listed = select(Incident.id).where(col(Incident.item_count) > 0)
    last = 0
    while True:
        rows = list(
            s.exec(
                select(Item)
                .where(
                    col(Item.id) > last,
                    col(Item.pruned).is_(False),
                    or_(col(Item.incident_id).is_(None), col(Item.incident_id).not_in(listed)),
                )
                .order_by(col(Item.id))
                .limit(batch)
            )
        )
        if not rows:
            return
        last = rows[-1].id or last
        feeds: dict[int, list[str]] = defaultdict(list)
        for src in s.exec(
            select(ItemSource)
            .where(col(ItemSource.item_id).in_([r.id for r in rows]))
            .order_by(col(ItemSource.id))
        ):
            feeds[src.item_id].append(src.feed_id)
        yield [(r, feeds.get(r.id, [r.feed_id])) for r in rows if r.id is not None and _exported(r)]


def _load_batch(
    s: Session, incs: list[Incident], feed_titles: Mapping[str, str], titles: Mapping[str, str]
) -> Iterator[tuple[Incident, list[ItemView], list[Member], list[SourceLink], list[tuple[Item, list[str]]]]]:
    ids = [i.id for i in incs]
    # Reports and sources as plain rows, not ORM objects: nothing here changes them, and building an object per
    # row costs about as much again as reading it. A row has the same attribute names as an Item. Read on the
    # session's connection: through the session itself, the ORM wraps even a Core select's rows (a third more).
    conn = s.connection()
    items: dict[int, list[Any]] = defaultdict(list)
    for it in conn.execute(
        sa_select(*_ITEM_COLUMNS)
        .where(col(Item.incident_id).in_(ids))
        .order_by(col(Item.published), col(Item.id))
    ):
        items[it.incident_id].append(it)
    item_ids = [it.id for group in items.values() for it in group]
    sources: dict[int, list[Any]] = defaultdict(list)
    if item_ids:
        for src in conn.execute(
            sa_select(col(ItemSource.item_id), col(ItemSource.feed_id), col(ItemSource.url))
            .where(col(ItemSource.item_id).in_(item_ids))
            .order_by(col(ItemSource.id))
        ):
            sources[src.item_id].append(src)

    feed_title = feed_titles.get  # a feed no longer configured is named by its id
    for inc in incs:
        assert inc.id is not None
        view: list[ItemView] = []
        links: list[SourceLink] = []
        exported: list[tuple[Item, list[str]]] = []
        members: list[Member] = []
        for it in items.get(inc.id, []):
            assert it.id is not None
            url = render.safe_url(it.url)
            srcs = sources.get(it.id, [])
            if _exported(it):
                exported.append((cast(Item, it), [src.feed_id for src in srcs] or [it.feed_id]))
            feed_links = [
                FeedLink(
                    feed_title(src.feed_id, src.feed_id),
                    url if src.url == it.url else render.safe_url(src.url),
                )
                for src in srcs
            ] or [FeedLink(feed_title(it.feed_id, it.feed_id), url)]
            lang = it.language if it.language and _LANG.match(it.language) else None
            entry = it.grouping
            # What grouping worked out for the page (actors, whether the HTML is sanitised already), if current.
            known = fresh_display(it.display, it.url, it.title, it.text, it.html)
            view.append(
                ItemView(
                    id=it.id,
                    title=it.title,
                    url=url,
                    published=it.published,
                    published_estimated=it.published_estimated,
                    lang=lang,
                    feeds=feed_links,
                    excerpt=render.truncate_text(it.text, EXCERPT_CHARS),
                    html=known.html(it.html) if known else it.html,
                    matches=_matches_view(it.matches, titles),
                    grouping=entry.get("text") if isinstance(entry, dict) else None,
                )
            )
            links.append(SourceLink(title=it.title, url=url, feed=feed_title(it.feed_id, it.feed_id)))
            members.append(
                Member.of(
                    cast(Item, it),
                    list(dict.fromkeys(f.title for f in feed_links)),
                    known.actors if known else None,
                )
            )
        yield inc, view, members, links, exported


def _count(rows: Iterable[IncidentEntry], key: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for r in rows:
        c.update(getattr(r, key))
    return c


def _write_lists(
    b: _Builder, summaries: list[IncidentEntry], titles: Mapping[str, str], recent_days: int, index_limit: int
) -> None:
    if summaries:
        since: datetime | None = summaries[0].last_seen - timedelta(days=recent_days)
        recent = [e for e in summaries if since is None or e.last_seen >= since][:index_limit]
    else:
        since, recent = None, []
    cat_counts = _count(summaries, "categories")
    categories: list[dict[str, Any]] = sorted(
        ({"id": c, "title": titles.get(c, c), "count": n} for c, n in cat_counts.items()),
        key=lambda d: (list(titles).index(d["id"]) if d["id"] in titles else len(titles), d["id"]),
    )
    recent_cats = _count(recent, "categories")
    recent_countries = _count(recent, "countries")
    b.page(
        "index.html",
        "site/index.html",
        rows=recent,
        since=since,
        older=len(recent) < len(summaries),
        categories=[{**c, "count": recent_cats[c["id"]]} for c in categories if recent_cats[c["id"]]],
        countries=[
            {"id": k, "title": render.COUNTRY_NAMES.get(k, k), "count": n}
            for k, n in sorted(recent_countries.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        date_min=min(e.first_seen for e in recent).date() if recent else "",
        date_max=max(e.last_seen for e in recent).date() if recent else "",
    )
    b.page("categories.html", "site/categories.html", categories=categories)
    for c in categories:
        rows = [e for e in summaries if c["id"] in e.categories]
        b.page(
            render.category_page(c["id"]),
            "site/list.html",
            heading=c["title"],
            description=None,
            rows=rows,
        )

    months: dict[str, list[IncidentEntry]] = defaultdict(list)
    for e in summaries:
        months[e.first_seen.strftime("%Y-%m")].append(e)
    month_list = [
        {"id": m, "title": datetime.strptime(m, "%Y-%m").strftime("%B %Y"), "count": len(rows)}
        for m, rows in sorted(months.items(), reverse=True)
    ]
    b.page("archive.html", "site/archive.html", months=month_list)
    for m, rows in months.items():
        title = datetime.strptime(m, "%Y-%m").strftime("%B %Y")
        b.page(
            render.month_page(m),
            "site/list.html",
            heading=title,
            description="Incidents first reported this month.",
            rows=rows,
        )
