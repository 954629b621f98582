"""What a digest shows of each incident and feed: plain view objects the email and page templates read.

incident_view(selected, digest, categories, feed_titles, sources) -> IncidentView
group_views(views, categories) -> [CategoryGroup]   by primary category, most severe first
feed_problems(session, polling, now=) -> [FeedProblem]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from monitor.config.digests import DigestConfig
from monitor.config.models import PollingSettings
from monitor.deliver.digest.selection import Selected
from monitor.deliver.render import COUNTRY_NAMES, safe_url
from monitor.ingest.policy import feed_health
from monitor.rules.explain import CategoryInfo
from monitor.severity import rank
from monitor.store.models import Feed, ItemSource

MAX_SOURCES = 8  # per incident in a message; the page on the site has them all
MAX_TERMS = 6
PROBLEM_STATES = ("failing", "silent", "muted", "rate_limited")
INCIDENT_PATH = "incident/{id}.html"  # under site_url: where `site build` writes one page per incident


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


def matched_terms(sel: Selected) -> tuple[list[str], str | None]:
    """The matched terms (the "why") for the categories shown, and one snippet around a hit."""
    terms: list[str] = []
    seen: set[str] = set()
    snip: str | None = None
    for it in sel.items:
        matches = it.matches if isinstance(it.matches, dict) else {}
        for cid in sel.categories:
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
    sel: Selected,
    d: DigestConfig,
    cats: dict[str, CategoryInfo],
    feed_titles: dict[str, str],
    sources: dict[int, list[ItemSource]],
) -> IncidentView:
    inc = sel.incident
    assert inc.id is not None
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
                is_new=sel.prev_version is not None and it.fetched > sel.prev_version,
            )
        )
    if sel.kind == "update":
        views.sort(key=lambda v: not v.is_new)  # what is new first
    terms, snip = matched_terms(sel)
    primary = sel.categories[0]
    return IncidentView(
        id=inc.id,
        title=inc.title or (sel.items[0].title if sel.items else f"Incident {inc.id}"),
        kind=sel.kind,
        severity=cats[primary].severity if primary in cats else inc.severity,
        category=primary,
        categories=[cats[c].title if c in cats else c for c in sel.categories],
        countries=[COUNTRY_NAMES.get(c, c) for c in inc.countries or []],
        first_seen=fmt(inc.first_seen, d),
        last_seen=fmt(inc.last_seen, d),
        sources=views[:MAX_SOURCES],
        more_sources=max(0, len(views) - MAX_SOURCES),
        terms=terms,
        snippet=snip,
        new_sources=max(0, inc.item_count - sel.prev_items) if sel.kind == "update" else 0,
        url=(d.site_url + INCIDENT_PATH.format(id=inc.id)) if d.site_url else None,
    )


def group_views(views: list[IncidentView], cats: dict[str, CategoryInfo]) -> list[CategoryGroup]:
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
    for g in groups.values():
        g.incidents.sort(key=lambda v: v.last_seen, reverse=True)
    return sorted(groups.values(), key=lambda g: (rank(g.severity), order.get(g.id, 99), g.id))


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
