"""Running a search: parse, filter, rank, and build the highlighted snippets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    String,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TableClause

from monitor.search.backends import FILTER_COLUMNS, FILTER_INDEX, FTS_TABLE, PG_TABLE, fts5_match, tsquery
from monitor.search.index import Db, dialect_name
from monitor.search.query import SearchFilterError, parse_query
from monitor.search.snippet import Highlighter, highlight
from monitor.store.models import Item, ItemSource
from monitor.store.workspace_models import Verdict

_ITEM = Item.__table__  # type: ignore[attr-defined]
_SOURCE = ItemSource.__table__  # type: ignore[attr-defined]
_VERDICT = Verdict.__table__  # type: ignore[attr-defined]
MAX_LIMIT = 500
# FTS5's bm25 weights for the columns s, l, k: a word's own lemma counts more than its other readings
_BM25 = f"bm25({FTS_TABLE}, 1.0, 2.0, 1.0)"


@dataclass(frozen=True)
class SearchFilters:
    """Every filter is optional; given ones must all hold. `since` is inclusive and `until` exclusive
    (the CLI turns --until DATE into the end of that day)."""

    category: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    feed: str | None = None  # the item came from this feed (first, or as a duplicate of another's)
    language: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    incident: int | None = None
    # The analysts' verdicts (monitor.store.verdicts): "confirm", "reject" or "add" (the verdict in force on
    # `category` when one is given, else on any category), "any" (reviewed at all) or "none" (not yet).
    verdict: str | None = None


@dataclass(frozen=True)
class SearchHit:
    item_id: int
    score: float  # higher is better; comparable within one result list only
    title: str  # as stored (untrusted: escape it, or use title_html)
    title_html: str  # escaped, matches in <mark>
    snippet_html: str  # escaped window of the text around the first match, matches in <mark>
    url: str | None
    feed: str
    language: str | None
    published: datetime
    categories: list[str]  # the rules' categories with the analysts' verdicts applied
    countries: list[str]
    incident: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "score": self.score,
            "title": self.title,
            "title_html": self.title_html,
            "snippet_html": self.snippet_html,
            "url": self.url,
            "feed": self.feed,
            "language": self.language,
            "published": self.published.isoformat(),
            "categories": self.categories,
            "countries": self.countries,
            "incident": self.incident,
        }


@dataclass(frozen=True)
class SearchResults:
    query: str
    hits: list[SearchHit] = field(default_factory=list)
    offset: int = 0
    more: bool = False  # another page exists after this one

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "offset": self.offset,
            "more": self.more,
            "hits": [h.to_json() for h in self.hits],
        }


def _json_contains(dialect: str, column: str, value: str, name: str) -> Any:
    # Lists are JSON, which the two databases unpack differently
    if dialect == "sqlite":
        sql = f"EXISTS (SELECT 1 FROM json_each(item.{column}) WHERE json_each.value = :{name})"
    else:
        sql = f"EXISTS (SELECT 1 FROM json_array_elements_text(item.{column}) AS e(v) WHERE e.v = :{name})"
    return text(sql).bindparams(bindparam(name, value, type_=String))


VERDICT_FILTERS = ("confirm", "reject", "add", "any", "none")
# The verdict in force on (item, category) is the latest row (highest id), as in monitor.store.verdicts.
_LATEST = "(SELECT v.verdict FROM verdict v WHERE v.item_id = item.id AND v.category = :f_vcat ORDER BY v.id DESC LIMIT 1)"


def _category_condition(dialect: str, category: str) -> Any:
    """The item is in `category` once verdicts are applied: the rules put it there and no analyst rejected it,
    or an analyst confirmed or added it (verdicts win over the rules everywhere, search included)."""
    rules = _json_contains(dialect, "categories", category, "f_category")
    return text(
        f"COALESCE({_LATEST}, CASE WHEN {rules.text} THEN 'rules' END) IN ('rules', 'confirm', 'add')"
    ).bindparams(bindparam("f_vcat", category, type_=String), bindparam("f_category", category, type_=String))


def _verdict_condition(verdict: str, category: str | None) -> Any:
    if verdict not in VERDICT_FILTERS:
        raise SearchFilterError(f"verdict must be one of {', '.join(VERDICT_FILTERS)}, not {verdict!r}")
    on_cat = " AND v.category = :f_vcat" if category else ""
    if verdict in ("any", "none"):
        sql = f"EXISTS (SELECT 1 FROM verdict v WHERE v.item_id = item.id{on_cat})"
        if verdict == "none":
            sql = "NOT " + sql
    elif category:
        sql = f"{_LATEST} = :f_verdict"
    else:
        sql = (
            "EXISTS (SELECT 1 FROM verdict v WHERE v.item_id = item.id AND v.verdict = :f_verdict AND v.id = "
            "(SELECT max(v2.id) FROM verdict v2 WHERE v2.item_id = v.item_id AND v2.category = v.category))"
        )
    params = [bindparam("f_verdict", verdict, type_=String)] if ":f_verdict" in sql else []
    if category:
        params.append(bindparam("f_vcat", category, type_=String))
    return text(sql).bindparams(*params)


class _ThroughFilterIndex(TableClause):
    """The item table as a filtered search reads it on SQLite: through the covering index of the filter
    columns (backends.FILTER_INDEX), named with INDEXED BY because without ANALYZE statistics the planner
    takes the primary key and reads every matching item's whole row (half of a filtered query's time on
    200,000 items with 2.7 KB of html each)."""

    inherit_cache = True


@compiles(_ThroughFilterIndex, "sqlite")
def _indexed_by(element: _ThroughFilterIndex, compiler: Any, **kw: Any) -> str:
    sql: str = compiler.visit_table(element, **kw)
    return f"{sql} INDEXED BY {FILTER_INDEX}" if kw.get("asfrom") else sql


_ITEM_FILTERED = _ThroughFilterIndex("item", *(column(c, _ITEM.c[c].type) for c in ("id", *FILTER_COLUMNS)))


def _conditions(dialect: str, f: SearchFilters, item: Any = _ITEM) -> list[Any]:
    c: list[Any] = []
    if f.category:
        c.append(_category_condition(dialect, f.category))
    if f.country:
        c.append(_json_contains(dialect, "countries", f.country.upper(), "f_country"))
    if f.feed:
        c.append(
            or_(
                item.c.feed_id == f.feed,
                exists().where(_SOURCE.c.item_id == item.c.id, _SOURCE.c.feed_id == f.feed),
            )
        )
    if f.language:
        c.append(item.c.language == f.language.lower())
    if f.since is not None:
        c.append(item.c.published >= f.since)
    if f.until is not None:
        c.append(item.c.published < f.until)
    if f.incident is not None:
        c.append(item.c.incident_id == f.incident)
    if f.verdict:
        c.append(_verdict_condition(f.verdict, f.category))
    return c


def _ranked_ids(
    db: Db, query_node: Any, f: SearchFilters, limit: int, offset: int
) -> list[tuple[int, float]]:
    dialect = dialect_name(db)
    item = _ITEM_FILTERED if dialect == "sqlite" else _ITEM
    conditions = _conditions(dialect, f, item)
    if dialect == "sqlite":
        fts = table(FTS_TABLE, column("rowid"))
        score = literal_column(_BM25, Float)
        match = text(f"{FTS_TABLE} MATCH :match").bindparams(match=fts5_match(query_node))
        if not conditions:  # the index alone answers: no item row is read for the items not shown
            stmt = select(fts.c.rowid, score).where(match).order_by(score, fts.c.rowid.desc())
            rows = db.execute(stmt.limit(limit).offset(offset)).all()
            return [(r[0], -float(r[1])) for r in rows]
        stmt = (
            select(item.c.id, score)
            .select_from(item.join(fts, fts.c.rowid == item.c.id))
            .where(match, *conditions)
            .order_by(score, item.c.id.desc())
        )
        rows = db.execute(stmt.limit(limit).offset(offset)).all()
        return [(r[0], -float(r[1])) for r in rows]
    idx = table(PG_TABLE, column("item_id"), column("doc"), column("head"))
    q = cast(bindparam("tsq", tsquery(query_node), type_=String), TSQUERY)
    # ranked by the title and lead (backends.tsvector_literals): matched rows' whole documents are not read
    rank = func.ts_rank(idx.c.head, q, type_=Float)
    if conditions:
        stmt = (
            select(_ITEM.c.id, rank)
            .select_from(_ITEM.join(idx, idx.c.item_id == _ITEM.c.id))
            .where(idx.c.doc.op("@@")(q), *conditions)
            .order_by(rank.desc(), _ITEM.c.id.desc())
        )
    else:  # as on SQLite, the index alone answers
        stmt = (
            select(idx.c.item_id, rank)
            .where(idx.c.doc.op("@@")(q))
            .order_by(rank.desc(), idx.c.item_id.desc())
        )
    # A top-20 query gains nothing from parallel workers, and starting them cost more than the query (58 of
    # 66 ms for a common word, 200,000 items on 2 cores): none for this statement, the caller's setting back
    # after it.
    before = db.execute(
        text(
            "SELECT current_setting('max_parallel_workers_per_gather'), "
            "set_config('max_parallel_workers_per_gather', '0', true)"
        )
    ).scalar_one()
    rows = db.execute(stmt.limit(limit).offset(offset)).all()
    # (a failed statement aborts the transaction, whose rollback undoes the setting too)
    db.execute(text("SELECT set_config('max_parallel_workers_per_gather', :v, true)").bindparams(v=before))
    return [(r[0], float(r[1])) for r in rows]


def search(
    db: Engine | Session | Connection,
    query: str,
    *,
    filters: SearchFilters | None = None,
    limit: int = 20,
    offset: int = 0,
) -> SearchResults:
    """Items matching `query` (see monitor.search.query for the syntax), best first.

    Raises SearchQueryError for a malformed query (with the position), SearchFilterError for a filter that
    cannot be applied. Reads only; takes an engine, a session or a connection."""
    node = parse_query(query)  # before touching the database: a bad query costs nothing
    f = filters or SearchFilters()
    limit = max(1, min(int(limit), MAX_LIMIT))
    offset = max(0, int(offset))
    if isinstance(db, Engine):
        with db.connect() as conn:
            return _search(conn, query, node, f, limit, offset)
    return _search(db, query, node, f, limit, offset)


def _verdicts_in_force(db: Db, item_ids: list[int]) -> dict[int, dict[str, str]]:
    """{item: {category: verdict}} of the latest verdict per (item, category), as monitor.store.verdicts
    orders them (highest id wins)."""
    out: dict[int, dict[str, str]] = {}
    if not item_ids:
        return out
    rows = db.execute(
        select(_VERDICT.c.item_id, _VERDICT.c.category, _VERDICT.c.verdict)
        .where(_VERDICT.c.item_id.in_(item_ids))
        .order_by(_VERDICT.c.id)
    )
    for item_id, category, verdict in rows:
        out.setdefault(item_id, {})[category] = verdict
    return out


def _with_verdicts(rules: list[str], verdicts: dict[str, str]) -> list[str]:
    """The categories a result shows: the analysts' verdicts win over the rules, as everywhere else."""
    cats = [c for c in rules if verdicts.get(c) != "reject"]
    cats += sorted(c for c, v in verdicts.items() if v in ("confirm", "add") and c not in cats)
    return cats


def _search(db: Db, query: str, node: Any, f: SearchFilters, limit: int, offset: int) -> SearchResults:
    ranked = _ranked_ids(db, node, f, limit + 1, offset)
    more = len(ranked) > limit
    ranked = ranked[:limit]
    if not ranked:
        return SearchResults(query=query, offset=offset)
    rows = {
        r.id: r
        for r in db.execute(
            select(
                _ITEM.c.id,
                _ITEM.c.title,
                _ITEM.c.text,
                _ITEM.c.url,
                _ITEM.c.feed_id,
                _ITEM.c.language,
                _ITEM.c.published,
                _ITEM.c.categories,
                _ITEM.c.countries,
                _ITEM.c.incident_id,
            ).where(_ITEM.c.id.in_([i for i, _ in ranked]))
        )
    }
    verdicts = _verdicts_in_force(db, list(rows))
    hl = Highlighter.for_query(node)
    hits = []
    for item_id, score in ranked:
        r = rows.get(item_id)
        if r is None:  # the item went between the two reads
            continue
        title_html, _ = highlight(r.title or "", hl, r.language, whole=True)
        snippet_html, _ = highlight(r.text or "", hl, r.language)
        hits.append(
            SearchHit(
                item_id=item_id,
                score=score,
                title=r.title or "",
                title_html=title_html,
                snippet_html=snippet_html,
                url=r.url,
                feed=r.feed_id,
                language=r.language,
                published=r.published,
                categories=_with_verdicts(list(r.categories or []), verdicts.get(item_id, {})),
                countries=list(r.countries or []),
                incident=r.incident_id,
            )
        )
    return SearchResults(query=query, hits=hits, offset=offset, more=more)
