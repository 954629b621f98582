"""What a digest shows of each incident and feed: plain view objects the email and page templates read.

incident_view(loaded, digest, categories, feed_titles, sources) -> IncidentView   one incident shown in full
group_views(views, categories) -> [CategoryGroup]   by primary category, most severe first
count_rest(picks, digest, categories) -> Rest       the incidents beyond max_incidents, counted with site links
feed_problems(session, polling, now=) -> [FeedProblem]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from monitor.config.digests import DigestConfig
from monitor.config.models import PollingSettings
from monitor.deliver.digest.selection import Pick
from monitor.deliver.render import COUNTRY_NAMES, category_page, incident_page, month_page, safe_url
from monitor.ingest.policy import feed_health
from monitor.rules.explain import CategoryInfo
from monitor.severity import DEFAULT_LEVEL, rank
from monitor.store.models import Feed, Incident, Item, ItemSource

MAX_SOURCES = 8  # per incident in a message; the page on the site has them all
MAX_TERMS = 6
PROBLEM_STATES = ("failing", "silent", "muted", "rate_limited")


@dataclass
class Loaded:
    """An incident a message shows in full: its selection record and its rows (reports without their text)."""

    pick: Pick
    incident: Incident
    items: list[Item]


@dataclass
class SourceView:
    title: str
    url: str | None
    feed: str
    date: str
    is_new: bool = False


@dataclass
class IncidentView:
    id: int
    title: str
    kind: str  # new | update
    severity: str
    category: str
    categories: list[str]  # titles, primary first
    countries: list[str]  # names
    first_seen: str
    last_seen: str
    sources: list[SourceView]
    more_sources: int
    terms: list[str]
    snippet: str | None
    new_sources: int
    url: str | None

    @property
    def meta(self) -> str:
        """One line: countries · dates · other categories · new reports (the same in text and HTML)."""
        dates = (
            self.first_seen if self.last_seen == self.first_seen else f"{self.first_seen} – {self.last_seen}"
        )
        parts = [", ".join(self.countries), dates]
        if len(self.categories) > 1:
            parts.append(", ".join(self.categories))
        if self.kind == "update" and self.new_sources:
            parts.append(f"{self.new_sources} new report" + ("s" if self.new_sources != 1 else ""))
        return " · ".join(p for p in parts if p)


@dataclass
class CategoryGroup:
    id: str
    title: str
    severity: str
    incidents: list[IncidentView] = field(default_factory=list)


@dataclass
class RestCategory:
    """Incidents of one category beyond what the message shows, counted."""

    id: str
    title: str
    severity: str
    count: int
    updates: int  # of which updates to incidents delivered before
    url: str | None  # the site's list of this category


@dataclass
class RestMonth:
    id: str  # YYYY-MM
    title: str  # "November 2026"
    count: int
    url: str | None  # the site's list of incidents first reported that month


@dataclass
class Rest:
    """The incidents a message counts instead of showing (beyond `max_incidents`); delivered all the same."""

    total: int
    updates: int
    categories: list[RestCategory]
    months: list[RestMonth]


@dataclass
class FeedProblem:
    id: str
    title: str
    url: str | None
    state: str
    since: str
    error: str | None


def fmt(dt: datetime | None, d: DigestConfig, with_time: bool = True) -> str:
    """A time as the digest's readers see it: in the digest's time zone."""
    if dt is None:
        return ""
    local = dt.astimezone(d.zone)
    return local.strftime("%Y-%m-%d %H:%M") if with_time else local.strftime("%Y-%m-%d")


def matched_terms(sel: Loaded) -> tuple[list[str], str | None]:
    """The matched terms (the "why") for the categories shown, and one snippet around a hit."""
    terms: list[str] = []
    seen: set[str] = set()
    snip: str | None = None
    for it in sel.items:
        matches = it.matches if isinstance(it.matches, dict) else {}
        for cid in sel.pick.categories:
            m = matches.get(cid)
            if not isinstance(m, dict):
                continue
            for hit in m.get("hits") or []:
                if not isinstance(hit, dict):
                    continue
                term = str(hit.get("form") or hit.get("term") or "").strip()
                if term and term.casefold() not in seen:
                    seen.add(term.casefold())
                    terms.append(term)
                if snip is None and hit.get("snippet"):
                    snip = str(hit["snippet"])
    return terms[:MAX_TERMS], snip


def incident_view(
    sel: Loaded,
    d: DigestConfig,
    cats: dict[str, CategoryInfo],
    feed_titles: dict[str, str],
    sources: dict[int, list[ItemSource]],
) -> IncidentView:
    inc, pick = sel.incident, sel.pick
    views: list[SourceView] = []
    for it in sorted(sel.items, key=lambda i: (i.published, i.id or 0)):
        srcs = sources.get(it.id or -1) or []
        feed_ids = [s.feed_id for s in srcs] or [it.feed_id]
        url = safe_url(it.url) or next((u for s in srcs if (u := safe_url(s.url))), None)
        views.append(
            SourceView(
                title=it.title or "(untitled)",
                url=url,
                feed=", ".join(dict.fromkeys(feed_titles.get(f, f) for f in feed_ids)),
                date=fmt(it.published, d, with_time=False),
                is_new=pick.prev_version is not None and it.fetched > pick.prev_version,
            )
        )
    if pick.kind == "update":
        views.sort(key=lambda v: not v.is_new)  # what is new first
    terms, snip = matched_terms(sel)
    primary = pick.category
    return IncidentView(
        id=pick.id,
        title=inc.title or (sel.items[0].title if sel.items else f"Incident {pick.id}"),
        kind=pick.kind,
        severity=cats[primary].severity if primary in cats else inc.severity,
        category=primary,
        categories=[cats[c].title if c in cats else c for c in pick.categories],
        countries=[COUNTRY_NAMES.get(c, c) for c in inc.countries or []],
        first_seen=fmt(inc.first_seen, d),
        last_seen=fmt(inc.last_seen, d),
        sources=views[:MAX_SOURCES],
        more_sources=max(0, len(views) - MAX_SOURCES),
        terms=terms,
        snippet=snip,
        new_sources=max(0, inc.item_count - pick.prev_items) if pick.kind == "update" else 0,
        url=(d.site_url + incident_page(pick.id)) if d.site_url else None,
    )


def group_views(views: Iterable[IncidentView], cats: dict[str, CategoryInfo]) -> list[CategoryGroup]:
    """Views by their primary category, most severe category first; within one, in the order given (the
    message's order: most severe, most reported, most recent)."""
    order = {cid: i for i, cid in enumerate(cats)}
    groups: dict[str, CategoryGroup] = {}
    for v in views:
        meta = cats.get(v.category)
        g = groups.setdefault(
            v.category,
            CategoryGroup(
                v.category, meta.title if meta else v.category, meta.severity if meta else v.severity
            ),
        )
        g.incidents.append(v)
    return sorted(groups.values(), key=lambda g: (rank(g.severity), order.get(g.id, 99), g.id))


def count_rest(picks: Iterable[Pick], d: DigestConfig, cats: dict[str, CategoryInfo]) -> Rest | None:
    """Count the incidents a message does not show, by primary category and by the month they were first
    reported, with links to the site's lists that hold them (the site has no page per digest period: its
    category pages list every incident of a category, its archive pages every incident first reported in a
    month, both covering whatever period a digest spans). None when there are none."""
    order = {cid: i for i, cid in enumerate(cats)}
    by_cat: dict[str, list[int]] = {}
    by_month: dict[str, int] = {}
    total = updates = 0
    for p in picks:
        total += 1
        upd = p.kind == "update"
        updates += upd
        c = by_cat.setdefault(p.category, [0, 0])
        c[0] += 1
        c[1] += upd
        # the site files an incident under the UTC month of its first report
        month = p.first_seen.astimezone(UTC).strftime("%Y-%m")
        by_month[month] = by_month.get(month, 0) + 1
    if not total:
        return None
    site = d.site_url
    categories = [
        RestCategory(
            id=cid,
            title=cats[cid].title if cid in cats else cid,
            severity=cats[cid].severity if cid in cats else DEFAULT_LEVEL,
            count=n,
            updates=u,
            url=site + category_page(cid) if site else None,
        )
        for cid, (n, u) in by_cat.items()
    ]
    categories.sort(key=lambda c: (rank(c.severity), order.get(c.id, 99), c.id))
    months = [
        RestMonth(
            id=m,
            title=datetime.strptime(m, "%Y-%m").strftime("%B %Y"),
            count=n,
            url=site + month_page(m) if site else None,
        )
        for m, n in sorted(by_month.items(), reverse=True)
    ]
    return Rest(total=total, updates=updates, categories=categories, months=months)


def feed_problems(session: Session, polling: PollingSettings, *, now: datetime) -> list[FeedProblem]:
    """Feeds a reader should know about: failing, silent, muted or rate limited (monitor.ingest.policy.health)."""
    out = []
    for f in session.exec(select(Feed).order_by(col(Feed.id))):
        state = feed_health(f, now, polling)
        if state not in PROBLEM_STATES:
            continue
        since = (
            f.last_error_at if state in ("failing", "rate_limited") else f.last_new_item_at or f.created_at
        )
        error = f.mute_reason if state == "muted" else f.last_error if state != "silent" else None
        out.append(
            FeedProblem(
                id=f.id,
                title=f.title or f.id,
                url=f.site_url or f.url,
                state=state,
                since=since.strftime("%Y-%m-%d") if since else "",
                error=" ".join(error.split())[:300] if error else None,
            )
        )
    return out
