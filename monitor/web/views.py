"""What each workspace page shows, read from the store: plain functions of (session, parameters) -> context.

No HTTP here, so tests and other front ends can call them. Feed text stays text: templates escape it, and the
only HTML built here (highlighted snippets) is escaped piece by piece before a <mark> goes around a term.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape
from sqlalchemy import String, bindparam, or_, text
from sqlmodel import Session, col, select

from monitor.deliver.render import safe_url
from monitor.search import SearchError, SearchFilters, search
from monitor.store.models import Feed, Incident, Item, ItemSource
from monitor.store.verdicts import apply_verdicts, item_notes, latest_verdicts, verdict_history
from monitor.store.workspace_models import AuditEntry, Verdict

PAGE_SIZE = 50
SCOPES = ("matched", "all", "unmatched")
VERDICT_FILTERS = ("any", "none", "confirm", "reject", "add")
MAX_QUERY = 500


class BadInput(ValueError):
    """A request parameter that cannot be used; the message names it."""


@dataclass(frozen=True)
class ListFilters:
    q: str = ""
    category: str = ""
    country: str = ""
    feed: str = ""
    language: str = ""
    since: date | None = None
    until: date | None = None  # inclusive: the whole day
    incident: int | None = None
    verdict: str = ""
    scope: str = "matched"
    page: int = 0

    def params(self, **change: Any) -> str:
        """The query string of these filters with `change` applied (for links: next page, one filter off)."""
        f = replace(self, **change)
        pairs = {
            "q": f.q,
            "category": f.category,
            "country": f.country,
            "feed": f.feed,
            "language": f.language,
            "since": f.since.isoformat() if f.since else "",
            "until": f.until.isoformat() if f.until else "",
            "incident": str(f.incident) if f.incident is not None else "",
            "verdict": f.verdict,
            "scope": f.scope if f.scope != "matched" else "",
            "page": str(f.page) if f.page else "",
        }
        return urlencode({k: v for k, v in pairs.items() if v})


def _date(params: Mapping[str, str], name: str) -> date | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadInput(f"{name}: {raw[:40]!r} is not a date (YYYY-MM-DD)") from None


def _int(params: Mapping[str, str], name: str, *, minimum: int = 0) -> int | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 12 or int(raw) < minimum:
        raise BadInput(f"{name}: {raw[:40]!r} is not a number")
    return int(raw)


def parse_filters(params: Mapping[str, str], categories: Iterable[str]) -> ListFilters:
    q = (params.get("q") or "").strip()
    if len(q) > MAX_QUERY:
        raise BadInput(f"q: the search is {len(q)} characters long; at most {MAX_QUERY}")
    category = (params.get("category") or "").strip()
    if category and category not in set(categories):
        raise BadInput(f"category: unknown category {category[:64]!r}")
    country = (params.get("country") or "").strip().upper()
    if country and not re.fullmatch(r"[A-Z]{2}", country):
        raise BadInput(f"country: {country[:10]!r} is not a two-letter country code")
    language = (params.get("language") or "").strip().lower()
    if language and not re.fullmatch(r"[a-z]{2,3}", language):
        raise BadInput(f"language: {language[:10]!r} is not a language code")
    verdict = (params.get("verdict") or "").strip()
    if verdict and verdict not in VERDICT_FILTERS:
        raise BadInput(f"verdict: must be one of {', '.join(VERDICT_FILTERS)}")
    scope = (params.get("scope") or "matched").strip()
    if scope not in SCOPES:
        raise BadInput(f"scope: must be one of {', '.join(SCOPES)}")
    since, until = _date(params, "since"), _date(params, "until")
    if since and until and until < since:
        raise BadInput("until: the end date is before the start date")
    return ListFilters(
        q=q,
        category=category,
        country=country,
        feed=(params.get("feed") or "").strip()[:64],
        language=language,
        since=since,
        until=until,
        incident=_int(params, "incident", minimum=1),
        verdict=verdict,
        scope=scope,
        page=min(_int(params, "page") or 0, 10_000),
    )


# --- highlighting ---------------------------------------------------------------------------------------------


def highlight(textvalue: str, terms: Sequence[str]) -> Markup:
    """`textvalue` escaped, with each occurrence of a term (case-insensitive) in <mark>."""
    wanted = sorted({t for t in terms if t and t.strip()}, key=len, reverse=True)
    if not wanted:
        return escape(textvalue)
    pattern = re.compile("|".join(re.escape(t) for t in wanted), re.IGNORECASE)
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(textvalue):
        out.append(str(escape(textvalue[pos : m.start()])))
        out.append(f"<mark>{escape(m.group(0))}</mark>")
        pos = m.end()
    out.append(str(escape(textvalue[pos:])))
    return Markup("".join(out))


# --- categories with verdicts -------------------------------------------------------------------------------


@dataclass
class Chip:
    """One category of one item as the workspace shows it."""

    category: str
    state: str  # rules | confirmed | rejected | added
    by: str | None = None
    at: datetime | None = None
    note: str | None = None
    score: float = 0.0

    @property
    def effective(self) -> bool:
        return self.state != "rejected"


_STATE = {"confirm": "confirmed", "reject": "rejected", "add": "added"}


def chips(item: Item, verdicts: Mapping[str, Verdict] | None) -> list[Chip]:
    rules = list(item.categories or [])
    verdicts = verdicts or {}
    out: list[Chip] = []
    for cat in [*rules, *sorted(set(verdicts) - set(rules))]:
        v = verdicts.get(cat)
        match = (item.matches or {}).get(cat) or {}
        score = float(match.get("score") or 0.0) if isinstance(match, dict) else 0.0
        if v is None:
            out.append(Chip(cat, "rules", score=score))
        else:
            state = _STATE.get(v.verdict, v.verdict)
            if v.verdict == "confirm" and cat not in rules:
                state = "added"  # confirmed after the rules dropped it: it holds by the analyst's word alone
            out.append(Chip(cat, state, v.author, v.created_at, v.note, score))
    return out


def top_category(item_chips: Sequence[Chip]) -> str | None:
    """The category c/r act on: the best-scoring one the rules gave that still holds, else any that holds,
    else the first the rules gave (so a rejection can be taken back)."""
    from_rules = [c for c in item_chips if c.state in ("rules", "confirmed") and c.score >= 0]
    if from_rules:
        return max(from_rules, key=lambda c: c.score).category
    holding = [c for c in item_chips if c.effective]
    if holding:
        return holding[0].category
    return item_chips[0].category if item_chips else None


# --- the list -------------------------------------------------------------------------------------------------


@dataclass
class Row:
    item: Item
    url: str | None
    chips: list[Chip]
    top: str | None
    title_html: Markup | None = None  # search results: the title with the matches marked
    snippet_html: Markup | None = None


@dataclass
class ListPage:
    filters: ListFilters
    rows: list[Row] = field(default_factory=list)
    more: bool = False
    error: str | None = None  # a malformed search, said in words
    searched: bool = False


def _json_has(dialect: str, column: str, param: str) -> str:
    if dialect == "sqlite":
        return f"EXISTS (SELECT 1 FROM json_each(item.{column}) WHERE json_each.value = :{param})"
    return f"(CAST(item.{column} AS jsonb) @> jsonb_build_array(CAST(:{param} AS text)))"


# The verdict in force on (item, category): the latest row, as monitor.store.verdicts decides.
_LATEST = "(SELECT v.verdict FROM verdict v WHERE v.item_id = item.id AND v.category = :w_cat ORDER BY v.id DESC LIMIT 1)"


def _conditions(dialect: str, f: ListFilters) -> list[Any]:
    c: list[Any] = []
    if f.category:
        rules = _json_has(dialect, "categories", "w_cat")
        c.append(
            text(
                f"COALESCE({_LATEST}, CASE WHEN {rules} THEN 'rules' END) IN ('rules', 'confirm', 'add')"
            ).bindparams(bindparam("w_cat", f.category, type_=String))
        )
    elif f.scope != "all":
        # Matched: the categories hold now, or an analyst judged the item (a match rejected to nothing stays
        # listed, with its rejected chip, so the verdict can be seen and taken back).
        holds = (
            "(json_array_length(item.categories) > 0 OR EXISTS (SELECT 1 FROM verdict v "
            "WHERE v.item_id = item.id))"
        )
        c.append(text(holds if f.scope == "matched" else f"NOT {holds}"))
    if f.scope != "all":
        c.append(col(Item.pruned).is_(False))
    if f.country:
        c.append(text(_json_has(dialect, "countries", "w_country")).bindparams(w_country=f.country))
    if f.feed:
        c.append(
            or_(
                col(Item.feed_id) == f.feed,
                col(Item.id).in_(select(ItemSource.item_id).where(ItemSource.feed_id == f.feed)),
            )
        )
    if f.language:
        c.append(col(Item.language) == f.language)
    if f.since:
        c.append(col(Item.published) >= datetime.combine(f.since, datetime.min.time(), UTC))
    if f.until:
        c.append(
            col(Item.published) < datetime.combine(f.until + timedelta(days=1), datetime.min.time(), UTC)
        )
    if f.incident is not None:
        c.append(col(Item.incident_id) == f.incident)
    if f.verdict:
        on_cat = " AND v.category = :w_vcat" if f.category else ""
        if f.verdict in ("any", "none"):
            sql = f"EXISTS (SELECT 1 FROM verdict v WHERE v.item_id = item.id{on_cat})"
            c.append(text(("NOT " if f.verdict == "none" else "") + sql).bindparams(
                *([bindparam("w_vcat", f.category, type_=String)] if f.category else [])
            ))  # fmt: skip
        else:
            sql = (
                "EXISTS (SELECT 1 FROM verdict v WHERE v.item_id = item.id AND v.verdict = :w_verdict"
                f"{on_cat} AND v.id = (SELECT max(v2.id) FROM verdict v2 WHERE v2.item_id = v.item_id "
                "AND v2.category = v.category))"
            )
            params = [bindparam("w_verdict", f.verdict, type_=String)]
            if f.category:
                params.append(bindparam("w_vcat", f.category, type_=String))
            c.append(text(sql).bindparams(*params))
    return c


def _rows(session: Session, items: Sequence[Item]) -> list[Row]:
    ids = [i.id for i in items if i.id is not None]
    latest = latest_verdicts(session, ids)
    rows = []
    for item in items:
        assert item.id is not None
        item_chips = chips(item, latest.get(item.id))
        rows.append(Row(item, safe_url(item.url), item_chips, top_category(item_chips)))
    return rows


def list_items(session: Session, f: ListFilters) -> ListPage:
    """The list page: a search when `f.q` is given, else the newest items passing the filters."""
    page = ListPage(filters=f)
    if f.q:
        page.searched = True
        return _search(session, f, page)
    dialect = session.get_bind().dialect.name
    stmt = (
        select(Item)
        .where(*_conditions(dialect, f))
        .order_by(col(Item.published).desc(), col(Item.id).desc())
        .offset(f.page * PAGE_SIZE)
        .limit(PAGE_SIZE + 1)
    )
    items = list(session.exec(stmt).all())
    page.more = len(items) > PAGE_SIZE
    page.rows = _rows(session, items[:PAGE_SIZE])
    return page


def _search(session: Session, f: ListFilters, page: ListPage) -> ListPage:

    filters = SearchFilters(
        category=f.category or None,
        country=f.country or None,
        feed=f.feed or None,
        language=f.language or None,
        since=datetime.combine(f.since, datetime.min.time(), UTC) if f.since else None,
        until=datetime.combine(f.until + timedelta(days=1), datetime.min.time(), UTC) if f.until else None,
        incident=f.incident,
        verdict=f.verdict or None,
    )
    try:
        results = search(session, f.q, filters=filters, limit=PAGE_SIZE, offset=f.page * PAGE_SIZE)
    except SearchError as exc:
        describe = getattr(exc, "describe", None)
        page.error = describe() if callable(describe) else str(exc)
        return page
    ids = [h.item_id for h in results.hits]
    by_id = {i.id: i for i in session.exec(select(Item).where(col(Item.id).in_(ids))).all()} if ids else {}
    rows = {r.item.id: r for r in _rows(session, [by_id[i] for i in ids if i in by_id])}
    for hit in results.hits:
        row = rows.get(hit.item_id)
        if row is None:
            continue
        # The search module escapes the stored text itself and adds only <mark>: see monitor.search.snippet.
        row.title_html = Markup(hit.title_html)
        row.snippet_html = Markup(hit.snippet_html)
        page.rows.append(row)
    page.more = results.more
    return page


# --- one item -------------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    rule: str
    score: float
    hits: list[dict[str, Any]]  # term, field, snippet_html


def explanation(match: Any) -> Explanation | None:
    if not isinstance(match, dict):
        return None
    hits = []
    for h in match.get("hits") or []:
        if not isinstance(h, dict):
            continue
        term = str(h.get("term") or "")
        hits.append(
            {
                "term": term,
                "field": str(h.get("field") or ""),
                "snippet_html": highlight(str(h.get("snippet") or ""), [term]),
            }
        )
    try:
        score = float(match.get("score") or 0.0)
    except (TypeError, ValueError):
        score = 0.0
    return Explanation(rule=str(match.get("rule") or ""), score=score, hits=hits)


def item_context(session: Session, item_id: int) -> dict[str, Any] | None:
    item = session.get(Item, item_id)
    if item is None:
        return None
    latest = latest_verdicts(session, [item_id]).get(item_id, {})
    item_chips = chips(item, latest)
    sources = list(session.exec(select(ItemSource).where(ItemSource.item_id == item_id)).all())
    feeds = {f.id: f for f in session.exec(select(Feed).where(col(Feed.id).in_({s.feed_id for s in sources} | {item.feed_id}))).all()}  # fmt: skip
    incident = session.get(Incident, item.incident_id) if item.incident_id is not None else None
    terms = [
        str(h.get("term") or "")
        for m in (item.matches or {}).values()
        if isinstance(m, dict)
        for h in (m.get("hits") or [])
        if isinstance(h, dict)
    ]
    return {
        "item": item,
        "url": safe_url(item.url),
        "chips": item_chips,
        "top": top_category(item_chips),
        "explanations": {c.category: explanation((item.matches or {}).get(c.category)) for c in item_chips},
        "sources": [(s, safe_url(s.url), feeds.get(s.feed_id)) for s in sources],
        "feed": feeds.get(item.feed_id),
        "incident": incident,
        "history": verdict_history(session, item_id),
        "notes": item_notes(session, item_id),
        "text_html": highlight(item.text or "", terms),
        "effective": apply_verdicts(item.categories or [], latest),
    }


# --- one incident ---------------------------------------------------------------------------------------------

MERGE_CANDIDATES = 30


def incident_context(session: Session, incident_id: int) -> dict[str, Any] | None:
    inc = session.get(Incident, incident_id)
    if inc is None:
        return None
    items = list(
        session.exec(
            select(Item)
            .where(Item.incident_id == incident_id)
            .order_by(col(Item.published), col(Item.id))
            .limit(500)
        ).all()
    )
    explanation_data = inc.explanation if isinstance(inc.explanation, dict) else {}
    merged_into = explanation_data.get("merged_into")
    # Incidents an analyst may want to merge with this one: live ones, nearest in time first, sharing a
    # country when this one has any.
    q = select(Incident).where(col(Incident.id) != incident_id, col(Incident.item_count) > 0)
    window = timedelta(days=14)
    q = q.where(
        col(Incident.last_seen) >= inc.first_seen - window, col(Incident.first_seen) <= inc.last_seen + window
    )
    near = [
        o
        for o in session.exec(q.order_by(col(Incident.last_seen).desc()).limit(300)).all()
        if not (isinstance(o.explanation, dict) and o.explanation.get("merged_into"))
    ]
    if inc.countries:
        shared = [o for o in near if set(o.countries or []) & set(inc.countries)]
        near = shared or near
    anchor = inc.last_seen
    near.sort(key=lambda o: abs((o.last_seen - anchor).total_seconds()))
    return {
        "incident": inc,
        "rows": _rows(session, items),
        "grouping": {i.id: (i.grouping or {}) for i in items},
        "candidates": near[:MERGE_CANDIDATES],
        "merged_into": merged_into if isinstance(merged_into, int) else None,
        "triage": [_with_time(t) for t in explanation_data.get("triage", []) if isinstance(t, dict)],
        "rule": explanation_data.get("rule"),
    }


def _with_time(entry: dict[str, Any]) -> dict[str, Any]:
    """A triage record with its ISO `at` as a datetime (None when it is not one), for display."""
    try:
        at = datetime.fromisoformat(str(entry.get("at")))
    except ValueError:
        at = None
    return {**entry, "at": at}


def audit_entries(session: Session, limit: int = 200) -> list[AuditEntry]:
    return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)).all())


def feed_ids(session: Session) -> list[str]:
    return [f for f in session.exec(select(Feed.id).order_by(col(Feed.id))).all()]


def countries(session: Session) -> list[str]:
    """Countries of the stored items (for the filter), from the incidents' labels: a small table."""
    seen: set[str] = set()
    for row in session.exec(select(Incident.countries).limit(5000)).all():
        seen.update(row or [])
    return sorted(seen)


__all__ = [
    "PAGE_SIZE",
    "BadInput",
    "Chip",
    "ListFilters",
    "ListPage",
    "Row",
    "audit_entries",
    "chips",
    "countries",
    "explanation",
    "feed_ids",
    "highlight",
    "incident_context",
    "item_context",
    "list_items",
    "parse_filters",
    "top_category",
]
